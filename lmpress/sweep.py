"""Quantize and evaluate a grid of methods x schemes, resumably.

``lmpress sweep MODEL --schemes w4g128,w3g128 --methods rtn,gptq,awq+gptq -o DIR``
writes ``DIR/results.jsonl`` (one line per finished cell; a cell already there is
not recomputed, so an interrupted sweep resumes) and ``DIR/report.md`` with
``DIR/pareto.png``. The base model's logits are computed once and cached, so each
cell costs its quantization plus one evaluation pass.

A method label is a method, optionally after transforms and with options:
``gptq``, ``awq+gptq``, ``rtn:imatrix=true``, ``gptq:damp=0.05,mse=false``.
"""

import copy
import json
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from lmpress.errors import LmpressError
from lmpress.recipe import Recipe
from lmpress.report.pareto import AnchorPoint


def parse_label(label: str, scheme: str) -> Recipe:
    """The recipe for a sweep cell: ``method[:key=value,...]`` at ``scheme``."""
    method, _, opts = label.partition(":")
    args: dict[str, Any] = {}
    for kv in [o for o in opts.split(",") if o]:
        key, sep, value = kv.partition("=")
        if not sep:
            raise LmpressError(f"method label {label!r}: options look like key=value")
        args[key.strip()] = yaml.safe_load(value)
    return Recipe(method=method, scheme=scheme, method_args=args)


def load_results(path: Path) -> dict[str, dict]:
    """Rows of a results JSON-lines file by cell (a later row for a cell wins)."""
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["cell"]: r for r in rows}


def run_sweep(
    model: str,
    schemes: list[str],
    methods: list[str],
    out_dir: str | Path,
    calib: str = "wikitext2",
    calib_samples: int = 128,
    calib_seq_len: int = 512,
    text: str = "wikitext2",
    ctx: int = 2048,
    windows: int | None = 16,
    keep_checkpoints: bool = False,
    progress: bool = True,
    tasks: str | None = None,
    limit: int | None = None,
    speed: bool = True,
    command: str | None = None,
    anchors: Sequence[AnchorPoint] = (),
) -> list[dict]:
    """Run every (method, scheme) cell not yet in ``out_dir/results.jsonl``; returns all rows.

    With ``tasks`` (``"piqa,hellaswag"``) each cell and the float model are also scored
    on those zero-shot tasks (first ``limit`` examples each). With ``speed`` each cell's
    checkpoint (and the float model) is loaded in a fresh process that measures prefill
    and decode tokens/s and its peak RSS (:mod:`lmpress.eval.speed`). ``command`` (the
    command line that ran the sweep) and the library versions are kept in every row.
    ``anchors`` are drawn beside the cells in the report's plot.
    """
    from lmpress.api import peak_rss_mb, save
    from lmpress.calibration import calibration_ids
    from lmpress.eval.base_cache import BaseLogitsCache, cache_key
    from lmpress.eval.perplexity import eval_ids, evaluate_perplexity, fill_base_cache, n_windows
    from lmpress.eval.size import model_size_stats
    from lmpress.models.load import load_model, resolve_model_path
    from lmpress.pipeline import quantize_model

    out = Path(out_dir)
    task_list = None
    if tasks:
        from lmpress.eval.tasks import parse_task_list

        task_list = parse_task_list(tasks)
    cells = [(m, s, parse_label(m, s)) for s in schemes for m in methods]  # typos fail first
    if not cells:
        raise LmpressError("the sweep is empty: give --schemes and --methods")
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    done = load_results(results_path)
    protocol = f"{text} ctx={ctx} windows={windows} calib={calib}:{calib_samples}x{calib_seq_len}"
    if task_list:
        protocol += f" tasks={','.join(n for n, _ in task_list)} limit={limit}"
    todo = [c for c in cells if f"{c[0]}|{c[1]}|{protocol}" not in done]

    prov = {"command": command, "versions": versions()}
    base = load_model(model)
    ids = eval_ids(base.tokenizer, text)
    n = n_windows(ids, ctx, windows)
    cache = BaseLogitsCache(cache_key(resolve_model_path(model), ids, ctx))
    fill_base_cache(base.model, ids, ctx, n, cache, progress)
    ref_cell = f"reference|-|{protocol}"
    if ref_cell not in done:
        r = evaluate_perplexity(base.model, ids, ctx, windows, None, progress)
        row = {
            "cell": ref_cell,
            "method": "float",
            "scheme": "-",
            "bits_per_weight": 32.0,
            **r.to_dict(),
        }
        row.update(prov)
        row.update(_task_scores(base.model, base.tokenizer, task_list, limit, progress))
        if speed:
            row["speed"] = _speed(model, text, progress)
        _append(results_path, row)
        done[ref_cell] = row
    calib_ids = None
    if any(r.needs_calibration for _, _, r in todo):
        calib_ids = calibration_ids(base.tokenizer, calib, calib_samples, calib_seq_len, 0)
    for i, (label, scheme, recipe) in enumerate(todo):
        cell = f"{label}|{scheme}|{protocol}"
        if progress:
            print(f"[sweep {i + 1}/{len(todo)}] {label} {scheme}", flush=True)
        m = copy.deepcopy(base.model)
        t0 = time.perf_counter()
        res = quantize_model(
            m, recipe, calib_ids if recipe.needs_calibration else None, progress=progress
        )
        seconds = time.perf_counter() - t0
        ckpt = out / "cells" / f"{label.replace(':', '_').replace(',', '_')}-{scheme}"
        res.tokenizer = base.tokenizer
        res.metadata = {"recipe": recipe.to_dict()}
        save(res, ckpt, overwrite=True)
        ev = evaluate_perplexity(m, ids, ctx, windows, cache, progress)
        row = {
            "cell": cell,
            "method": label,
            "scheme": scheme,
            **ev.to_dict(),
            **model_size_stats(m, ckpt).to_dict(),
            "quantize_s": seconds,
            "peak_rss_mb_so_far": round(peak_rss_mb(), 1),
            "recipe": recipe.to_dict(),
            "layer_errors": {k: round(v, 6) for k, v in res.layer_errors.items()},
            "weight_errors": {k: round(v, 6) for k, v in res.weight_errors.items()},
            **_task_scores(m, base.tokenizer, task_list, limit, progress),
            **prov,
        }
        if speed:
            row["speed"] = _speed(str(ckpt), text, progress)
        _append(results_path, row)
        done[cell] = row
        if not keep_checkpoints:
            shutil.rmtree(ckpt, ignore_errors=True)
        del m, res
    rows = [done[k] for k in done if k.endswith(protocol)]
    write_report(rows, out, protocol, model, anchors)
    from lmpress.report.html import write_html

    write_html(rows, out, protocol, model)
    return rows


def _task_scores(model, tokenizer, task_list, limit, progress) -> dict:
    """``{"tasks": {name: metrics}, "task_mean_acc": mean acc}`` (empty without tasks)."""
    if not task_list:
        return {}
    from lmpress.eval.loglik import evaluate_task
    from lmpress.eval.tasks import TASKS, load_task

    scores: dict[str, dict] = {}
    for name, path in task_list:
        spec = TASKS.get(name)
        r = evaluate_task(
            model,
            tokenizer,
            load_task(name, path, limit),
            spec.metrics,
            spec.kind,
            progress=progress,
            name=name,
        )
        scores[name] = r.to_dict(predictions=False)
    mean = sum(v["acc"] for v in scores.values()) / len(scores)
    return {"tasks": scores, "task_mean_acc": mean}


def versions() -> dict[str, str]:
    """Versions that decide a row's numbers: lmpress, torch, transformers, Python, CPU."""
    import platform

    import torch
    import transformers

    from lmpress.__version__ import __version__
    from lmpress.report.machine import cpu_name

    return {
        "lmpress": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu": cpu_name(),
    }


def _speed(model_spec: str, text: str, progress: bool) -> dict:
    """The ``speed`` entry of a row: :func:`lmpress.eval.speed.speed_in_subprocess`'s."""
    from lmpress.eval.speed import speed_in_subprocess

    if progress:
        print(f"[sweep] speed and memory of {model_spec} (own process)", flush=True)
    return speed_in_subprocess(model_spec, text).to_dict()


def _append(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def ppl_ratio_cell(r: dict) -> str:
    """``PPL/PPL(base) ± 2 standard errors`` from a row's paired statistics, or ``-``."""
    if "ln_ppl_ratio" not in r or not math.isfinite(r.get("ln_ppl_ratio_stderr_windows", 0)):
        return "-"
    ratio = math.exp(r["ln_ppl_ratio"])
    return f"{ratio:.3f} ±{2 * ratio * r['ln_ppl_ratio_stderr_windows']:.3f}"


def write_report(
    rows: list[dict], out: Path, protocol: str, model: str, anchors: Sequence[AnchorPoint] = ()
) -> Path:
    """``out/report.md`` (table, commands) and ``out/pareto.png`` (with the ``anchors``
    drawn for comparison)."""
    from lmpress.report.html import provenance, speed_cells
    from lmpress.report.pareto import plot_pareto

    ref = next((r for r in rows if r["method"] == "float"), None)
    cells = sorted(
        (r for r in rows if r["method"] != "float"), key=lambda r: (-r["bits_per_weight"], r["ppl"])
    )
    lines = [
        f"# lmpress sweep: {model}",
        "",
        f"Protocol: {protocol}. KL, top-1 and the perplexity ratio against the float model "
        "on the same windows; the ratio's ± is two standard errors of the paired "
        "ln(PPL/PPL(float)) over windows.",
        "",
        "| method | scheme | bits/weight | perplexity | x float | KL mean | KL p99 | top-1 "
        "| mean task acc | quantize s | prefill tok/s | decode tok/s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def acc(r: dict) -> str:
        return f"{r['task_mean_acc']:.4f}" if "task_mean_acc" in r else "-"

    if ref:
        sp = " | ".join(speed_cells(ref))
        lines.append(
            f"| float | - | 32 | {ref['ppl']:.3f} | 1 | 0 | 0 | 1.000 | {acc(ref)} | - | {sp} |"
        )
    for r in cells:
        lines.append(
            f"| {r['method']} | {r['scheme']} | {r['bits_per_weight']:.3f} | {r['ppl']:.3f} | "
            f"{ppl_ratio_cell(r)} | {r['kl_mean']:.4f} | {r['kl_p99']:.3f} | "
            f"{r['top1_agreement']:.3f} | {acc(r)} | "
            f"{r['quantize_s']:.1f} | {' | '.join(speed_cells(r))} |"
        )
    if ref and cells:
        plot_pareto(cells, ref["ppl"], out / "pareto.png", anchors)
        lines += ["", "![perplexity against bits per weight](pareto.png)"]
    if any(r.get("speed") for r in rows):
        sp = next(r["speed"] for r in rows if r.get("speed"))
        lines += [
            "",
            f"Speed: greedy generation of {sp['new_tokens']} tokens after a "
            f"{sp['prompt_tokens']}-token prompt, each model loaded alone in a fresh process "
            f"(peak RSS is that process's high-water mark); medians of {sp['reps']} runs after "
            "one warm-up run.",
        ]
    lines += ["", "Commands that measured these rows:", ""]
    lines += [f"- `{cmd}` ({vers})" for cmd, vers in provenance(rows)]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
