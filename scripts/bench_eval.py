#!/usr/bin/env python3
"""Evaluation benchmark (issue 4): a real sweep and its report, and what the base cache saves.

On the default model (SmolLM2-135M):

1. ``lmpress sweep`` of 6 cells (rtn and hqq at w4g128, w3g128, w2g64), with
   perplexity + KL (ctx 2048, ``--windows`` windows), zero-shot accuracy
   (piqa, arc_easy, hellaswag, first ``--limit`` examples) and per-cell speed and
   memory, into ``benchmarks/sweep/`` (results.jsonl, report.md, report.html,
   pareto.png); then the HTML report is opened in headless Chromium and a
   full-page screenshot saved as ``benchmarks/sweep/report_screenshot.png``.
2. The base-logits cache: 8 RTN variants are evaluated (perplexity, KL, top-1 on
   the same windows) through ``lmpress.evaluate(..., base=...)`` against one cache
   that the first call fills; the first call (variant + base) and each later one
   (variant only) are timed, plus one variant without ``base`` (perplexity only).

Results: ``benchmarks/eval.json``; ``scripts/benchmark.py`` renders them.

    python scripts/bench_eval.py --json benchmarks/eval.json
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODEL = "smollm2-135m"
SWEEP_SCHEMES = "w4g128,w3g128,w2g64"
SWEEP_METHODS = "rtn,hqq:fit_scale=true"  # hqq before zero-only fits became its default
SWEEP_TASKS = "piqa,arc_easy,hellaswag"
CACHE_SCHEMES = ["w8", "w6g128", "w5g128", "w4g32", "w4g64", "w4g128", "w3g64", "w3g128"]


def lmpress_cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "lmpress.cli", *args], check=True, cwd=REPO)


def run_sweep(out: Path, windows: int, limit: int) -> dict:
    cmd = [
        "sweep", MODEL, "-o", str(out.relative_to(REPO)),
        "--schemes", SWEEP_SCHEMES, "--methods", SWEEP_METHODS,
        "--windows", str(windows), "--tasks", SWEEP_TASKS, "--limit", str(limit),
    ]  # fmt: skip
    t0 = time.perf_counter()
    lmpress_cli(*cmd)
    return {"command": "lmpress " + " ".join(cmd), "seconds": time.perf_counter() - t0}


def screenshot(page: Path, png: Path) -> dict:
    """Open ``page`` in headless Chromium; full-page PNG and what the page reported."""
    from headless_browser import headless_chromium, open_and_screenshot

    with headless_chromium() as driver:
        state = open_and_screenshot(driver, page, png)
    broken = [alt for ok, w, alt in state["images"] if not ok or w == 0]
    return {
        "screenshot": str(png.relative_to(REPO)),
        "ready": state["ready"],
        "console_errors": len(state["console"]),
        "images": len(state["images"]),
        "broken_images": broken,
        "table_rows": state["rows"],
    }


def bench_cache(work: Path, windows: int) -> dict:
    import os

    from bench_runtime import checkpoint

    import lmpress

    ckpts = [checkpoint(work, s) for s in CACHE_SCHEMES]
    os.environ["LMPRESS_CACHE_DIR"] = str(work / "cache")  # empty: the first call fills it
    shutil.rmtree(work / "cache", ignore_errors=True)
    kw = dict(ctx=2048, windows=windows, progress=False)
    lmpress.evaluate(str(ckpts[0]), **kw)  # warm-up: page cache, kernels' first-call choices
    t0 = time.perf_counter()
    lmpress.evaluate(str(ckpts[0]), **kw)
    plain = time.perf_counter() - t0
    times, kls = [], []
    for ck in ckpts:
        t0 = time.perf_counter()
        r = lmpress.evaluate(str(ck), base=MODEL, **kw)
        times.append(time.perf_counter() - t0)
        kls.append(r.perplexity.agreement.kl_mean)
    return {
        "windows": windows,
        "ctx": 2048,
        "schemes": CACHE_SCHEMES,
        "kl_mean": kls,
        "first_with_base_s": times[0],
        "cached_s": times[1:],
        "cached_median_s": statistics.median(times[1:]),
        "plain_s": plain,
        "eight_total_s": sum(times),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "eval.json")
    ap.add_argument("--work", type=Path, default=Path("/tmp/lmpress_bench_eval"))
    ap.add_argument("--windows", type=int, default=4, help="perplexity windows (sweep, cache)")
    ap.add_argument("--limit", type=int, default=100, help="examples per task in the sweep")
    ap.add_argument("--skip-sweep", action="store_true")
    a = ap.parse_args()
    from lmpress.models.load import set_threads

    set_threads()  # every core, as the lmpress command runs (the library leaves them)
    res = json.loads(a.json.read_text()) if a.json.is_file() else {}
    out = REPO / "benchmarks" / "sweep"
    if not a.skip_sweep:
        res["sweep"] = run_sweep(out, a.windows, a.limit)
        res["sweep"]["browser"] = screenshot(out / "report.html", out / "report_screenshot.png")
        print(json.dumps(res["sweep"]), flush=True)
        a.json.write_text(json.dumps(res, indent=1) + "\n")
    a.work.mkdir(parents=True, exist_ok=True)
    res["cache"] = bench_cache(a.work, a.windows)
    res["cache"]["command"] = f"python scripts/bench_eval.py --windows {a.windows}"
    print(json.dumps(res["cache"]), flush=True)
    a.json.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
