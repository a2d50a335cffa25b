"""The issue-5 bars rendered from the runtime benchmark's JSON."""

import pytest

from lmpress.report.runtime import runtime_bars


def agreement(scheme: str, path: str, top1: float, embed: str = "q8_0") -> dict:
    return {
        "label": scheme,
        "scheme": scheme,
        "embed_type": embed,
        "llamacpp_path": path,
        "positions": 512,
        "top1_agreement": top1,
    }


def test_gguf_verdict_is_on_the_float_path_with_the_cpu_path_beside_it():
    rt = {
        "gguf_agreement": [
            agreement("w8s", "cpu", 0.97),
            agreement("w8s", "float", 1.0),
            agreement("w8", "cpu", 0.96),
            agreement("w8", "float", 0.975),
            agreement("w8", "float", 0.99, embed="f16"),  # not the default export
        ]
    }
    bars = runtime_bars(rt)
    assert len(bars) == 2
    assert bars[0].startswith("- exported GGUF of w8 in llama.cpp (float path)")
    assert "97.50% (its exact-grid control w8s: 100.00%): **FAIL**" in bars[0]
    assert bars[1].startswith("  - the same export on llama.cpp's CPU path")
    assert "96.00% (its exact-grid control w8s: 97.00%)" in bars[1]


def test_gguf_verdict_falls_back_to_the_cpu_path_without_a_blas_build():
    rt = {"gguf_agreement": [agreement("w4g32", "cpu", 0.985)]}
    (bar,) = runtime_bars(rt)
    assert "(cpu path)" in bar and "98.50%: **pass**" in bar


def gemv_run(cpu: str, int4_us: float, **fields) -> dict:
    """A one-shape kernels.json run: 4-bit lmpress at 450 us, float32 at 3000 us."""
    rows = [
        {"shape": [4096, 4096], "m": 1, "regime": "cold", "method": meth, "seconds": us * 1e-6,
         "gbs": 1.0}
        for meth, us in (("float32 torch", 3000.0), ("torch int4", int4_us),
                         ("lmpress w4g128", 450.0))
    ]  # fmt: skip
    return {"cpu": cpu, "machine": "x", "date": "d", "command": "c", "threads": 2,
            "torch": "2.13", "kernel_build": {}, "memory_copy_gbs": 30.0, "repeats": 7,
            "rows": rows, **fields}  # fmt: skip


def test_each_machine_gets_its_own_gemv_table_and_bars():
    from lmpress.report.runtime import render_runtime

    text = render_runtime([gemv_run("Zen 4", 430.0), gemv_run("Zen 3", 900.0)], None)
    assert text.index("GEMV from packed codes: Zen 4") < text.index("GEMV from packed codes: Zen 3")
    assert "every shape (cold, Zen 4): slowest ratio 0.96x at 4096 x 4096: **FAIL**" in text
    assert "every shape (cold, Zen 3): slowest ratio 2.00x at 4096 x 4096: **pass**" in text
    assert "(cold): 6.67x" in render_runtime([gemv_run("Zen 4", 430.0)], None)


def test_runs_of_earlier_kernel_sources_are_kept_but_not_judged():
    from lmpress.report.runtime import render_runtime

    text = render_runtime(
        [
            gemv_run("Zen 4", 430.0, kernel_source="aaa"),
            gemv_run("Xeon", 700.0, kernel_source="bbb"),
        ],
        None,
        "bbb",
    )
    bars, record = text.split("### Bars (issue 5)")[1].split("Earlier kernel sources")
    assert "every shape (cold, Xeon): slowest ratio 1.56x" in bars and "Zen 4" not in bars
    assert "every shape (cold, Zen 4): slowest ratio 0.96x at 4096 x 4096: **FAIL**" in record
    assert text.index("packed codes: Xeon") < text.index("packed codes: Zen 4 (earlier kernel)")
    assert "digest aaa" in text


def test_speedups_pair_the_repetitions_when_the_run_recorded_them():
    from lmpress.report.runtime import speedup

    # repetition 2 was a slow spell for both: paired ratios ignore it, medians would not
    base = {"seconds": 10.0, "rep_seconds": [10.0, 30.0, 10.0]}
    ours = {"seconds": 11.0, "rep_seconds": [8.0, 33.0, 8.0]}
    assert speedup(base, ours) == 1.25
    assert speedup({"seconds": 10.0}, {"seconds": 8.0}) == 1.25  # runs without repetitions
    assert speedup(base, {"seconds": 8.0, "rep_seconds": [8.0]}) == 1.25  # unequal: medians


def test_runs_of_separate_processes_pool_their_repetitions():
    from lmpress.report.runtime import merge_kernel_runs, speedup

    def run(int4_reps: list[float], ours_reps: list[float], note: str, copy_gbs: float) -> dict:
        rows = [
            {"shape": [576, 576], "m": 1, "regime": "warm", "method": meth, "bytes": 1000,
             "seconds": sorted(reps)[len(reps) // 2], "gbs": 0.0, "note": nt,
             "rep_seconds": reps}
            for meth, reps, nt in (("torch int4", int4_reps, ""),
                                   ("lmpress w4g128", ours_reps, note))
        ]  # fmt: skip
        return gemv_run("cpu", 1.0, rows=rows, memory_copy_gbs=copy_gbs)

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
