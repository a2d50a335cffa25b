"""Recorded GEMV runs: speedups pair repetitions, and separate processes pool into one run."""

import pytest
from kernel_runs import merge_kernel_runs, speedup


def test_speedups_pair_the_repetitions_when_the_run_recorded_them():
    # repetition 2 was a slow spell for both: paired ratios ignore it, medians would not
    base = {"seconds": 10.0, "rep_seconds": [10.0, 30.0, 10.0]}
    ours = {"seconds": 11.0, "rep_seconds": [8.0, 33.0, 8.0]}
    assert speedup(base, ours) == 1.25
    assert speedup({"seconds": 10.0}, {"seconds": 8.0}) == 1.25  # runs without repetitions
    assert speedup(base, {"seconds": 8.0, "rep_seconds": [8.0]}) == 1.25  # unequal: medians


def test_runs_of_separate_processes_pool_their_repetitions():
    def run(int4_reps: list[float], ours_reps: list[float], note: str, copy_gbs: float) -> dict:
        rows = [
            {"shape": [576, 576], "m": 1, "regime": "warm", "method": meth, "bytes": 1000,
             "seconds": sorted(reps)[len(reps) // 2], "gbs": 0.0, "note": nt,
             "rep_seconds": reps}
            for meth, reps, nt in (("torch int4", int4_reps, ""),
                                   ("lmpress w4g128", ours_reps, note))
        ]  # fmt: skip
        return {"cpu": "cpu", "command": "c", "memory_copy_gbs": copy_gbs, "rows": rows}

    # the second process ran slower throughout, torch's kernel and ours alike
    fast = run([8.0, 8.0, 8.0], [6.0, 6.0, 6.0], "unpack", 30.0)
    slow = run([10.0, 10.0, 10.0], [12.0, 12.0, 12.0], "lookup", 20.0)
    third = run([8.0, 8.0, 8.0], [6.4, 6.4, 6.4], "unpack", 40.0)
    m = merge_kernel_runs([fast, slow, third])
    int4, ours = m["rows"]
    assert m["processes"] == 3 and m["memory_copy_gbs"] == 30.0
    assert ours["rep_seconds"] == [6.0] * 3 + [12.0] * 3 + [6.4] * 3  # in process order
    assert ours["process_seconds"] == [6.0, 12.0, 6.4]
    assert ours["seconds"] == 6.4 and ours["gbs"] == 1000 / 6.4 / 1e9
    assert ours["note"] == "unpack / lookup"  # the race chose differently in one process
    assert int4["note"] == ""
    assert speedup(int4, ours) == 8.0 / 6.4  # repetitions pair within their process
    with pytest.raises(ValueError, match="at least one run"):
        merge_kernel_runs([])
