"""The benchmark page reads a sign into a perplexity difference only when it is resolved."""

from benchmark_paired import noise_lines, paired_lines


def test_an_unresolved_perplexity_difference_is_reported_as_such():
    """The report pairs two rows window by window before reading a sign into them."""
    ref = {"ln_ppl_ratio": 1e-6}
    tokens = [100] * 4

    def row(nlls):
        return {"window_nll": nlls, "window_tokens": tokens, "ln_ppl_ratio": 0.001,
                "ln_ppl_ratio_stderr_windows": 0.002}  # fmt: skip

    noisy = paired_lines(
        ref, {"A": row([300.0, 301, 299, 300]), "B": row([300.1, 300.8, 299.2, 300])}
    )
    assert "does not resolve" in noisy[-1] and "over 4 windows" in noisy[0]
    clear = paired_lines(ref, {"A": row([310.0, 311, 309, 310]), "B": row([300.0, 300, 300, 300])})
    assert clear[-1].endswith("a resolved difference")
    assert paired_lines(ref, {"A": {"ppl": 1.0}, "B": row([1.0] * 4)}) == []


def test_the_noise_floor_says_whether_rows_lie_within_luck_of_direction():
    floor = {"scheme": "w8", "ln_ppl_ratios": [-0.002, 0.001, 0.0005], "command": "c"}
    (inside,) = noise_lines(
        floor, {"GPTQ": {"ln_ppl_ratio": 0.0005}, "RTN": {"ln_ppl_ratio": -0.001}}
    )
    assert "GPTQ and RTN lie inside" in inside and "from -0.00200 to +0.00100" in inside
    (outside,) = noise_lines(floor, {"GPTQ": {"ln_ppl_ratio": 0.01}, "RTN": {"ln_ppl_ratio": 0.02}})
    assert "both rows lie outside" in outside
