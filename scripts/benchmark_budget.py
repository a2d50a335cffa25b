"""BENCHMARKS.md's bit-budget section (issue 26): the allocator's models beside the best
uniform scheme at or under the same average bits per weight, method for method."""

from benchmark_cells import fmt_ppl
from benchmark_machines import machines
from benchmark_tables import QUALITY_HEADER, quality_row

# (label, budget cell) in the order they are measured: "alloc:METHOD", "b<bits>"
BUDGET_CELLS = [
    ("alloc:gptq", "b3.0"),
    ("alloc:gptq", "b2.5"),
    ("alloc:gptq", "b3.5"),
    ("alloc:gptq", "b4.0"),
    ("alloc:gptq", "b2.25"),
    ("alloc-evo:gptq", "b3.0"),
]
# uniform integer schemes the allocated models are compared with (issue 2's and 3's grids)
UNIFORM = ["w2g128", "w2g64", "w2g32", "w3g128", "w3g64", "w4g128", "w4g64", "w4g32", "w8"]


def budget_of(cell: str) -> float:
    """``b3.0`` -> 3.0."""
    return float(cell.removeprefix("b"))


def alloc_args(label: str, cell: str) -> list[str]:
    """``lmpress quantize`` flags of an allocator cell: ``alloc:METHOD`` (knapsack) or
    ``alloc-evo:METHOD`` (knapsack, then EvoPress)."""
    kind, method = label.split(":", 1)
    search = ["--search", "evopress"] if kind == "alloc-evo" else []
    return ["--method", method, "--bits", str(budget_of(cell)), *search]


def best_uniform(by: dict, method: str, bits: float) -> tuple[str, dict] | None:
    """The lowest-perplexity uniform ``method`` row at or under ``bits``."""
    rows = [
        (s, by[(method, s)])
        for s in UNIFORM
        if (method, s) in by and by[(method, s)]["bits_per_weight"] <= bits + 1e-9
    ]
    return min(rows, key=lambda t: t[1]["ppl"]) if rows else None


def budget_section(ref: dict, by: dict) -> list[str]:
    """The section's markdown lines from the recorded cells ``by[(label, cell)]``."""
    cells = [c for c in BUDGET_CELLS if c in by]
    if not cells:
        return []
    known = machines(list(by.values()))
    lines = [
        "",
        "## Bits where they matter: allocation under a budget (issue 26)",
        "",
        "Same protocol. `lmpress quantize --bits B`: every block linear gets one of the "
        "integer schemes w2g128 ... w8g128 (docs/budget.md) so that the 210 linears "
        "average at most B bits per weight, everything stored counted; the choice "
        "minimises the summed predicted loss increase, each module's "
        "1/2 sum_o f_o [(W - Q) H (W - Q)^T]_oo with f the mean squared end-loss gradient "
        "of its outputs and H its input second moment (32 calibration samples of 512 "
        "tokens, one backward pass), Q the method's own solution at that scheme, solved "
        "exactly by a multiple-choice knapsack. Then the method runs the allocated recipe "
        "as usual. `alloc s`: the statistics, candidate solves and knapsack, included in "
        "`process s` but not in `quantize s`. Uniform rows: the best uniform scheme of the "
        "same method at or under the budget (from the grids above).",
        "",
        QUALITY_HEADER[0].removesuffix(" |") + " | alloc s | best uniform at or under |",
        QUALITY_HEADER[1] + "---|---|",
    ]
    verdicts = []
    for label, cell in cells:
        r = by[(label, cell)]
        method = label.split(":", 1)[1]
        uni = best_uniform(by, method, budget_of(cell))
        uni_text = (
            f"{uni[0]} {fmt_ppl(uni[1]['ppl'])} ({uni[1]['bits_per_weight']:.3f} bits)"
            if uni
            else "none measured"
        )
        row = quality_row(ref, f"budget {budget_of(cell):g}", label, r, known)
        lines.append(f"{row} {r.get('alloc_s', float('nan')):.1f} | {uni_text} |")
        if uni:
            verdicts.append((cell, method, r, uni))
    lines += ["", "Commands that made each row:", ""]
    lines += [f"- {c} {m}: `{by[(m, c)]['command']}`" for m, c in cells]
    lines += ["", "### Bars", ""]
    for cell, method, r, (s, u) in verdicts:
        ok = r["ppl"] < u["ppl"]
        lines.append(
            f"- budget {budget_of(cell):g}, {method}: allocated {fmt_ppl(r['ppl'])} at "
            f"{r['bits_per_weight']:.3f} bits against uniform {s} {fmt_ppl(u['ppl'])} at "
            f"{u['bits_per_weight']:.3f}: **{'pass' if ok else 'FAIL'}**"
        )
    for label, cell in cells:
        if not label.startswith("alloc-evo:"):
            continue
        knap = by.get(("alloc:" + label.split(":", 1)[1], cell))
        if knap is not None:
            evo = by[(label, cell)]
            lines.append(
                f"- budget {budget_of(cell):g}: EvoPress {fmt_ppl(evo['ppl'])} (KL "
                f"{evo['kl_mean']:.4f}) against the knapsack's {fmt_ppl(knap['ppl'])} (KL "
                f"{knap['kl_mean']:.4f}), at least matching: "
                f"**{'pass' if evo['kl_mean'] <= knap['kl_mean'] else 'FAIL'}**"
            )
    missing = [c for m, c in BUDGET_CELLS if m == "alloc:gptq" and (m, c) not in by]
    todo = [f"GPTQ at {', '.join(missing)}"] if missing else []
    if not any(label.startswith("alloc-evo:") for label, _ in cells):
        todo.append("EvoPress (`alloc-evo:gptq@b3.0`)")
    todo.append("the allocator with the best method (learned rounding)")
    lines.append(f"- Not measured yet: {'; '.join(todo)}.")
    return lines


def lossless_lines(run: dict | None) -> list[str]:
    """The lossless figures of ``scripts/benchmark_lossless.py`` (benchmarks/lossless.json)."""
    if not run:
        return []
    b = run["bf16"]
    lines = [
        "",
        "## Lossless coding (issue 26): DFloat11-style exponents, entropy-coded codes",
        "",
        f"`{run['command']}` on {run['cpu']}, one thread, {run['date']}. bf16: the "
        "reference weights rounded to bf16, every distinct tensor once (the tied head is "
        "the embedding); exponents ANS-coded per tensor, sign and mantissa one raw byte; "
        "stored bytes count streams, chunk offsets, histograms and shapes. bf16 times: "
        "medians of three.",
        "",
        "| what | values | stored / bf16 bytes | bits per value | bit-exact | encode s "
        "| decode s | zstd -3 / bf16 | zstd -19 / bf16 |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| SmolLM2-135M bf16, {b['tensors']} tensors | {b['values']:,} | {b['ratio']:.3f} | "
        f"{b['bits_per_value']:.2f} | {'yes' if b['bit_exact'] else '**no**'} | "
        f"{b['encode_s']:.2f} | {b['decode_s']:.2f} | {b['zstd3_ratio']:.3f} | "
        f"{b['zstd19_ratio']:.3f} |",
        "",
        "| codes | bits | coded bits/weight | saved of the code bits | zstd -19 saved "
        "| bits/weight before -> after (everything stored) | bit-exact |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in run["codes"]:
        lines.append(
            f"| {c['codes']} | {c['bits']} | {c['coded_bits_per_weight']:.3f} | "
            f"{c['saved_fraction']:.1%} | {c['zstd19_saved_fraction']:.1%} | "
            f"{c['bits_per_weight_before']:.3f} -> {c['bits_per_weight_after']:.3f} | "
            f"{'yes' if c['bit_exact'] else '**no**'} |"
        )
    w4 = next((c for c in run["codes"] if c["codes"] == "rtn w4g128"), None)
    lines += [
        "",
        f"- Bar, bf16 round trip bit-exact and at most 72% of the bytes: "
        f"**{'pass' if b['bit_exact'] and b['ratio'] <= 0.72 else 'FAIL'}** "
        f"({b['ratio']:.1%}); coded, not yet a checkpoint component (nothing stores it on "
        "disk or decodes it on load yet).",
    ]
    if w4:
        lines.append(
            f"- Bar, the coder saves at least 5% of w4g128's code bits: "
            f"**{'pass' if w4['saved_fraction'] >= 0.05 else 'FAIL'}** "
            f"({w4['saved_fraction']:.1%}, RTN codes)"
        )
    return lines
