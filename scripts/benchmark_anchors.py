"""BENCHMARKS.md against the anchors: other tools on the same model and protocol.

The anchor figures are those of shared/ANCHORS.md (:data:`ANCHOR_POINTS`); the
benchmark's Pareto plot draws them, and ``benchmarks/anchors.json`` holds the same
points for ``lmpress sweep --anchors``.
"""

from benchmark_cells import fmt_ppl, mark

from lmpress.report.pareto import BUDGETS

# Other tools on the default model under the benchmark protocol, as in ANCHORS.md:
# (who, bits per weight over the block linears, WikiText-2 perplexity)
ANCHOR_POINTS: list[tuple[str, float, float]] = [
    ("RTN w8 per channel", 8.05, 21.12),
    ("RTN w4 per channel", 4.05, 57.45),
    ("RTN w4 g128", 4.27, 35.02),
    ("RTN w4 g64", 4.50, 29.50),
    ("RTN w3 g64", 3.50, 167.9),
    ("RTN w2 g64", 2.50, 517_532.0),
    ("HQQ 0.2.8 4-bit g64", 4.50, 25.66),
    ("HQQ 0.2.8 4-bit g128", 4.25, 28.40),
    ("HQQ 0.2.8 3-bit g64 axis 0", 3.50, 89.75),
    ("HQQ 0.2.8 3-bit g64", 3.50, 174.5),
    ("HQQ 0.2.8 2-bit g32", 3.00, 227_785.0),
    ("bitsandbytes NF4 b64", 4.50, 26.35),
    ("optimum-quanto qint4", 4.31, 32.85),
    ("llm-compressor GPTQ w4 g64", 4.31, 28.06),
    ("auto-round w4 g128 sym (20 iters)", 4.14, 27.49),
    ("llama.cpp Q8_0", 8.50, 21.07),
    ("llama.cpp Q4_K_M + imatrix", 5.53, 21.60),
    ("llama.cpp Q4_K_M", 5.53, 22.22),
    ("llama.cpp Q5_K_S", 5.88, 23.38),
    ("llama.cpp Q3_K_M (falls back)", 4.63, 24.24),
    ("llama.cpp Q4_0", 4.50, 26.06),
    ("llama.cpp IQ4_XS", 4.47, 25.10),
    ("llama.cpp Q2_K + imatrix (falls back)", 4.23, 24.69),
    ("llama.cpp Q2_K (falls back)", 4.23, 29.38),
    ("llama.cpp IQ2_XXS + imatrix (falls back)", 3.90, 34.73),
]

# ANCHORS.md's round-to-nearest table, per lmpress scheme (w3g128's figure is the one
# quoted in issue 2: the table has no w3 g128 row).
ANCHOR_RTN = {
    "w8": 21.12,
    "w4g128": 35.02,
    "w4g64": 29.50,
    "w3g128": 445.0,
    "w3g64": 167.9,
    "w2g64": 517_532.0,
}
# The strongest peer GPTQ of ANCHORS.md, which lmpress's GPTQ must not lose to.
ANCHOR_PEER_GPTQ = {"w4g64": ("llm-compressor 0.14 GPTQModifier, w4 g64 asym, act-order", 28.06)}

Point = tuple[str, float, float]


def best_under(points: list[Point], budget: float) -> Point | None:
    """The lowest-perplexity ``(who, bpw, ppl)`` with ``bpw <= budget``, or None."""
    fit = [p for p in points if p[1] <= budget + 1e-9]
    return min(fit, key=lambda p: p[2]) if fit else None


def rtn_anchor_lines(by: dict, schemes: list[str]) -> list[str]:
    """The table of lmpress's RTN and GPTQ beside the anchors' RTN, scheme by scheme."""
    lines = ["| scheme | anchor RTN | lmpress RTN | lmpress GPTQ |", "|---|---|---|---|"]
    for s in schemes:
        if s in ANCHOR_RTN:
            rt, gp = by.get(("rtn", s)), by.get(("gptq", s))
            lines.append(
                f"| {s} | {fmt_ppl(ANCHOR_RTN[s])} | {fmt_ppl(rt['ppl']) if rt else '-'} | "
                f"{fmt_ppl(gp['ppl']) if gp else '-'} |"
            )
    return lines


def pareto_lines(rows: list[dict]) -> list[str]:
    """The budget table: best lmpress row and best preset vs the best anchor under each budget."""
    ours = [(f"{r['method']} {r['scheme']}", r["bits_per_weight"], r["ppl"]) for r in rows]
    presets = [p for p in ours if p[0].startswith("preset:")]
    out = [
        "| budget (bits/weight) | best anchor | lmpress best (any cell) | lmpress best preset "
        "| preset vs anchor |",
        "|---|---|---|---|---|",
    ]
    for b in BUDGETS:
        anc = best_under(ANCHOR_POINTS, b)
        me = best_under(ours, b)
        pr = best_under(presets, b)

        def cell(p: Point | None) -> str:
            return f"{p[0]}: {fmt_ppl(p[2])} at {p[1]:.3f}" if p else "-"

        margin = "-"
        if anc and pr:
            ok = pr[2] < anc[2]
            ratio = anc[2] / pr[2] if ok else pr[2] / anc[2]
            margin = f"{ratio:,.2f}x {'lower' if ok else 'higher'} ppl: {mark(ok)}"
        out.append(f"| <= {b} | {cell(anc)} | {cell(me)} | {cell(pr)} | {margin} |")
    return out
