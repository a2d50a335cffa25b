"""The runtime section of the benchmark page and its bars, from the benchmarks' JSON."""

from benchmark_runtime import render_runtime, runtime_bars


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
    text = render_runtime([gemv_run("Zen 4", 430.0), gemv_run("Zen 3", 900.0)], None)
    assert text.index("GEMV from packed codes: Zen 4") < text.index("GEMV from packed codes: Zen 3")
    assert "every shape (cold, Zen 4): slowest ratio 0.96x at 4096 x 4096: **FAIL**" in text
    assert "every shape (cold, Zen 3): slowest ratio 2.00x at 4096 x 4096: **pass**" in text
    assert "(cold): 6.67x" in render_runtime([gemv_run("Zen 4", 430.0)], None)


def test_runs_of_earlier_kernel_sources_are_kept_but_not_judged():
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
