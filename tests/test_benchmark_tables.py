"""The benchmark page says which command made each row of its quality tables."""

from benchmark_tables import command_lines


def test_a_row_run_under_a_changed_preset_names_it():
    row = {"command": "lmpress quantize m --preset best-3bit", "commit": "abc1234"}
    by = {
        ("leanquant", "w3g64"): {**row, "measured_as": "preset:best-3bit"},
        ("gptq", "w3g64"): {"command": "lmpress quantize m --method gptq"},
    }
    lines = command_lines(by, ["w3g64"], ["leanquant", "gptq"])
    assert "at commit abc1234, preset:best-3bit was leanquant at w3g64" in lines[0]
    assert lines[1] == "- w3g64 gptq: `lmpress quantize m --method gptq`"
