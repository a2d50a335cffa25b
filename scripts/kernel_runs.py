"""Recorded GEMV runs of ``scripts/bench_kernels.py``: pooling the runs of separate
processes into one, and comparing two rows of a run."""

import statistics
from typing import Any


def speedup(base: dict[str, Any], ours: dict[str, Any]) -> float:
    """How many times faster row ``ours`` ran than row ``base`` of one kernel run: the
    median of the per-repetition ratios where both rows recorded their repetitions
    (``rep_seconds``, timed side by side, so a slow spell of the machine cancels), else
    the ratio of their medians (runs made before repetitions were recorded)."""
    a, b = base.get("rep_seconds"), ours.get("rep_seconds")
    if a and b and len(a) == len(b):
        return statistics.median(x / y for x, y in zip(a, b, strict=True))
    return base["seconds"] / ours["seconds"]


def merge_kernel_runs(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``kernels.json`` run pooled from runs of the same command in separate
    processes (``bench_kernels.py --processes N``): each row keeps every repetition of
    every process (``rep_seconds``, in process order, so that two rows' repetitions still
    pair up as timed side by side), its median over all of them, and the per-process
    medians (``process_seconds``); a note that differed between processes (the GEMV path
    a race chose) lists each. The memory copy is the median of the processes' copies."""
    if not parts:
        raise ValueError("merge_kernel_runs needs at least one run")

    def key(r: dict[str, Any]) -> tuple:
        return (tuple(r["shape"]), r["m"], r["regime"], r["method"])

    by_part = [{key(r): r for r in p["rows"]} for p in parts]
    rows = []
    for r0 in parts[0]["rows"]:
        group = [rows_of[key(r0)] for rows_of in by_part if key(r0) in rows_of]
        reps = [t for r in group for t in r.get("rep_seconds", [r["seconds"]])]
        sec = statistics.median(reps)
        rows.append(
            {
                **r0,
                "seconds": sec,
                "gbs": r0["bytes"] / sec / 1e9,
                "note": " / ".join(dict.fromkeys(r["note"] for r in group)),
                "rep_seconds": reps,
                "process_seconds": [r["seconds"] for r in group],
            }
        )
    return {
        **parts[0],
        "memory_copy_gbs": statistics.median(p["memory_copy_gbs"] for p in parts),
        "processes": len(parts),
        "rows": rows,
    }
