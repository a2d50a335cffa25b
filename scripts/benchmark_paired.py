"""Whether a perplexity difference between two BENCHMARKS.md rows is resolved.

Two cells a fraction of a percent apart can swap order by chance; these lines
put each difference beside its standard error over windows and beside the
spread that a perturbation of the same size gives by direction alone.
"""

import statistics

from lmpress.eval.perplexity import paired_difference


def sigmas(x: float, se: float) -> str:
    """How many standard errors ``x`` lies from zero, in words."""
    return f"{abs(x) / se:.1f} standard errors from zero" if se > 0 else "no spread"


def paired_lines(ref: dict, rows: dict[str, dict]) -> list[str]:
    """Whether a perplexity difference is resolved: each row's paired ln(PPL / PPL(ref))
    and the two rows' paired difference, with standard errors over windows."""
    if not all("window_nll" in r and "ln_ppl_ratio" in r for r in rows.values()):
        return []
    out = []
    for name, r in rows.items():
        out.append(
            f"    - {name} against the reference, paired on the same positions: "
            f"ln(PPL/PPL(ref)) = {r['ln_ppl_ratio']:+.5f} ± {r['ln_ppl_ratio_stderr_windows']:.5f} "
            f"(standard error over {len(r['window_nll'])} windows; "
            f"{sigmas(r['ln_ppl_ratio'], r['ln_ppl_ratio_stderr_windows'])})"
        )
    if "ln_ppl_ratio" in ref:
        out.append(
            f"    - the reference against its own float16 logit cache (the cache's share of "
            f"the figures above): {ref['ln_ppl_ratio']:+.6f}"
        )
    (na, a), (nb, b) = rows.items()
    if a.get("window_tokens") == b.get("window_tokens"):
        d, se = paired_difference(a["window_nll"], b["window_nll"], a["window_tokens"])
        out.append(
            f"    - {na} against {nb}, paired window by window: ln(PPL({na})/PPL({nb})) = "
            f"{d:+.5f} ± {se:.5f} ({sigmas(d, se)}): "
            + (
                "a difference this protocol does not resolve"
                if abs(d) < 2 * se
                else "a resolved difference"
            )
        )
    return out


def noise_lines(floor: dict, rows: dict[str, dict]) -> list[str]:
    """How far a perturbation of the RTN error's size moves perplexity by direction alone."""
    ln = floor["ln_ppl_ratios"]
    sd = statistics.stdev(ln) if len(ln) > 1 else float("nan")
    inside = [
        n
        for n, r in rows.items()
        if "ln_ppl_ratio" in r and min(ln) <= r["ln_ppl_ratio"] <= max(ln)
    ]
    return [
        f"    - RTN's own rounding error at {floor['scheme']}, shuffled within each row and "
        f"added to the float model ({len(ln)} seeds: the same error values in random "
        f"directions): ln(PPL/PPL(ref)) from {min(ln):+.5f} to {max(ln):+.5f} (sd {sd:.5f}); "
        + (
            f"{' and '.join(inside)} lie{'s' if len(inside) == 1 else ''} inside that range: "
            "at this size, which way a perturbation happens to push decides the perplexity "
            "order, not its size"
            if inside
            else "both rows lie outside that range"
        )
        + f" (`{floor['command']}`)"
    ]
