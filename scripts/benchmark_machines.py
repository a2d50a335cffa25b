"""Which recorded machine timed each row of a BENCHMARKS.md table, and the legend.

Quantize seconds and peak RSS compare only between rows of one machine, so each
timed cell carries a marker naming its CPU and the page explains the markers.
"""

MACHINE_MARKS = "ᴮᶜᴰᴱᶠᴳᴴᴵᴶᴷᴸᴹᴺᴼᴾᴿˢᵀᵁⱽᵂ"


def mark_for(i: int) -> str:
    """The marker of the ``i``-th recorded machine (letters, then bracketed numbers)."""
    return MACHINE_MARKS[i] if i < len(MACHINE_MARKS) else f"[{i + 1}]"


def machines(rows: list[dict]) -> list[str]:
    """Recorded CPUs in the order their first row was measured."""
    return list(
        dict.fromkeys(
            r["cpu"] for r in sorted(rows, key=lambda r: r.get("date", "")) if r.get("cpu")
        )
    )


def machine_marker(r: dict, known: list[str]) -> str:
    """A marker after a row's timings naming the recorded machine it ran on (``known``:
    :func:`machines` of the table's rows, as in the legend)."""
    if not r.get("cpu"):
        return ""
    return " " + mark_for(known.index(r["cpu"]))


def machine_legend(rows: list[dict]) -> str:
    """Which machine the timings of the table rows come from (timings compare only within one)."""
    cpus = machines(rows)
    old = sum(1 for r in rows if not r.get("cpu"))
    if not cpus:
        return ""
    marked = "; ".join(
        f"{mark_for(i)} ({sum(r.get('cpu') == c for r in rows)} rows) {c}"
        for i, c in enumerate(cpus)
    )
    return (
        f"Machines: timings marked {marked}; the other {old} rows on the machine of earlier "
        "sessions (its model was not recorded per row). Compare quantize seconds and RSS "
        "only between rows of one machine. Bits do not depend on it; perplexity moved by "
        "under 0.3% for the RTN / GPTQ cells measured on both (BLAS numerics) and by 1% for "
        "awq+rtn w4g128 (25.29 there, 25.55 here: AWQ's discrete scale search can choose "
        "differently)."
    )
