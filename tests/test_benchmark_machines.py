"""The benchmark page names the machine of every timed row, one marker per CPU."""

from benchmark_machines import machine_legend, machine_marker, machines


def test_each_recorded_cpu_gets_its_own_marker():
    rows = [
        {"cpu": "EPYC (AVX-512)", "date": "2026-12-02 14:00"},
        {"cpu": "EPYC (AVX2)", "date": "2026-12-02 17:00"},
        {"cpu": "EPYC (AVX-512)", "date": "2026-12-02 15:00"},
        {"date": "2026-11-24 10:00"},
    ]
    marks = [machine_marker(r, machines(rows)) for r in rows]
    assert marks[0] == marks[2] != marks[1]
    assert marks[3] == ""
    legend = machine_legend(rows)
    assert f"{marks[0].strip()} (2 rows) EPYC (AVX-512)" in legend
    assert f"{marks[1].strip()} (1 rows) EPYC (AVX2)" in legend
    assert "the other 1 rows" in legend


def test_markers_stay_distinct_past_the_alphabet():
    rows = [{"cpu": f"cpu {i}", "date": f"2026-12-{i + 1:02d}"} for i in range(30)]
    known = machines(rows)
    marks = {machine_marker(r, known) for r in rows}
    assert len(marks) == 30
