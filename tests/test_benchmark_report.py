"""The quality part of the benchmark page, rendered from recorded rows alone."""

import argparse

from benchmark_report import render


def cell(method: str, scheme: str, ppl: float) -> dict:
    return {"cell": f"{method}|{scheme}|p", "method": method, "scheme": scheme, "ppl": ppl,
            "bits_per_weight": 8.25, "kl_mean": 0.001, "kl_p99": 0.01, "top1_agreement": 0.99,
            "quantize_s": 2.0, "process_wall_s": 9.0, "peak_rss_mb": 900.0,
            "peak_rss_source": "VmHWM",
            "command": f"lmpress quantize --method {method}"}  # fmt: skip


def test_rtn_and_gptq_rows_render_with_their_bar_and_no_methods_section(tmp_path):
    ref = {"cell": "reference|p", "method": "float", "scheme": "-", "ppl": 20.0,
           "command": "lmpress eval m"}  # fmt: skip
    done = {r["cell"]: r for r in (ref, cell("rtn", "w8", 20.2), cell("gptq", "w8", 20.1))}
    args = argparse.Namespace(
        ctx=2048, windows=16, calib_samples=128, calib_seq_len=512, out=str(tmp_path / "B.md")
    )
    text = render(done, "p", args)
    assert "**context 2048, 16 windows** (32,752 scored tokens)" in text
    assert "| w8 | rtn | 8.250 | 20.20 | 1.010 |" in text
    assert "| w8 | 21.12 | 20.20 | 20.10 |" in text  # the anchors' RTN beside both
    assert "(RTN/GPTQ: w8: 1.00x): **pass**" in text
    assert "Methods and combinations" not in text and not (tmp_path / "benchmarks").exists()


def test_budget_rows_render_beside_the_best_uniform_scheme_under_their_budget():
    from benchmark_budget import budget_section

    ref = {"cell": "reference|p", "method": "float", "scheme": "-", "ppl": 20.0}
    rows = [cell("gptq", "w2g64", 86.0), cell("gptq", "w3g64", 30.0), cell("gptq", "w2g32", 70.0)]
    rows[0]["bits_per_weight"], rows[1]["bits_per_weight"] = 2.281, 3.297
    rows[2]["bits_per_weight"] = 2.562
    alloc = {**cell("alloc:gptq", "b3.0", 32.4), "bits_per_weight": 2.997, "alloc_s": 379.0}
    by = {(r["method"], r["scheme"]): r for r in [*rows, alloc]}
    text = "\n".join(budget_section(ref, by))
    # w3g64 stores more than 3 bits: the comparison is w2g32, the best at or under 3.0
    assert "| 379.0 | w2g32 70.00 (2.562 bits) |" in text
    assert "allocated 32.40 at 2.997 bits against uniform w2g32 70.00 at 2.562: **pass**" in text
    assert "Not measured yet: GPTQ at b2.5, b3.5, b4.0, b2.25; EvoPress" in text
