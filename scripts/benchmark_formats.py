"""BENCHMARKS.md's formats section (issue 23): the float and non-uniform formats under
RTN, GPTQ and the best applicable method, beside the integer schemes of nearest bits."""

from benchmark_cells import fmt_ppl
from benchmark_tables import QUALITY_HEADER, command_lines, quality_rows

# (method, scheme) in the order they are measured: the bars' cells first
FORMAT_CELLS = [
    ("rtn", "nvfp4"),
    ("gptq", "nvfp4"),
    ("rtn", "mxfp4"),
    ("gptq", "mxfp4"),
    ("rtn", "lut4"),
    ("rtn", "lut4g128"),
    ("rtn", "w4g32"),
    ("rtn", "nf4g64"),
    ("rtn", "fp4g32"),
    ("rtn", "mix4g64"),
    ("rtn", "nupes4g64"),
    ("rtn:imatrix", "lut4"),
    ("rtn:imatrix", "lut4g128"),
    ("rtn", "fp8"),
    ("rtn", "mxfp8"),
    ("rtn", "mxfp6"),
    ("rtn", "lut3"),
    ("gptq", "nf4g64"),
    ("gptq", "lut4g128"),
    ("rtn", "fp8b128"),
    ("gptq", "lut4"),
    ("gptq", "mix4g64"),
    ("gptq", "fp4g32"),
    ("rtn:imatrix", "nvfp4"),
    ("rtn:imatrix", "nf4g64"),
    ("awq+gptq", "nvfp4"),
    ("awq+gptq", "mxfp4"),
    ("gptq", "lut3"),
    ("gptq", "nupes4g64"),
    ("gptq", "mxfp6"),
    ("rtn:imatrix", "mxfp4"),
    ("gptq", "fp8"),
    ("gptq", "mxfp8"),
    ("rtn:imatrix", "lut3"),
]
# integer schemes shown beside them (measured by issue 2's grid), by nearest bits
INT_NEIGHBOURS = ["w8", "w4g32", "w4g64", "w4g128", "w3g64"]
# shared/ANCHORS.md: (tool and format, bits per weight, perplexity), same protocol
FORMAT_ANCHORS = [
    ("bitsandbytes NF4, block 64", 4.50, 26.35),
    ("llama.cpp IQ4_XS", 4.47, 25.10),
    ("llama.cpp Q4_0", 4.50, 26.06),
]
METHODS = ["rtn", "rtn:imatrix", "gptq", "awq+gptq"]


def gemv_lines(run: dict | None) -> list[str]:
    """The grid formats' batch-1 GEMV beside the integer 4-bit path, from
    ``scripts/bench_kernels.py --grid-only`` (``benchmarks/kernels-grid*.json``, one run
    per machine)."""
    if not run:
        return [
            "",
            "### CPU GEMV",
            "",
            "Not measured yet (`scripts/bench_kernels.py --grid-only`).",
        ]
    times = {(tuple(r["shape"]), r["m"], r["regime"], r["method"]): r for r in run["rows"]}
    lines = [
        "",
        f"### CPU GEMV: 16-value formats against the integer 4-bit path ({run['cpu']})",
        "",
        f"`{run['command']}` on {run['cpu']}, {run['threads']} threads, {run['date']} "
        f"(kernel sources {run['kernel_source']}"
        + ("" if run.get("current", True) else ", earlier than today's: the run of record")
        + "); medians over repetitions in fresh "
        "processes, every format timed in the same run; `cold`: weights evicted from the "
        "caches before each call (decoding reads every weight from memory), `warm`: "
        "in cache. Ratio: the format's time over `w4g128`'s at the same shape.",
        "",
        "| shape (out x in) | batch | regime | format | us | w4g128 us | ratio | within 1.25x |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for g in run["grid_vs_int4"]:
        key = (tuple(g["shape"]), g["m"], g["regime"])
        t, b = times[(*key, g["method"])], times[(*key, g["versus"])]
        lines.append(
            f"| {g['shape'][0]}x{g['shape'][1]} | {g['m']} | {g['regime']} | "
            f"{g['method'].removeprefix('lmpress ')} | {t['seconds'] * 1e6:.0f} | "
            f"{b['seconds'] * 1e6:.0f} | {g['ratio']:.2f} | "
            f"{'yes' if g['within_bar'] else '**no**'} |"
        )
    worst = max(run["grid_vs_int4"], key=lambda g: g["ratio"])
    verdict = "pass" if all(g["within_bar"] for g in run["grid_vs_int4"]) else "FAIL"
    lines += [
        "",
        f"- Bar, 16-value GEMV at batch 1 within 1.25x of the integer 4-bit path: "
        f"**{verdict}** (worst: {worst['method'].removeprefix('lmpress ')} "
        f"{worst['shape'][0]}x{worst['shape'][1]} {worst['regime']}, {worst['ratio']:.2f}x)",
    ]
    return lines


def formats_section(ref: dict, by: dict, gemv: list[dict] | None = None) -> list[str]:
    """The section's markdown lines from the recorded cells ``by[(method, scheme)]``."""
    schemes = [s for s in dict.fromkeys(s for _, s in FORMAT_CELLS) if s not in INT_NEIGHBOURS]
    if not any((m, s) in by for m, s in FORMAT_CELLS):
        return []
    lines = [
        "",
        "## Float and non-uniform formats (issue 23)",
        "",
        "Same protocol as the integer grid. `nvfp4`: E2M1 codes, an E4M3 scale per 16 "
        "weights and an fp32 tensor scale; `mxfp4`/`mxfp6`/`mxfp8`: OCP MX, an E8M0 scale "
        "per 32; `fp4g32`/`nf4g64`: E2M1 / NormalFloat-4 codes with an fp16 scale per "
        "group; `lut4`/`lut3`: a 16-/8-value fp16 grid per output channel fitted by "
        "k-means (`rtn`: unweighted, data-free; `rtn:imatrix`: weighted by each input "
        "channel's E[x^2] on the calibration set; `gptq`: codes by error feedback, then "
        "the grid re-solved by least squares), `lut4g128` the same behind fp16 group "
        "scales; "
        "`nupes4g64`: power grid, power per channel; `mix4g64`: per-group choice among 4 "
        "grids (2-bit tag); `fp8`: E4M3 with an fp32 scale per output channel, `fp8b128` "
        "per 128 x 128 block. Bits per weight count codes, every scale, grid and tag.",
        "",
        "Quantize seconds of this section's rows were measured while other jobs (builds, "
        "test runs) shared the machine's two cores: they are upper bounds, not comparable "
        "with the integer rows' (the GPTQ rows' Hessians and error feedback are the same "
        "work as for integers; the grid formats' range search costs about 2.4x the "
        "integer search on one thread).",
        "",
        *QUALITY_HEADER,
        f"| float32 | reference | 32 | {ref['ppl']:.2f} | 1.00 | 0 | 0 | 1.000 | - | - | - |",
    ]
    lines += quality_rows(ref, by, schemes, METHODS)
    lines += ["", "Integer schemes of nearest bits per weight (from the grid above):", ""]
    lines += [*QUALITY_HEADER]
    lines += quality_rows(ref, by, INT_NEIGHBOURS, ["rtn", "gptq"])
    lines += ["", "Commands that made each row:", ""]
    lines += command_lines(by, schemes, METHODS)
    lines += ["", "### Bars", ""]
    lines += format_bars(by)
    for run in gemv or [None]:
        lines += gemv_lines(run)
    return lines


def format_bars(by: dict) -> list[str]:
    """Issue 23's quality bars, each with the figures that decide it."""
    out = []
    rows = [
        (m, s, r)
        for (m, s), r in by.items()
        # at the anchors' precision (two decimals): nvfp4 is 4.5 bits plus one fp32
        # tensor scale per matrix, 4.50003
        if (m, s) in set(FORMAT_CELLS) and round(r["bits_per_weight"], 2) <= 4.5
    ]
    if rows:
        m, s, best = min(rows, key=lambda t: t[2]["ppl"])
        worst_anchor = min(a[2] for a in FORMAT_ANCHORS)
        verdict = "pass" if best["ppl"] < worst_anchor else "FAIL"
        anchors = "; ".join(f"{n} {p:.2f} ({b:.2f} bits)" for n, b, p in FORMAT_ANCHORS)
        out.append(
            f"- Best float/non-uniform recipe within 4.5 bits/weight (to two decimals, as "
            f"the anchors state theirs): {s} {m}, "
            f"{fmt_ppl(best['ppl'])} at {best['bits_per_weight']:.3f} bits, against every "
            f"4-bit anchor ({anchors}): **{verdict}**"
        )
    ints = [r for (m, sc), r in by.items() if m == "rtn" and sc in INT_NEIGHBOURS]
    for method, scheme in (("rtn", "lut4"), ("rtn:imatrix", "lut4"), ("rtn:imatrix", "lut4g128")):
        lut = by.get((method, scheme))
        if lut is None or not ints:
            continue
        bits = lut["bits_per_weight"]
        # the integer scheme that spends the fewest bits at or above the grid's
        above = [r for r in ints if r["bits_per_weight"] >= bits - 1e-9]
        near = min(above or ints, key=lambda r: abs(r["bits_per_weight"] - bits))
        verdict = "pass" if lut["ppl"] < near["ppl"] else "FAIL"
        fit = "E[x^2]-weighted k-means" if method == "rtn:imatrix" else "unweighted k-means"
        line = (
            f"- {scheme} {method} (learned grid, {fit}) {fmt_ppl(lut['ppl'])} at {bits:.3f} "
            f"bits against integer RTN {near['scheme']} {fmt_ppl(near['ppl'])} at "
            f"{near['bits_per_weight']:.3f} bits (the integer scheme of fewest bits at or "
            f"above the grid's): **{verdict}**"
        )
        # the same calibration data spent on an integer grid of no more bits
        below = [
            (r, by.get((method, r["scheme"])))
            for r in ints
            if method != "rtn"
            and r["bits_per_weight"] <= bits + 1e-9
            and by.get((method, r["scheme"]))
        ]
        if below:
            r, w = max(below, key=lambda t: t[0]["bits_per_weight"])
            line += (
                f"; against integer {method} {r['scheme']} {fmt_ppl(w['ppl'])} at "
                f"{r['bits_per_weight']:.3f} bits: "
                f"{'better' if lut['ppl'] < w['ppl'] else 'worse'}"
            )
        out.append(line)
    for s in ("nvfp4", "mxfp4"):
        rtn, gptq = by.get(("rtn", s)), by.get(("gptq", s))
        if rtn and gptq:
            verdict = "pass" if gptq["ppl"] < rtn["ppl"] else "FAIL"
            out.append(
                f"- GPTQ on {s} {fmt_ppl(gptq['ppl'])} against RTN {fmt_ppl(rtn['ppl'])}: "
                f"**{verdict}**"
            )
    return out
