"""BENCHMARKS.md's activation section (issue 24): weights and activations (and the KV
cache) quantized, with and without smoothing and rotations."""

from benchmark_cells import fmt_ppl, fmt_ratio
from benchmark_tables import command_lines

# (method, scheme[/kv]) in the order they are measured: the bars' cells first. Integer
# weights are symmetric per output channel, as W8A8 / W4A4 runtimes store them.
ACT_CELLS = [
    ("rtn", "w8sa8"),
    ("rtn", "w4sa4/kv4"),
    ("hadamard+gptq", "w4sa4/kv4h"),
    ("smoothquant+rtn", "w8sa8"),
    ("hadamard+rtn", "w8sa8"),
    ("rtn", "w6sa6"),
    ("smoothquant+rtn", "w6sa6"),
    ("hadamard+rtn", "w4sa4/kv4h"),
    ("gptq", "w8sa8"),
    ("rtn", "w4sa8"),
    ("hadamard+gptq", "w4sa8"),
    ("rtn", "w4sa4"),
    ("hadamard+rtn", "w4sa4"),
    ("hadamard+gptq", "w4sa4"),
    ("gptq", "w4sa4"),
    ("gptq", "w4sa8"),
    ("hadamard+rtn", "w6sa6"),
    ("gptq", "w6sa6"),
    ("hadamard+gptq", "w6sa6"),
    ("rtn", "w8sa8/kv8"),
    ("rtn", "w8sa8/kv4"),
    ("rtn", "fp8a8"),
    ("hadamard+gptq", "nvfp4a4"),
    ("spinquant+rtn", "w4sa4/kv4h"),
    ("spinquant+gptq", "w4sa4/kv4h"),
]
ACT_METHODS = list(dict.fromkeys(m for m, _ in ACT_CELLS))
# published results, their models and protocols (WikiText-2, 2048 tokens): stated beside
# ours, not comparable with them
PUBLISHED = [
    "QuaRot (Ashkboos et al. 2024, table 1), W4A4 KV4 with GPTQ weights: Llama-2-7B "
    "5.47 -> 6.10, 13B 4.88 -> 5.40, 70B 3.32 -> 3.79 (FP16 -> QuaRot)",
    "SmoothQuant (Xiao et al. 2023): W8A8 within a few hundredths of FP16 perplexity "
    "on OPT and Llama models",
]

HEADER = [
    "| scheme | kv cache | method | bits/weight | perplexity | x reference | KL mean | top-1 "
    "| quantize s |",
    "|---|---|---|---|---|---|---|---|---|",
]


def split_cell(scheme: str) -> tuple[str, str | None]:
    """``("w4sa4", "kv4")`` for ``"w4sa4/kv4"``; no kv part: ``(scheme, None)``."""
    w, _, kv = scheme.partition("/")
    return w, kv or None


def activations_section(ref: dict, by: dict, vllm: dict | None = None) -> list[str]:
    """The section's markdown lines from the recorded cells ``by[(method, scheme)]`` and
    vLLM's agreement run (``benchmarks/vllm_agreement.json``, if made)."""
    if not any(c in by for c in ACT_CELLS):
        return []
    lines = [
        "",
        "## Quantized activations, KV cache, smoothing and rotations (issue 24)",
        "",
        "Same protocol. `wNsaM`: N-bit symmetric per-output-channel integer weights, M-bit "
        "symmetric integer activations with one scale per token computed at run time "
        "(4-bit ranges clipped to 0.9, as QuaRot), simulated exactly (the input quantized, "
        "the product of the quantized input and the dequantized weight). `kv4`/`kv8`: keys "
        "and values after the rotary embedding, asymmetric integers per token and head; "
        "`kv4h`: keys (and queries) rotated by a 64-point Hadamard first. `hadamard`: "
        "QuaRot-style randomized Hadamard rotation of the residual stream (norms fused, "
        "folded into the weights), value heads rotated (folded), `down_proj`'s input "
        "rotated online, the tied head's final norm applied online. `smoothquant`: "
        "SmoothQuant's migration, strength searched per input group; `spinquant`: the "
        "residual rotation learned by Cayley SGD on the quantized model's loss (50 steps of "
        "4 x 256 calibration tokens, from the Hadamard one). Bits per weight count the "
        "stored weights as elsewhere (activations are not stored; a learned rotation of a "
        "tied head is stored, one 576 x 576 float32 matrix). Quantize seconds were measured "
        "while other jobs shared the two cores: upper bounds.",
        "",
        *HEADER,
        f"| float32 | - | reference | 32 | {ref['ppl']:.2f} | 1.00 | 0 | 1.000 | - |",
    ]
    for m, s in ACT_CELLS:
        r = by.get((m, s))
        if r is None:
            continue
        w, kv = split_cell(s)
        lines.append(
            f"| {w} | {kv or 'float'} | {m} | {r['bits_per_weight']:.3f} | {fmt_ppl(r['ppl'])} "
            f"| {fmt_ratio(r['ppl'] / ref['ppl'])} | {r['kl_mean']:.4f} | "
            f"{r['top1_agreement']:.3f} | {r['quantize_s']:.1f} |"
        )
    missing = [f"{m} {s}" for m, s in ACT_CELLS if (m, s) not in by]
    if missing:
        lines += ["", f"Not measured yet: {', '.join(missing)}."]
    lines += ["", "Published results (their models and protocols, for scale):", ""]
    lines += [f"- {p}" for p in PUBLISHED]
    lines += ["", "Commands that made each row:", ""]
    schemes = list(dict.fromkeys(s for _, s in ACT_CELLS))
    lines += command_lines(by, schemes, ACT_METHODS)
    lines += ["", "### Bars", ""]
    lines += activation_bars(ref, by, vllm)
    return lines


def _verdict(ok: bool) -> str:
    return "**pass**" if ok else "**FAIL**"


def activation_bars(ref: dict, by: dict, vllm: dict | None = None) -> list[str]:
    """Issue 24's bars, each with the figures that decide it."""
    out = []
    w8 = {m: by[(m, s)] for m, s in ACT_CELLS if s == "w8sa8" and (m, s) in by}
    if w8:
        m, best = min(w8.items(), key=lambda t: t[1]["ppl"])
        ratio = best["ppl"] / ref["ppl"]
        others = "; ".join(
            f"{k} {fmt_ppl(r['ppl'])} ({100 * (r['ppl'] / ref['ppl'] - 1):+.2f}%)"
            for k, r in w8.items()
            if k != m
        )
        out.append(
            f"- W8A8 (dynamic per token), best recipe {m} {fmt_ppl(best['ppl'])} against float "
            f"{fmt_ppl(ref['ppl'])}: {100 * (ratio - 1):+.2f}% (bar: within 2%): "
            f"{_verdict(ratio <= 1.02)}" + (f"; also measured: {others}" if others else "")
        )
    plain = by.get(("rtn", "w4sa4/kv4"))
    rotated = [
        (m, by[(m, "w4sa4/kv4h")])
        for m in ("hadamard+gptq", "hadamard+rtn")
        if (m, "w4sa4/kv4h") in by
    ]
    if plain and rotated:
        m, best = min(rotated, key=lambda t: t[1]["ppl"])
        gain = plain["ppl"] / best["ppl"]
        out.append(
            f"- W4A4 KV4: plain rtn {fmt_ppl(plain['ppl'])}, best rotation recipe {m} "
            f"{fmt_ppl(best['ppl'])}: {gain:.1f}x better (bar: at least 5x): "
            f"{_verdict(gain >= 5)}"
        )
    learned = {m: by[(m, s)] for m, s in ACT_CELLS if m.startswith("spinquant") and (m, s) in by}
    pairs = [
        (m, by[(m.replace("spinquant", "hadamard"), s)], by[(m, s)], s)
        for m, s in ACT_CELLS
        if m.startswith("spinquant")
        and (m, s) in by
        and (m.replace("spinquant", "hadamard"), s) in by
    ]
    for m, had, spin, s in pairs:
        out.append(
            f"- Learned rotation against the random Hadamard one at {s}: {m} "
            f"{fmt_ppl(spin['ppl'])}, {m.replace('spinquant', 'hadamard')} "
            f"{fmt_ppl(had['ppl'])} (bar: lower): {_verdict(spin['ppl'] < had['ppl'])}"
        )
    if not learned:
        out.append("- A learned rotation beats the random Hadamard one: **not measured yet**")
    sq, no = by.get(("smoothquant+rtn", "w6sa6")), by.get(("rtn", "w6sa6"))
    if sq and no:
        out.append(
            f"- SmoothQuant at W6A6: {fmt_ppl(sq['ppl'])} against {fmt_ppl(no['ppl'])} without "
            f"smoothing (bar: lower): {_verdict(sq['ppl'] < no['ppl'])}"
        )
    if vllm:
        out.append(
            f"- vLLM (CPU build, {vllm['vllm_dtype']}) runs the {vllm['scheme']} "
            f"{vllm['method']} export and ranks lmpress's next token first at "
            f"{100 * vllm['agreement']:.1f}% of {vllm['positions']} teacher-forced WikiText-2 "
            f"positions (bar: 95%): {_verdict(vllm['agreement'] >= 0.95)} "
            f"(`{vllm['command']}`, {vllm['cpu']}, {vllm['date']})"
        )
        if "agreement_with_float_inputs" in vllm:
            out.append(
                f"  - for scale: vLLM against the same weights with float inputs "
                f"{100 * vllm['agreement_with_float_inputs']:.1f}%; lmpress's int8-input "
                f"model against its own float-input one "
                f"{100 * vllm['lmpress_inputs_vs_float_inputs']:.1f}%: on this model int8 "
                "inputs move about 8% of the top-1 choices, so two implementations whose "
                "rounding differs anywhere disagree about as often; where vLLM's path "
                "differs from lmpress's simulation is not found yet"
            )
    else:
        out.append(
            "- vLLM agrees with lmpress on 95% of next tokens of the W8A8 export: **not "
            "measured yet** (`python scripts/vllm_agreement.py`)"
        )
    return out
