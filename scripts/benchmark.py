#!/usr/bin/env python3
"""Benchmark lmpress on the default model and write BENCHMARKS.md.

Protocol (issue 2): SmolLM2-135M (its Q4_1 GGUF dequantized to float32),
WikiText-2 raw test, context 2048, 16 windows; calibration on the WikiText-2
validation text, 128 x 512 tokens, seed 0. Each quantization runs as its own
``lmpress quantize`` process, so that its wall time and peak RSS are its own;
evaluation runs here against cached base logits.

Results go to ``benchmarks/results.jsonl`` (one line per cell, tracked in git so
that the report can be rebuilt on any checkout); a cell already there is not
recomputed, so an interrupted benchmark resumes. Checkpoints go to the workdir.

    python scripts/benchmark.py                 # full protocol, writes BENCHMARKS.md
    python scripts/benchmark.py --windows 2 --calib-samples 16 --out /tmp/B.md   # quick look
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# the page's renderers sit beside this script (its folder is on sys.path when run)
from benchmark_activations import ACT_CELLS, split_cell  # noqa: E402
from benchmark_budget import BUDGET_CELLS, alloc_args  # noqa: E402
from benchmark_evaluation import render_evaluation  # noqa: E402
from benchmark_formats import FORMAT_CELLS  # noqa: E402
from benchmark_history import history_lines, measurements  # noqa: E402
from benchmark_methods import GRID_METHODS, GRID_SCHEMES  # noqa: E402
from benchmark_report import render  # noqa: E402
from benchmark_runtime import render_runtime  # noqa: E402

import lmpress  # noqa: E402
from lmpress.calibration import calibration_ids  # noqa: E402
from lmpress.eval.base_cache import BaseLogitsCache, cache_key  # noqa: E402
from lmpress.eval.perplexity import eval_ids, evaluate_perplexity, fill_base_cache, n_windows  # noqa: E402
from lmpress.eval.size import model_size_stats  # noqa: E402
from lmpress.models.load import (  # noqa: E402
    load_model,
    resolve_model_path,
    save_float_model,
    set_threads,
)
from lmpress.report.machine import cpu_name  # noqa: E402
from lmpress.sweep import load_results  # noqa: E402

MODEL = "smollm2-135m"
SCHEMES = ["w8", "w4g128", "w4g64", "w3g128", "w3g64", "w2g64", "w2g32"]
METHODS = ["rtn", "gptq"]
# The cell whose cost is compared with a float forward pass (issue 2's bar).
COST_CELL = ("gptq", "w4g128")
# Issue 3's grid: every method and combination at these schemes.
SCHEMES_3 = GRID_SCHEMES
METHODS_3 = [m for m in GRID_METHODS if m not in METHODS]  # rtn, gptq: issue 2's grid

# Benchmark labels beyond plain method names: label -> quantize flags (scheme added).
VARIANTS = {
    "rtn:mse": ["--method", "rtn", "--method-arg", "mse=true"],
    "rtn:imatrix": ["--method", "rtn", "--method-arg", "imatrix=true"],
    "awq+rtn": ["--method", "awq+rtn", "--method-arg", "imatrix=true"],
    "gptq:minmax": ["--method", "gptq", "--method-arg", "mse=false"],
    "gptq:guided": ["--method", "gptq", "--method-arg", "guided=2"],
    # the layer-wise Hessian-form objective, as learned-round's defaults were before
    "learned-round:layer": [
        "--method",
        "learned-round",
        "--method-arg",
        "objective=layer",
        "--method-arg",
        "init=rtn",
        "--method-arg",
        "iters=100",
    ],
    # HQQ's zero step needs float zero points (scheme suffix added below); `:scale`
    # also re-fits the scales, which integer zero points need to move at all
    "hqq:fz": ["--method", "hqq"],
    "hqq:fz+scale": ["--method", "hqq", "--method-arg", "fit_scale=true"],
    "hqq:scale": ["--method", "hqq", "--method-arg", "fit_scale=true"],
    # FlexRound's division-based rounding in place of additive offsets
    "learned-round:div": ["--method", "learned-round", "--method-arg", "rounding=div"],
}


def asym(scheme: str) -> str:
    """Integer spellings made explicitly asymmetric (the grid's convention); other
    formats' spellings as they are."""
    from lmpress.formats.scheme import parse_scheme

    if parse_scheme(scheme).format != "int":
        return scheme
    return scheme if scheme.endswith(("a", "s")) or ":" in scheme else scheme + "a"


def variant_args(label: str, scheme: str) -> list[str]:
    """``lmpress quantize`` flags for a benchmark label at ``scheme``.

    ``preset:NAME`` runs the preset at its own scheme (``scheme`` must be its scheme);
    ``hqq:fz...`` store float zero points; other labels name a method or combination.
    """
    if label.startswith("preset:"):
        return ["--preset", label.split(":", 1)[1]]
    if label.startswith(("alloc:", "alloc-evo:")):
        return alloc_args(label, scheme)
    if label.startswith("hqq:fz"):
        return [*VARIANTS[label], "--scheme", asym(scheme) + ":fz"]
    from lmpress.formats.scheme import parse_scheme

    weights, kv = split_cell(scheme)
    if kv is not None or parse_scheme(weights).act is not None:
        # activation cells (issue 24) are spelled exactly: w4sa4, w8sa8/kv4
        kv_args = ["--kv-cache", kv] if kv else []
        return [*VARIANTS.get(label, ["--method", label]), "--scheme", weights, *kv_args]
    return [*VARIANTS.get(label, ["--method", label]), "--scheme", asym(scheme)]


def same_recipe_row(label: str, scheme: str, done: dict[str, dict], protocol: str) -> dict | None:
    """A measured row whose recipe equals preset ``label``'s, if any."""
    if not label.startswith("preset:"):
        return None
    from lmpress.presets import preset_recipe
    from lmpress.recipe import Recipe

    want = Recipe.from_dict(preset_recipe(label.split(":", 1)[1])).to_dict()
    for r in done.values():
        if (
            r["cell"].endswith(protocol)
            and "same_as" not in r
            and not r["method"].startswith("preset:")
            and normalized_recipe(r.get("recipe")) == want
        ):
            return r
    return None


def normalized_recipe(d: dict | None) -> dict | None:
    """A recorded recipe as the current code writes it (older rows spell defaults out)."""
    from lmpress.errors import LmpressError
    from lmpress.recipe import Recipe

    if not d:
        return None
    try:
        return Recipe.from_dict(d).to_dict()
    except LmpressError:
        return None


def drop_stale_presets(done: dict[str, dict], results_path: Path | None = None) -> dict[str, dict]:
    """Preset rows whose recipe is no longer the preset's are not results of today's presets.

    A stale row whose recipe is a plain grid cell (one method with its defaults, no
    transforms) is that cell's measurement: it is kept under the cell's name (and
    appended to ``results_path``) when the grid has not measured that cell itself.
    """
    from lmpress.presets import PRESETS, preset_recipe
    from lmpress.recipe import Recipe

    keep, converted = {}, []
    for cell, r in done.items():
        name = r["method"].split(":", 1)[1] if r["method"].startswith("preset:") else None
        if name is not None:
            recipe = normalized_recipe(r.get("recipe"))
            if name in PRESETS and recipe == Recipe.from_dict(preset_recipe(name)).to_dict():
                keep[cell] = r
                continue
            plain = (
                recipe
                and Recipe.from_dict(
                    {"method": recipe["method"], "scheme": recipe["scheme"]}
                ).to_dict()
            )
            if recipe and "same_as" not in r and recipe == plain:
                protocol = cell.split("|", 2)[2]
                grid_cell = f"{recipe['method']}|{r['scheme']}|{protocol}"
                if grid_cell not in done:
                    row = {**r, "cell": grid_cell, "method": recipe["method"]}
                    converted.append({**row, "measured_as": r["method"]})
            continue
        keep[cell] = r
    for row in converted:
        if row["cell"] not in keep:
            keep[row["cell"]] = row
            if results_path is not None:
                append_result(results_path, row)
    return keep


def preset_cells() -> list[tuple[str, str]]:
    """``(label, scheme)`` for every preset, at the scheme the preset uses."""
    from lmpress.formats.scheme import parse_scheme
    from lmpress.presets import PRESETS

    return [
        (f"preset:{n}", parse_scheme(PRESETS.get(n).recipe["scheme"]).name) for n in PRESETS.names()
    ]


def git_commit() -> str:
    """The commit the measured code came from (``+dirty`` when the tree had changes)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            # the benchmark's own outputs do not make the measured code dirty
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":!benchmarks",
                ":!BENCHMARKS.md",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return head + ("+dirty" if dirty else "") if head else "unknown"
    except OSError:
        return "unknown"


PAUSE_FILE = Path(os.environ.get("LMPRESS_BENCH_PAUSE", "/tmp/lmpress_bench.pause"))


def wait_while_paused() -> None:
    """Hold before the next cell while the pause file exists.

    Timing anything else on a 2-core machine beside a running cell corrupts both
    figures; touching the pause file lets the current cell finish and holds the
    grid until the file is removed.
    """
    announced = False
    while PAUSE_FILE.exists():
        if not announced:
            print(f"[bench] paused while {PAUSE_FILE} exists", flush=True)
            announced = True
        time.sleep(5)


def run_process(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd``; return its wall seconds and peak RSS (MiB) from the kernel's rusage."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def remeasure_cells(spec: str, protocol: str) -> set[str]:
    """Cell keys named by ``--remeasure`` (``METHOD@SCHEME`` or ``reference``)."""
    cells = set()
    for item in filter(None, (x.strip() for x in spec.split(","))):
        if item == "reference":
            cells.add(f"reference|{protocol}")
            continue
        method, sep, scheme = item.rpartition("@")
        if not sep or not method or not scheme:
            sys.exit(f"--remeasure: {item!r} is not METHOD@SCHEME (e.g. gptq@w8) or reference")
        cells.add(f"{method}|{scheme}|{protocol}")
    return cells


PAIRED_KEYS = (
    "window_nll",
    "window_tokens",
    "ln_ppl_ratio",
    "ln_ppl_ratio_stderr",
    "ln_ppl_ratio_stderr_windows",
)


def paired_fields(r: dict) -> dict:
    """The evaluation's per-window NLL sums and its paired ratio to the reference."""
    return {k: r[k] for k in PAIRED_KEYS if k in r}


def append_result(path: Path, row: dict) -> None:
    row = {
        **row,
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def side_by_side_loads(ckpt: Path, float_dir: Path, repeats: int) -> tuple[float, float]:
    """Median seconds to load our checkpoint and the float HF directory, interleaved."""
    from transformers import AutoModelForCausalLM

    ours, theirs = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        lmpress.load(ckpt)
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        AutoModelForCausalLM.from_pretrained(float_dir, dtype=torch.float32)
        theirs.append(time.perf_counter() - t0)
    return statistics.median(ours), statistics.median(theirs)


@torch.no_grad()
def float_forward_seconds(model, calib: torch.Tensor, batch_size: int) -> float:
    """One float forward pass over the calibration tokens, batched like the pipeline."""
    t0 = time.perf_counter()
    for i in range(0, calib.shape[0], batch_size):
        model(calib[i : i + batch_size], use_cache=False)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    ap.add_argument("--workdir", default=str(REPO / "bench_out"), help="checkpoints")
    ap.add_argument(
        "--results", default=str(REPO / "benchmarks" / "results.jsonl"), help="JSON lines"
    )
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--calib-samples", type=int, default=128)
    ap.add_argument("--calib-seq-len", type=int, default=512)
    ap.add_argument("--schemes", default=",".join(SCHEMES), help="issue 2's grid")
    ap.add_argument("--methods", default=",".join(METHODS), help="issue 2's grid")
    ap.add_argument("--schemes-3", default=",".join(SCHEMES_3), help="issue 3's grid")
    ap.add_argument("--methods-3", default=",".join(METHODS_3), help="issue 3's grid")
    ap.add_argument(
        "--formats",
        default=",".join(f"{m}@{s}" for m, s in FORMAT_CELLS),
        help="issue 23's cells, METHOD@SCHEME[,...] ('' for none)",
    )
    ap.add_argument(
        "--activations",
        default=",".join(f"{m}@{s}" for m, s in ACT_CELLS),
        help="issue 24's cells, METHOD@SCHEME[/KV][,...] ('' for none)",
    )
    ap.add_argument(
        "--budgets",
        default=",".join(f"{m}@{s}" for m, s in BUDGET_CELLS),
        help="issue 26's cells, alloc:METHOD@bBITS[,...] ('' for none)",
    )
    ap.add_argument("--no-presets", action="store_true", help="skip the preset cells")
    ap.add_argument("--fresh", action="store_true", help="ignore earlier results")
    ap.add_argument(
        "--report-only", action="store_true", help="rewrite the report from the recorded results"
    )
    ap.add_argument(
        "--noise-floor",
        default="",
        help="schemes (measured RTN cells) whose rounding error is also shuffled within each "
        "row and added to the float model, --noise-seeds times: how far a perturbation of "
        "that size moves perplexity either way",
    )
    ap.add_argument("--noise-seeds", type=int, default=5)
    ap.add_argument(
        "--remeasure",
        default="",
        help="cells to measure again although recorded, as METHOD@SCHEME[,...] "
        "(`reference` for the float model); the new row replaces the old in the report",
    )
    a = ap.parse_args()

    set_threads()
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    results_path = Path(a.results)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    if a.fresh and results_path.exists():
        results_path.unlink()
    done = drop_stale_presets(load_results(results_path), results_path)
    protocol = f"ctx={a.ctx} windows={a.windows} calib={a.calib_samples}x{a.calib_seq_len}"
    remeasure = remeasure_cells(a.remeasure, protocol)
    if a.report_only:
        for method, scheme in [] if a.no_presets else preset_cells():
            cell = f"{method}|{scheme}|{protocol}"
            twin = None if cell in done else same_recipe_row(method, scheme, done, protocol)
            if twin is not None:
                row = {**twin, "cell": cell, "method": method, "same_as": twin["cell"]}
                append_result(results_path, row)
                done[cell] = row
        write_markdown(
            Path(a.out), {k: v for k, v in done.items() if k.endswith(protocol)}, protocol, a
        )
        return

    # Base model: load time, reference perplexity, cached logits for KL.
    t0 = time.perf_counter()
    base = load_model(MODEL)
    base_load_s = time.perf_counter() - t0
    ids = eval_ids(base.tokenizer, "wikitext2")
    n = n_windows(ids, a.ctx, a.windows)
    cache = BaseLogitsCache(cache_key(resolve_model_path(MODEL), ids, a.ctx))
    fill_base_cache(base.model, ids, a.ctx, n, cache)

    # A float checkpoint in HF format, to time a plain transformers load beside ours
    # (made again on a fresh workdir even when the reference row is already recorded).
    float_dir = work / "float-hf"
    if not (float_dir / "config.json").is_file():
        save_float_model(base.model, base.tokenizer, float_dir)
    ref_cell = f"reference|{protocol}"
    if ref_cell not in done or ref_cell in remeasure:
        r = evaluate_perplexity(base.model, ids, a.ctx, a.windows, cache).to_dict()
        calib = calibration_ids(base.tokenizer, "wikitext2", a.calib_samples, a.calib_seq_len, 0)
        fwd = [float_forward_seconds(base.model, calib, 8) for _ in range(2)]
        row = {
            "cell": ref_cell,
            "method": "float",
            "scheme": "-",
            "ppl": r["ppl"],
            "kl_mean": 0.0,
            "top1_agreement": 1.0,
            # the float model against its own float16 logit cache: the cache's share
            # of every row's ln(PPL / PPL(reference))
            **paired_fields(r),
            "bits_per_weight": 32.0,
            "float_forward_calib_s": min(fwd),
            "float_forward_calib_all_s": fwd,
            "gguf_load_s": base_load_s,
            "float_hf_size_bytes": sum(
                f.stat().st_size for f in float_dir.rglob("*") if f.is_file()
            ),
            "command": f"lmpress eval {MODEL} --ppl wikitext2 --ctx {a.ctx} --windows {a.windows}",
        }
        append_result(results_path, row)
        done[ref_cell] = row
    del base

    # Most informative first, so that a run cut short still answers the bars:
    # the cost cell, the presets, issue 2's grid, then issue 3's.
    grid2 = [(m, s) for s in a.schemes.split(",") if s for m in a.methods.split(",") if m]
    grid = [c for c in grid2 if c[1] == COST_CELL[1]]
    grid += [] if a.no_presets else preset_cells()
    grid += grid2
    grid += [(m, s) for s in a.schemes_3.split(",") if s for m in a.methods_3.split(",") if m]
    grid += [tuple(c.split("@")) for c in a.formats.split(",") if c]
    grid += [tuple(c.split("@")) for c in a.activations.split(",") if c]
    grid += [tuple(c.split("@")) for c in a.budgets.split(",") if c]
    grid += [tuple(c.split("|")[:2]) for c in remeasure if c != ref_cell]
    for method, scheme in dict.fromkeys(grid):
        cell = f"{method}|{scheme}|{protocol}"
        if cell in done and cell not in remeasure:
            continue
        wait_while_paused()
        twin = same_recipe_row(method, scheme, done, protocol)
        if twin is not None:
            # A preset identical to a measured cell: same recipe, same bytes (deterministic).
            row = {**twin, "cell": cell, "method": method, "same_as": twin["cell"]}
            append_result(results_path, row)
            done[cell] = row
            continue
        out = work / f"{method.replace(':', '-')}-{scheme.replace('/', '-')}"
        qcmd = [
            sys.executable,
            "-m",
            "lmpress.cli",
            "quantize",
            MODEL,
            *variant_args(method, scheme),
            "--calib",
            "wikitext2",
            "--calib-samples",
            str(a.calib_samples),
            "--calib-seq-len",
            str(a.calib_seq_len),
            "--seed",
            "0",
            "--overwrite",
            "--quiet",
            "-o",
            str(out),
            "--json",
            str(out) + ".summary.json",
        ]
        print(f"[bench] {shlex.join(qcmd[2:])}", flush=True)
        adjacent = None
        if (method, scheme) == COST_CELL:
            # The cost bar's denominator, measured right before the run it divides.
            fm = load_model(MODEL)
            calib = calibration_ids(fm.tokenizer, "wikitext2", a.calib_samples, a.calib_seq_len, 0)
            adjacent = min(float_forward_seconds(fm.model, calib, 8) for _ in range(2))
            del fm, calib
        wall, rss_rusage = run_process(qcmd)
        # The child's own high-water mark; rusage also counts pages shared at fork.
        summary = json.loads(Path(str(out) + ".summary.json").read_text())
        rss = summary["peak_rss_mb"]
        load_s, float_load_s = side_by_side_loads(out, work / "float-hf", 5)
        model = lmpress.load(out)
        qc = model.config.quantization_config
        recipe = qc.get("recipe")
        r = evaluate_perplexity(model, ids, a.ctx, a.windows, cache).to_dict()
        stats = model_size_stats(model, out).to_dict()
        row = {
            "cell": cell,
            "method": method,
            "scheme": scheme,
            "ppl": r["ppl"],
            "kl_mean": r["kl_mean"],
            "kl_stderr": r["kl_stderr"],
            "kl_p99": r["kl_p99"],
            "top1_agreement": r["top1_agreement"],
            **paired_fields(r),
            "quantize_s": summary["quantize_seconds"],
            **(
                {"alloc_s": summary["allocation_seconds"]}
                if "allocation_seconds" in summary
                else {}
            ),
            "process_wall_s": wall,
            "peak_rss_mb": rss,
            "peak_rss_source": "VmHWM",
            "cpu": cpu_name(),
            "float_forward_calib_adjacent_s": adjacent,
            "recipe": recipe,
            "peak_rss_rusage_mb": rss_rusage,
            "load_s": load_s,
            "float_hf_load_s": float_load_s,
            **stats,
            "command": "lmpress "
            + shlex.join(qcmd[3:]).replace(str(REPO) + "/", "")
            + f" && lmpress eval {out.relative_to(REPO) if out.is_relative_to(REPO) else out}"
            f" --ppl wikitext2 --ctx {a.ctx} --windows {a.windows} --base {MODEL}",
        }
        append_result(results_path, row)
        done[cell] = row
        print(
            f"[bench] {method} {scheme}: ppl={r['ppl']:.3f} kl={r['kl_mean']:.4f} "
            f"q={summary['quantize_seconds']:.1f}s rss={rss:.0f}MiB",
            flush=True,
        )
        del model

    for scheme in filter(None, a.noise_floor.split(",")):
        cell = f"noise-floor|{scheme}|{protocol}"
        if cell in done and cell not in remeasure:
            continue
        ckpt = work / f"rtn-{scheme}"
        if not (ckpt / "config.json").is_file():
            sys.exit(f"--noise-floor {scheme}: no RTN checkpoint at {ckpt}; measure rtn first")
        ln = shuffled_error_ratios(ckpt, ids, a.ctx, a.windows, cache, a.noise_seeds)
        row = {
            "cell": cell,
            "method": "noise-floor",
            "scheme": scheme,
            "ln_ppl_ratios": ln,
            "seeds": list(range(a.noise_seeds)),
            "command": "python scripts/benchmark.py --noise-floor "
            f"{scheme} --noise-seeds {a.noise_seeds}",
        }
        append_result(results_path, row)
        done[cell] = row
        print(f"[bench] noise floor {scheme}: ln(PPL/PPL(ref)) {ln}", flush=True)

    write_markdown(Path(a.out), done, protocol, a)


@torch.no_grad()
def shuffled_error_ratios(
    ckpt: Path, ids: torch.Tensor, ctx: int, windows: int, cache, seeds: int
) -> list[float]:
    """``ln(PPL / PPL(reference))`` of the float model plus the checkpoint's rounding
    error shuffled within each row, one value per seed.

    Each perturbation has exactly the checkpoint's error values, row by row, in a
    random order: its size without its direction. Their spread is how far a
    perturbation of that size moves perplexity by luck of direction alone.
    """
    from lmpress.nn.qlinear import QLinear

    quantized = lmpress.load(ckpt)
    errors = {}
    float_model = load_model(MODEL).model
    for name, m in quantized.named_modules():
        if isinstance(m, QLinear):
            w = float_model.get_submodule(name).weight
            errors[name] = m.dequantized_weight() - w
    del quantized
    out = []
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        model = load_model(MODEL).model
        for name, e in errors.items():
            order = torch.rand(e.shape, generator=g).argsort(dim=1)
            model.get_submodule(name).weight.add_(e.gather(1, order))
        r = evaluate_perplexity(model, ids, ctx, windows, cache)
        out.append(r.ratio.ln_ppl_ratio)
        del model
    return out


def kernel_runs(folder: Path) -> list[dict]:
    """Every recorded GEMV run (``kernels*.json``, one per machine), the newest first; the
    grid formats' runs (``kernels-grid*.json``) belong to the formats section."""
    files = [
        f for f in sorted(folder.glob("kernels*.json")) if not f.name.startswith("kernels-grid")
    ]
    runs = [json.loads(f.read_text()) for f in files]
    return sorted(runs, key=lambda k: k["date"], reverse=True)


def write_markdown(path: Path, done: dict[str, dict], protocol: str, a) -> None:
    from lmpress.kernels.cpu import source_digest

    def read(name: str) -> dict | None:
        f = REPO / "benchmarks" / name
        return json.loads(f.read_text()) if f.is_file() else None

    history = history_lines(measurements(Path(a.results), protocol))
    text = (
        render(done, protocol, a)
        + "\n".join(history)
        + ("\n" if history else "")
        + render_runtime(kernel_runs(REPO / "benchmarks"), read("runtime.json"), source_digest())
        + render_evaluation(read("lm_eval.json"), read("eval.json"))
    )
    path.write_text(text)
    print(f"[bench] wrote {path}")


if __name__ == "__main__":
    main()
