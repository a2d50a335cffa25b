"""BENCHMARKS.md's runtime section: GEMV kernels, decode speed, exports.

Renders ``benchmarks/kernels*.json`` (``scripts/bench_kernels.py``; one file per
machine: the kernels' standing against torch depends on the CPU) and
``benchmarks/runtime.json`` (``scripts/bench_runtime.py``) with the bars they answer.
"""

from typing import Any

from benchmark_cells import mark
from kernel_runs import speedup


def _us(s: float) -> str:
    """Seconds as microseconds, one decimal below 100 us."""
    return f"{s * 1e6:,.0f}" if s >= 1e-4 else f"{s * 1e6:.1f}"


def _machine(k: dict[str, Any]) -> str:
    """The CPU a run names (runs recorded before the CPU label: the platform)."""
    return k.get("cpu", k["machine"])


def is_current(k: dict[str, Any], source: str | None) -> bool:
    """Whether GEMV run ``k`` measured the kernel sources whose digest is ``source``
    (``None``: no digest to compare with, every run counts as current)."""
    return source is None or k.get("kernel_source") == source


def kernel_lines(k: dict[str, Any], current: bool = True) -> list[str]:
    """One GEMV run's tables, by regime and batch; ``current``: whether it measured
    today's kernel sources (else it is marked as a record of earlier ones)."""
    rows = k["rows"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    stale = (
        []
        if current
        else [
            f"*Measured with earlier kernel sources (digest "
            f"{k.get('kernel_source', 'not recorded')}); no machine of this kind was "
            "available to re-measure the current ones. Kept for the record; its bars are "
            "not those of the current code.*",
            "",
        ]
    )
    bind = k.get("omp_proc_bind")
    bound = f" bound to cores (OMP_PROC_BIND={bind})" if bind else ""
    out = [
        f"### GEMV from packed codes: {_machine(k)}" + ("" if current else " (earlier kernel)"),
        "",
        *stale,
        f"`{k['command']}` ({k['date']}; {_machine(k)}, {k['threads']} threads{bound}, "
        f"torch {k['torch']}, kernel "
        f"build {k['kernel_build']}). Median of {k['repeats']} timings after warm-up"
        + (
            f" in each of {k['processes']} processes run one after another, pooled (a "
            "process can land in a slower state of this VM for its whole run)"
            if k.get("processes", 1) > 1
            else ""
        )
        + ", the methods taking turns within each repetition; ratios are medians of the "
        "per-repetition ratios where the run recorded its repetitions; "
        f"`cold`: calls cycle through >= 1 GiB of weight copies so each reads from memory "
        f"(as decoding a model does), `warm`: one weight, possibly cache-resident. GB/s = "
        f"stored bytes of the weight / time; the machine's large copy (read + write) "
        f"measured in the same run: **{k['memory_copy_gbs']:.1f} GB/s**. lmpress schemes "
        "are asymmetric with groups of 128 (a partial last group where 128 does not divide "
        "K); torch int4 uses groups of 128 (64 where 128 does not divide K) and bf16 "
        "activations, as its CPU kernel requires.",
        "",
    ]
    for regime in dict.fromkeys(r["regime"] for r in rows):
        for m in dict.fromkeys(r["m"] for r in rows if r["regime"] == regime):
            sel = [r for r in rows if r["regime"] == regime and r["m"] == m]
            shapes = list(dict.fromkeys(tuple(r["shape"]) for r in sel))
            out += [
                f"**{regime}, batch {m}** (microseconds per call, GB/s in brackets)",
                "",
                "| N x K | " + " | ".join(methods) + " | w4 vs float32 | w4 vs torch int4 |",
                "|---|" + "---|" * (len(methods) + 2),
            ]
            for sh in shapes:
                by = {r["method"]: r for r in sel if tuple(r["shape"]) == sh}
                cells = [
                    f"{_us(by[mm]['seconds'])} ({by[mm]['gbs']:.1f})" if mm in by else "-"
                    for mm in methods
                ]
                w4 = by.get("lmpress w4g128")
                f32, i4 = by.get("float32 torch"), by.get("torch int4")
                r1 = f"{speedup(f32, w4):.2f}x" if w4 and f32 else "-"
                r2 = f"{speedup(i4, w4):.2f}x" if w4 and i4 else "-"
                out.append(f"| {sh[0]} x {sh[1]} | " + " | ".join(cells) + f" | {r1} | {r2} |")
            out.append("")
    return out


def kernel_bars(k: dict[str, Any], on: str = "") -> list[str]:
    """The GEMV bars of one kernel run; ``on`` names its machine where several are shown."""
    out = []
    rows = [r for r in k["rows"] if r["m"] == 1]
    where = f", {on}" if on else ""
    for regime in dict.fromkeys(r["regime"] for r in rows):
        sel = [r for r in rows if r["regime"] == regime]
        by = {(tuple(r["shape"]), r["method"]): r for r in sel}
        key = ((4096, 4096), "lmpress w4g128")
        if key in by and ((4096, 4096), "float32 torch") in by:
            ratio = speedup(by[((4096, 4096), "float32 torch")], by[key])
            out.append(
                f"- 4-bit GEMV at batch 1 at least 4x faster than float32 torch on 4096 x 4096 "
                f"({regime}{where}): {ratio:.2f}x: {mark(ratio >= 4)}"
            )
        shapes = list(dict.fromkeys(tuple(r["shape"]) for r in sel))
        ratios = [
            (speedup(by[(sh, "torch int4")], by[(sh, "lmpress w4g128")]), sh)
            for sh in shapes
            if (sh, "torch int4") in by and (sh, "lmpress w4g128") in by
        ]
        if ratios:
            r, sh = min(ratios)
            out.append(
                f"- 4-bit GEMV faster than torch's int4 kernel at every shape ({regime}{where}): "
                f"slowest ratio {r:.2f}x at {sh[0]} x {sh[1]}: {mark(r > 1)}"
            )
    return out


def _llamacpp_path(r: dict[str, Any]) -> str:
    """Which llama.cpp path an agreement row ran on (rows before the float path: cpu)."""
    return r.get("llamacpp_path", "cpu")


def _heads(decode: list[dict[str, Any]]) -> str:
    """What the lmpress rows ran the output head from (rows before the field: float32)."""
    kinds = {r.get("head", "float32") for r in decode if r.get("engine") == "lmpress"}
    return " / ".join(sorted(kinds)) or "float32"


def runtime_lines(rt: dict[str, Any]) -> list[str]:
    """Decode speed, llama.cpp agreement of the GGUF exports and compressed-tensors
    exactness of one ``runtime.json``."""
    p = rt["protocol"]
    out = [
        "### Decoding SmolLM2-135M",
        "",
        f"`{rt['command']}` ({rt['date']}; {rt.get('cpu', 'CPU not recorded')}, "
        f"{rt['threads']} threads for every engine, "
        f"llama-cpp-python {rt.get('llama_cpp_python', 'not installed')}). Greedy, prompt: "
        f"{p['prompt']}, {p['new_tokens']} new tokens; tokens/s = 1 / median per-token time "
        f"after {p['warmup_tokens']} warm-up tokens, median of {p['reps']} runs. lmpress "
        "checkpoints are RTN (speed does not depend on the method); the llama.cpp rows run "
        "lmpress's own GGUF exports (w4g32s -> Q4_0, w8s -> Q8_0, token embedding / "
        f"output head Q8_0); lmpress's lean decoder runs the tied output head from "
        f"{_heads(rt.get('decode', []))}.",
        "",
    ]
    dec = rt.get("decode", [])
    if dec:
        f32 = next((r for r in dec if r["label"] == "float32 transformers"), None)
        q40 = next((r for r in dec if r["label"] == "llama.cpp Q4_0"), None)
        out += [
            "| engine | tokens/s | x float32 transformers | x llama.cpp Q4_0 |",
            "|---|---|---|---|",
        ]
        for r in dec:
            a = f"{r['tokens_per_s'] / f32['tokens_per_s']:.2f}" if f32 else "-"
            b = f"{r['tokens_per_s'] / q40['tokens_per_s']:.2f}" if q40 else "-"
            out.append(f"| {r['label']} | {r['tokens_per_s']:.1f} | {a} | {b} |")
        out.append("")
    agr = rt.get("gguf_agreement", [])
    if agr:
        out += [
            "### GGUF exports run in llama.cpp",
            "",
            f"Teacher-forced next token over {p['agreement_window']}: llama.cpp on the "
            "exported GGUF against lmpress's own model (first window, and the mean over all). "
            "Two llama.cpp paths: `cpu`, its CPU backend, which rounds the activations of "
            "every quantized matmul to 8 bits (Q8_0/Q8_1) before its integer dot products "
            "(micro-batches of 16 tokens); `float`, the same build's BLAS backend (OpenBLAS), "
            "which takes the 512-token batch, dequantizes each weight to float32 and "
            "multiplies float activations (weight repacking off, so that every weight stays "
            "readable by it). The control rows separate the export from llama.cpp's "
            "arithmetic: the float model exported as F32, and exports whose weights are "
            "exactly lmpress's (w8s -> Q8_0, w4g32s -> Q4_0, verified tensor by tensor). "
            "The default export stores the token embedding / tied output head as Q8_0, "
            "which lmpress keeps in float; the `f16 embedding` rows keep it in fp16.",
            "",
            "| export | ggml types | modules on their exact grid | max weight error | "
            "llama.cpp path | top-1 agreement (window 1) | mean over windows | "
            "max logit difference |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in agr:
            types = ", ".join(f"{k} x{v}" for k, v in r["gguf_types"].items()) or "F32 only"
            out.append(
                f"| {r.get('label', r['scheme'])} | {types} | {r['exact_grid_modules']} | "
                f"{r['max_abs_error_quantized']:.2g} | {_llamacpp_path(r)} | "
                f"{r['top1_agreement']:.4f} | "
                f"{r.get('top1_agreement_mean', r['top1_agreement']):.4f} | "
                f"{r['max_logit_diff']:.3f} |"
            )
        out.append("")
    ct = rt.get("compressed_tensors", [])
    if ct:
        out += [
            "### compressed-tensors exports",
            "",
            "Decompressed by the `compressed-tensors` package's own dequantizer; `native`: "
            "scales in lmpress's fp16 (decompressed in fp16, compared with lmpress's weights "
            "in fp16), `float32`: compared with lmpress's float32 weights.",
            "",
            "| scheme | scale dtype | modules bit-exact |",
            "|---|---|---|",
        ]
        out += [
            f"| {r['scheme']} | {r['scale_dtype']} | {r['bit_exact']} / {r['modules']} |"
            for r in ct
        ]
        out.append("")
    return out


def runtime_bars(rt: dict[str, Any]) -> list[str]:
    """The decode-speed and export bars of one ``runtime.json``."""
    out = []
    dec = {r["label"]: r for r in rt.get("decode", [])}
    w4, f32, q40 = (
        dec.get("lmpress w4g128"),
        dec.get("float32 transformers"),
        dec.get("llama.cpp Q4_0"),
    )
    if w4 and f32:
        r = w4["tokens_per_s"] / f32["tokens_per_s"]
        out.append(
            f"- w4g128 decode at least 1.5x float32 transformers: {r:.2f}x: {mark(r >= 1.5)}"
        )
    if w4 and q40:
        r = w4["tokens_per_s"] / q40["tokens_per_s"]
        out.append(
            "- w4g128 decode at least 0.5x llama.cpp Q4_0 on the same threads: "
            f"{r:.2f}x: {mark(r >= 0.5)}"
        )
    agr = rt.get("gguf_agreement", [])

    def control_note(a: dict) -> str:
        c = next(
            (
                c
                for c in agr
                if c["scheme"] == a["scheme"] + "s" and _llamacpp_path(c) == _llamacpp_path(a)
            ),
            None,
        )
        return (
            f" (its exact-grid control {c['scheme']}: {c['top1_agreement'] * 100:.2f}%)"
            if c
            else ""
        )

    # The verdict is on the float path where it was measured: 8-bit activations keep
    # even an exact-grid export below the bar on the CPU path, which is shown beside it.
    judged = "float" if any(_llamacpp_path(r) == "float" for r in agr) else "cpu"
    for a in agr:
        if a["scheme"] not in ("w8", "w4g32") or a.get("embed_type", "q8_0") != "q8_0":
            continue  # the bar is about the default exports of w8 and w4g32
        if _llamacpp_path(a) != judged:
            continue
        out.append(
            f"- exported GGUF of {a['scheme']} in llama.cpp ({judged} path) agrees on the next "
            f"token at >= 98% of {a['positions']} positions: "
            f"{a['top1_agreement'] * 100:.2f}%{control_note(a)}: "
            f"{mark(a['top1_agreement'] >= 0.98)}"
        )
        for c in agr:
            if _llamacpp_path(c) != judged and c["label"] == a["label"]:
                out.append(
                    f"  - the same export on llama.cpp's CPU path (8-bit activations in every "
                    f"quantized matmul): {c['top1_agreement'] * 100:.2f}%{control_note(c)}"
                )
    for c in rt.get("compressed_tensors", []):
        out.append(
            f"- compressed-tensors {c['scheme']} ({c['scale_dtype']} scales) decompresses bit "
            f"for bit: {c['bit_exact']}/{c['modules']} modules: "
            f"{mark(c['bit_exact'] == c['modules'])}"
        )
    return out


def render_runtime(kernels: list[dict], runtime: dict | None, source: str | None = None) -> str:
    """The whole issue-5 section (empty when neither benchmark has run); ``kernels`` holds
    one GEMV run per machine, the newest first. ``source``: the digest of the current
    kernel sources; runs of other sources are shown, marked, and their bars listed apart
    (a CPU this project no longer gets cannot be re-measured, but its figures stay)."""
    if not kernels and not runtime:
        return ""
    lines = ["", "## Runtime: kernels, decoding, exports (issue 5)", ""]
    current = [k for k in kernels if is_current(k, source)]
    earlier = [k for k in kernels if not is_current(k, source)]
    for k in current + earlier:
        lines += kernel_lines(k, is_current(k, source))
    if runtime:
        lines += runtime_lines(runtime)
    bars = [b for k in current for b in kernel_bars(k, _machine(k) if len(kernels) > 1 else "")]
    bars += runtime_bars(runtime) if runtime else []
    if bars:
        lines += ["### Bars (issue 5)", "", *bars]
    old = [b for k in earlier for b in kernel_bars(k, _machine(k))]
    if old:
        lines += [
            "",
            "Earlier kernel sources, for the record (not bars of the current code):",
            "",
            *old,
        ]
    return "\n".join(lines) + "\n"
