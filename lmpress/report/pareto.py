"""The Pareto plot of a sweep: perplexity against bits per weight, one line per method."""

import json
from collections.abc import Sequence
from pathlib import Path

from lmpress.errors import LmpressError

# (label, bits per weight, perplexity) of a point drawn for comparison, e.g. another tool
AnchorPoint = tuple[str, float, float]

# The bit budgets the presets are built to stay under: faint vertical lines, so that
# a reader sees at a glance which cells fit each budget.
BUDGETS = [2.5, 3.5, 4.5]


def read_anchors(path: str | Path) -> list[AnchorPoint]:
    """Comparison points from a JSON file: a list of ``{"label", "bits_per_weight",
    "ppl"}`` objects (other tools' results on the same model and protocol)."""
    try:
        rows = json.loads(Path(path).read_text())
        points = [(str(r["label"]), float(r["bits_per_weight"]), float(r["ppl"])) for r in rows]
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise LmpressError(
            f"anchors file {path}: {e}; expected a JSON list of "
            '{"label": ..., "bits_per_weight": ..., "ppl": ...} objects'
        ) from None
    return points


def plot_pareto(
    rows: list[dict], ref_ppl: float, path: Path, anchors: Sequence[AnchorPoint] = ()
) -> None:
    """Write ``path``: perplexity (log) against bits per weight, one line per method and
    presets as stars, with the ``anchors`` (other tools' points on the same model and
    protocol, :func:`read_anchors`) as crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 6.5), dpi=110)
    methods = sorted({r["method"] for r in rows if not r["method"].startswith("preset:")})
    for m in methods:
        pts = sorted((r["bits_per_weight"], r["ppl"]) for r in rows if r["method"] == m)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"lmpress {m}")
    pre = [r for r in rows if r["method"].startswith("preset:")]
    if pre:
        ax.scatter(
            [r["bits_per_weight"] for r in pre],
            [r["ppl"] for r in pre],
            marker="*",
            s=220,
            c="gold",
            edgecolors="black",
            zorder=5,
            label="lmpress presets",
        )
        for r in pre:
            ax.annotate(
                r["method"].split(":", 1)[1],
                (r["bits_per_weight"], r["ppl"]),
                textcoords="offset points",
                xytext=(6, -12),
                fontsize=8,
            )
    # anchors above 6 bits would only stretch the axis past every low-bit cell
    anc = [a for a in anchors if a[1] <= 6]
    if anc:
        ax.scatter([a[1] for a in anc], [a[2] for a in anc], marker="x", c="gray", label="anchors")
    for who, x, y in anc:
        ax.annotate(
            who, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=6, color="dimgray"
        )
    ax.axhline(ref_ppl, color="black", linestyle=":", linewidth=1, label=f"float32 {ref_ppl:.2f}")
    for b in BUDGETS:
        ax.axvline(b, color="lightgray", linewidth=0.8)
    ax.set_yscale("log")
    top = 1e3 if anchors else max([r["ppl"] for r in rows] + [ref_ppl]) * 1.3
    ax.set_ylim(ref_ppl * 0.95, top)
    ax.set_xlabel("bits per weight (quantized modules, everything stored)")
    ax.set_ylabel("WikiText-2 perplexity (ctx 2048, 16 windows, log scale)")
    ax.set_title("Perplexity against bits per weight (lower-left is better)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
