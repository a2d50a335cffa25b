"""BENCHMARKS.md's "Methods and combinations" section: every method at every scheme,
the presets, the best cell per bit budget against the anchors, and their bars."""

from pathlib import Path

from benchmark_anchors import ANCHOR_POINTS, pareto_lines
from benchmark_bars import preset_bars
from benchmark_cells import fmt_ppl, rss_cell
from benchmark_tables import QUALITY_HEADER, command_lines, quality_rows

from lmpress.presets import PRESETS
from lmpress.report.pareto import plot_pareto

# The grid of this section, in the order its tables list it.
GRID_SCHEMES = ["w4g128", "w4g64", "w3g128", "w3g64", "w2g64", "w2g32"]
GRID_METHODS = [
    "rtn",
    "rtn:mse",
    "gptq",
    "leanquant",
    "hqq:fz",
    "hqq:scale",
    "hqq:fz+scale",
    "rtn:imatrix",
    "awq+rtn",
    "awq+gptq",
    "learned-round",
    "learned-round:layer",
    "gptq:guided",
]
METHOD_NOTES = {
    "rtn": "min-max round to nearest, no data",
    "rtn:mse": "round to nearest with a per-group clipping search on the rounding error, no data",
    "gptq": "GPTQ, Hessian-weighted clipping search (defaults)",
    "hqq:fz": "HQQ's half-quadratic fit of each group's zero point, float (fp16) zero points "
    "as the HQQ library stores them, no data (hqq's defaults)",
    "hqq:scale": "HQQ with the scales re-fitted too (`fit_scale=true`), integer zero points "
    "(hqq's defaults until this was measured: those rows ran `--method hqq`)",
    "hqq:fz+scale": "HQQ with the scales re-fitted too, float zero points (hqq's defaults "
    "until measured: those rows ran `--method hqq` on `:fz` schemes)",
    "rtn:imatrix": "RTN with a clipping search weighted by E[x^2] (llama.cpp's imatrix idea)",
    "awq+rtn": "AWQ scales folded into the preceding op, then rtn:imatrix",
    "awq+gptq": "AWQ scales, then GPTQ",
    "leanquant": "GPTQ with LeanQuant's loss-aware grid (weights 1/U_jj^2)",
    "learned-round": "AutoRound-style signed-gradient rounding offsets and range factors, "
    "fitted block by block to the float block's outputs, from GPTQ's solution (defaults: "
    "50 steps of 2 calibration samples per block, lr 0.005)",
    "learned-round:div": "learned-round with FlexRound's division-based rounding (learned "
    "log divisors per weight, row and column) in place of additive offsets (`rounding=div`)",
    "learned-round:layer": "the same parameters fitted per linear to its Hessian-form output "
    "error, from round-to-nearest, 100 steps (learned-round's defaults before the block "
    "objective)",
    "gptq:guided": "GPTQ with GuidedQuant's end-loss guidance, 2 output-channel groups "
    "(`guided=2`, end-loss gradients from the first 32 calibration samples; the w3g64 and "
    "w2g64 rows ran that backward pass in batches of 4 samples, about 8 GB peak; later rows "
    "one sample at a time, the default now)",
}


def methods_section(ref: dict, rows: list[dict], by: dict, out_md: Path) -> list[str]:
    """The section's lines ([] while only RTN and GPTQ are measured); draws the Pareto
    plot into ``benchmarks/pareto.png`` beside ``out_md``."""
    present = [m for m in GRID_METHODS if any(m == r["method"] for r in rows)]
    present += sorted(
        {r["method"] for r in rows}
        - set(present)
        - {"rtn", "gptq"}
        - {r["method"] for r in rows if r["method"].startswith("preset:")}
    )
    if not any(m not in ("rtn", "gptq") for m in present) and not any(
        r["method"].startswith("preset:") for r in rows
    ):
        return []
    schemes = [s for s in GRID_SCHEMES if any(r["scheme"] == s for r in rows)]
    lines = [
        "",
        "## Methods and combinations (issue 3)",
        "",
        "Same protocol. Methods: "
        + "; ".join(f"`{m}` {METHOD_NOTES.get(m, '')}" for m in present)
        + ".",
        "",
        *QUALITY_HEADER,
    ]
    lines += quality_rows(ref, by, schemes, present)
    pre = [r for r in rows if r["method"].startswith("preset:")]
    if pre:
        lines += _preset_table(pre)
    lines += ["", "Commands that made each row:", ""]
    lines += command_lines(by, schemes, present)
    for r in sorted(pre, key=lambda r: r["bits_per_weight"]):
        lines += command_lines(by, [r["scheme"]], [r["method"]])
    png = out_md.parent / "benchmarks" / "pareto.png"
    plot_pareto(rows, ref["ppl"], png, ANCHOR_POINTS)
    lines += [
        "",
        "### Best perplexity per bit budget, against the anchors",
        "",
        "Anchors: every row of shared/ANCHORS.md (bits per weight over the block linears, "
        "scored by the same evaluator). A cell fits a budget when its bits per weight, "
        "everything stored counted, are at most the budget.",
        "",
    ]
    lines += pareto_lines(rows)
    lines += ["", f"![perplexity against bits per weight]({png.relative_to(out_md.parent)})"]
    lines += ["", "### Bars (issue 3)", ""]
    lines += preset_bars(rows)
    return lines


def _preset_table(pre: list[dict]) -> list[str]:
    """The presets' table, from the fewest bits per weight up."""
    lines = [
        "",
        "### Presets",
        "",
        "| preset | what | scheme | bits/weight | perplexity | KL mean | top-1 | process s "
        "| peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(pre, key=lambda r: r["bits_per_weight"]):
        name = r["method"].split(":", 1)[1]
        lines.append(
            f"| `{name}` | {PRESETS.get(name).summary} | {r['scheme']} | "
            f"{r['bits_per_weight']:.3f} | {fmt_ppl(r['ppl'])} | {r['kl_mean']:.4f} | "
            f"{r['top1_agreement']:.3f} | {r['process_wall_s']:.1f} | {rss_cell(r)} |"
        )
    return lines
