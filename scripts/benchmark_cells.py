"""How BENCHMARKS.md writes one cell: perplexities, ratios, memory and a bar's verdict."""


def fmt_ppl(x: float) -> str:
    """A perplexity: two decimals, or none once it has five digits (collapsed cells)."""
    return f"{x:,.2f}" if x < 1e4 else f"{x:,.0f}"


def fmt_ratio(x: float) -> str:
    """A ratio to the reference, three decimals while it is still readable as one."""
    return f"{x:.3f}" if x < 100 else f"{x:,.0f}"


def rss_cell(r: dict) -> str:
    """Peak RSS; rows measured with rusage only are upper bounds (marked <=)."""
    if r.get("peak_rss_source") == "VmHWM":
        return f"{r['peak_rss_mb']:.0f}"
    return f"<= {r['peak_rss_mb']:.0f}"


def mark(ok: bool) -> str:
    """A bar's verdict, bold so that a failing bar stands out in the page."""
    return "**pass**" if ok else "**FAIL**"
