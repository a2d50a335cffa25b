"""The benchmark report names the machine of every timed row, one marker per CPU."""

from lmpress.report.benchmarks import _machine, _machines, machine_legend


def test_each_recorded_cpu_gets_its_own_marker():
    rows = [
        {"cpu": "EPYC (AVX-512)", "date": "2026-12-02 14:00"},
        {"cpu": "EPYC (AVX2)", "date": "2026-12-02 17:00"},
        {"cpu": "EPYC (AVX-512)", "date": "2026-12-02 15:00"},
        {"date": "2026-11-24 10:00"},
    ]
    marks = [_machine(r, _machines(rows)) for r in rows]
    assert marks[0] == marks[2] != marks[1]
    assert marks[3] == ""
    legend = machine_legend(rows)
    assert f"{marks[0].strip()} (2 rows) EPYC (AVX-512)" in legend
    assert f"{marks[1].strip()} (1 rows) EPYC (AVX2)" in legend
    assert "the other 1 rows" in legend


def test_markers_stay_distinct_past_the_alphabet():
    rows = [{"cpu": f"cpu {i}", "date": f"2026-12-{i + 1:02d}"} for i in range(30)]
    machines = _machines(rows)
    marks = {_machine(r, machines) for r in rows}
    assert len(marks) == 30


def test_a_row_run_under_a_changed_preset_names_it():
    from lmpress.report.benchmarks import _commands

    row = {"command": "lmpress quantize m --preset best-3bit", "commit": "abc1234"}
    by = {
        ("leanquant", "w3g64"): {**row, "measured_as": "preset:best-3bit"},
        ("gptq", "w3g64"): {"command": "lmpress quantize m --method gptq"},
    }
    lines = _commands(by, ["w3g64"], ["leanquant", "gptq"])
    assert "at commit abc1234, preset:best-3bit was leanquant at w3g64" in lines[0]
    assert lines[1] == "- w3g64 gptq: `lmpress quantize m --method gptq`"


def test_cpu_label_tells_apart_machines_of_one_model_name():
    from lmpress.report.benchmarks import cpu_label

    def info(family, model, flags):
        return (
            f"processor\t: 0\ncpu family\t: {family}\nmodel\t\t: {model}\n"
            f"model name\t: AMD EPYC\nflags\t\t: fpu sse2 {flags}\n\n"
            "processor\t: 1\ncpu family\t: 99\nmodel name\t: other\n"
        )

    zen4 = cpu_label(info(25, 17, "avx2 fma avx512f"))
    assert zen4 == "AMD EPYC (AVX-512, family 25 model 17)"
    assert cpu_label(info(26, 2, "avx2 fma avx512f")) != zen4
    assert cpu_label(info(25, 1, "avx2 fma")) == "AMD EPYC (AVX2, family 25 model 1)"
    assert cpu_label("model name\t: Neoverse\nFeatures\t: fp asimd\n") == "Neoverse"
    assert cpu_label("") == ""


def test_an_unresolved_perplexity_difference_is_reported_as_such():
    """The report pairs two rows window by window before reading a sign into them."""
    from lmpress.report.benchmarks import _paired_lines

    ref = {"ln_ppl_ratio": 1e-6}
    tokens = [100] * 4

    def row(nlls):
        return {"window_nll": nlls, "window_tokens": tokens, "ln_ppl_ratio": 0.001,
                "ln_ppl_ratio_stderr_windows": 0.002}  # fmt: skip

    noisy = _paired_lines(
        ref, {"A": row([300.0, 301, 299, 300]), "B": row([300.1, 300.8, 299.2, 300])}
    )
    assert "does not resolve" in noisy[-1] and "over 4 windows" in noisy[0]
    clear = _paired_lines(ref, {"A": row([310.0, 311, 309, 310]), "B": row([300.0, 300, 300, 300])})
    assert clear[-1].endswith("a resolved difference")
    assert _paired_lines(ref, {"A": {"ppl": 1.0}, "B": row([1.0] * 4)}) == []


def test_the_noise_floor_says_whether_rows_lie_within_luck_of_direction():
    from lmpress.report.benchmarks import _noise_lines

    floor = {"scheme": "w8", "ln_ppl_ratios": [-0.002, 0.001, 0.0005], "command": "c"}
    (inside,) = _noise_lines(
        floor, {"GPTQ": {"ln_ppl_ratio": 0.0005}, "RTN": {"ln_ppl_ratio": -0.001}}
    )
    assert "GPTQ and RTN lie inside" in inside and "from -0.00200 to +0.00100" in inside
    (outside,) = _noise_lines(
        floor, {"GPTQ": {"ln_ppl_ratio": 0.01}, "RTN": {"ln_ppl_ratio": 0.02}}
    )
    assert "both rows lie outside" in outside
