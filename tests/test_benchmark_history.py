"""The re-measurement record of BENCHMARKS.md (scripts/benchmark_history.py)."""

import json

from benchmark_history import history_lines, measurements


def test_cells_measured_twice_are_listed_with_their_change(tmp_path):
    rows = [
        {"cell": "gptq|w4g128|P", "ppl": 20.0, "date": "d1", "commit": "a", "bits_per_weight": 4.2},
        {"cell": "rtn|w4g128|P", "ppl": 30.0, "date": "d1", "commit": "a"},
        {"cell": "gptq|w4g128|Q", "ppl": 99.0},  # another protocol
        {"cell": "gptq|w4g128|P", "ppl": 21.0, "date": "d2", "commit": "b", "cpu": "EPYC"},
    ]
    f = tmp_path / "results.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    by = measurements(f, "P")
    assert [r["ppl"] for r in by["gptq|w4g128|P"]] == [20.0, 21.0]
    lines = history_lines(by)
    table = [line for line in lines if line.startswith("| gptq w4g128")]
    assert len(table) == 2 and "+0.00%" in table[0] and "+5.00%" in table[1]
    assert "EPYC" in table[1] and "not recorded" in table[0]
    assert not [line for line in lines if line.startswith("| rtn")]
    assert history_lines(measurements(tmp_path / "missing.jsonl", "P")) == []
