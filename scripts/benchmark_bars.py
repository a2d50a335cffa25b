"""The bars of BENCHMARKS.md's quality sections, each with its verdict.

A bar is a target the project set itself (in its tracker); each line states the
target, the measured figures it was judged on, and pass or FAIL.
"""

from benchmark_anchors import ANCHOR_PEER_GPTQ, ANCHOR_POINTS, best_under
from benchmark_cells import fmt_ppl, mark, rss_cell
from benchmark_paired import noise_lines, paired_lines

from lmpress.report.pareto import BUDGETS


def rtn_gptq_bars(ref: dict, by: dict, schemes: list[str], noise: dict | None = None) -> list[str]:
    """RTN against GPTQ, GPTQ w4g128's quality, cost, memory, size and load time, and
    GPTQ against the peer's."""
    out = []
    pairs = [
        (s, by[("rtn", s)], by[("gptq", s)])
        for s in schemes
        if ("rtn", s) in by and ("gptq", s) in by
    ]
    if pairs:
        worse = [(s, r, g) for s, r, g in pairs if g["ppl"] >= r["ppl"]]
        detail = ", ".join(f"{s}: {r['ppl'] / g['ppl']:,.2f}x" for s, r, g in pairs)
        out.append(
            f"- GPTQ beats RTN in perplexity at every scheme (RTN/GPTQ: {detail}): "
            f"{mark(not worse)}"
        )
        for s, r, g in worse:
            out.append(
                f"  - {s}: GPTQ {g['ppl']:.3f} vs RTN {r['ppl']:.3f} against the reference's "
                f"{ref['ppl']:.3f}: they differ by {abs(g['ppl'] - r['ppl']) / ref['ppl']:.2%} of "
                f"the reference; GPTQ is the closer model: KL {g['kl_mean']:.4f} vs "
                f"{r['kl_mean']:.4f}, top-1 agreement {g['top1_agreement']:.3f} vs "
                f"{r['top1_agreement']:.3f}."
            )
            out += paired_lines(ref, {"GPTQ": g, "RTN": r})
            if noise and s in noise:
                out += noise_lines(noise[s], {"GPTQ": g, "RTN": r})
        low = [(s, r, g) for s, r, g in pairs if s.startswith(("w3", "w2"))]
        if low:
            smallest = min(r["ppl"] / g["ppl"] for _, r, g in low)
            out.append(
                "- ... by a factor at 3 and 2 bits (read here as RTN/GPTQ >= 1.5x at every "
                f"3- and 2-bit scheme; smallest {smallest:.2f}x): {mark(smallest >= 1.5)}"
            )
    g4 = by.get(("gptq", "w4g128"))
    if g4:
        out += _gptq_w4g128_bars(ref, g4)
    for s, (who, ppl) in ANCHOR_PEER_GPTQ.items():
        g = by.get(("gptq", s))
        if g:
            out.append(
                f"- GPTQ {s} no worse than the peer's GPTQ ({who}: {ppl}): {g['ppl']:.2f}: "
                f"{mark(g['ppl'] <= ppl)}"
            )
    return out


def _gptq_w4g128_bars(ref: dict, g4: dict) -> list[str]:
    """The bars judged on the GPTQ w4g128 cell: quality, cost, memory, size, load time."""
    out = []
    ratio = g4["ppl"] / ref["ppl"]
    out.append(
        f"- GPTQ w4g128 at most 1.25x the reference perplexity: {g4['ppl']:.2f} / "
        f"{ref['ppl']:.2f} = {ratio:.3f}x: {mark(ratio <= 1.25)}"
    )
    fwd = g4.get("float_forward_calib_adjacent_s") or ref["float_forward_calib_s"]
    r1 = g4["quantize_s"] / fwd
    r2 = g4["process_wall_s"] / fwd
    out.append(
        f"- The whole GPTQ w4g128 run at most 2.5x one float forward pass over the same "
        f"calibration tokens ({fwd:.1f} s, batches of 8 x 512, best of two, measured by "
        f"this benchmark just before the GPTQ run): the `lmpress quantize` command, "
        f"model load, calibration tokenizing and saving included, "
        f"{g4['process_wall_s']:.1f} s = {r2:.2f}x: "
        f"{mark(r2 <= 2.5)} "
        f"(the pipeline alone: {g4['quantize_s']:.1f} s = {r1:.2f}x)"
    )
    out.append(f"- Peak RSS under 3 GB: {rss_cell(g4)} MiB: {mark(g4['peak_rss_mb'] < 3 * 1024)}")
    size = g4["weights_file_bytes"]
    promised = g4["stored_bytes_estimate"]
    out.append(
        f"- Checkpoint no larger than 1.1x (bits/weight x parameters / 8, quantized + float "
        f"tensors): weights file {size / 1e6:.1f} MB vs {promised / 1e6:.1f} MB = "
        f"{size / promised:.3f}x: {mark(size <= 1.1 * promised)}"
    )
    out.append(
        f"- Loading the checkpoint faster than loading the float model (model only, "
        f"medians of 5 loads interleaved in this run): lmpress {g4['load_s']:.3f} s vs "
        f"transformers `from_pretrained` of the float32 safetensors directory "
        f"{g4['float_hf_load_s']:.3f} s = {g4['load_s'] / g4['float_hf_load_s']:.2f}x: "
        f"{mark(g4['load_s'] < g4['float_hf_load_s'])}"
    )
    return out


def preset_bars(rows: list[dict]) -> list[str]:
    """Each budget's best preset against the best anchor, and the presets' time limits."""
    out = []
    pre = {r["method"].split(":", 1)[1]: r for r in rows if r["method"].startswith("preset:")}
    for b in BUDGETS:
        anc = best_under(ANCHOR_POINTS, b)
        fit = [(n, r) for n, r in pre.items() if r["bits_per_weight"] <= b]
        if not fit or anc is None:
            out.append(f"- best preset at <= {b} bits/weight beats the best anchor: not measured")
            continue
        n, r = min(fit, key=lambda x: x[1]["ppl"])
        out.append(
            f"- best preset at <= {b} bits/weight ({n}, {r['bits_per_weight']:.3f}: "
            f"{fmt_ppl(r['ppl'])}) beats the best anchor ({anc[0]}, {anc[1]}: "
            f"{fmt_ppl(anc[2])}): ratio anchor/preset {anc[2] / r['ppl']:,.2f}x: "
            f"{mark(r['ppl'] < anc[2])}"
        )
    if "best-4bit" in pre:
        r = pre["best-4bit"]
        out.append(
            f"- `best-4bit` under 10 minutes (the whole `lmpress quantize` command): "
            f"{r['process_wall_s']:.0f} s: {mark(r['process_wall_s'] < 600)}"
        )
    if "fast" in pre:
        r = pre["fast"]
        out.append(
            f"- `fast` under 30 s (the whole `lmpress quantize` command, model load and save "
            f"included): {r['process_wall_s']:.1f} s: {mark(r['process_wall_s'] < 30)}"
        )
    return out
