#!/usr/bin/env python3
"""Runtime benchmark (issue 5): decode speed, llama.cpp agreement, export exactness.

On the default model (SmolLM2-135M), in one run, on the same threads:

- decode tokens/s, greedy, from a WikiText-2 prompt: float32 transformers (the
  model's own forward with its KV cache), lmpress w4g128 / w3g128 / w2g128 and
  w4g32s through the lean decoder on the C kernels, and llama.cpp (llama-cpp-python)
  on lmpress's GGUF exports at Q4_0 (from w4g32s) and Q8_0 (from w8s). Medians over
  repetitions of the per-token time after warm-up tokens;
- llama.cpp's teacher-forced next token on a 512-token WikiText-2 window against
  lmpress's own model, for exports of w8 and w4g32 (asymmetric, as lmpress makes them);
- compressed-tensors: modules whose decompressed weights equal lmpress's bit for bit.

Quantized checkpoints are made with RTN (decode speed does not depend on the
method). Results: ``benchmarks/runtime.json``; ``scripts/benchmark.py`` renders them.

    python scripts/bench_runtime.py --json benchmarks/runtime.json
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import lmpress  # noqa: E402
from lmpress.eval.perplexity import eval_ids  # noqa: E402
from lmpress.eval.speed import median_rate  # noqa: E402
from lmpress.models.load import load_model  # noqa: E402
from lmpress.report.machine import cpu_name  # noqa: E402
from lmpress.runtime import Decoder, generate_ids  # noqa: E402

MODEL = "smollm2-135m"
DECODE_SCHEMES = ["w4g128", "w3g128", "w2g128", "w4g32s", "w8s"]


def checkpoint(work: Path, scheme: str) -> Path:
    out = work / f"rtn-{scheme}"
    if not (out / "config.json").is_file():
        subprocess.run(
            [sys.executable, "-m", "lmpress.cli", "quantize", MODEL, "--method", "rtn"]
            + ["--scheme", scheme, "-o", str(out), "--overwrite", "--quiet"],
            check=True,
        )
    return out


def gguf_export(work: Path, scheme: str) -> tuple[Path, dict]:
    ck = checkpoint(work, scheme)
    out = work / f"rtn-{scheme}.gguf"
    summary = lmpress.export_model(ck, "gguf", out, overwrite=True, progress=False)
    return out, summary


def bench_decode(
    work: Path, prompt: list[int], new: int, reps: int, warmup: int, threads: int, llamacpp: bool
) -> list[dict]:
    from lmpress.eval.llamacpp import llamacpp_decode_speed

    rows = []
    base = load_model(MODEL).model
    cases = [("float32 transformers", base, "transformers", None)]
    for s in DECODE_SCHEMES:
        cases.append((f"lmpress {s}", None, "lmpress", s))
    cases.append(("lmpress w4g128 (transformers forward)", None, "transformers", "w4g128"))
    for label, model, engine, scheme in cases:
        if model is None:
            model = lmpress.load(checkpoint(work, scheme))
        rates, ids = [], None
        for _ in range(reps):
            out, _pre, _dec, used, times = generate_ids(model, prompt, new, engine=engine)
            rates.append(median_rate(times[:-1], warmup))
            ids = out
        head = Decoder(model, max_len=8).head_kind if used == "lmpress" else None
        rows.append(
            {
                "label": label,
                "engine": used,
                "scheme": scheme or "float32",
                **({"head": head} if head else {}),
                "tokens_per_s": statistics.median(rates),
                "all_tokens_per_s": rates,
                "first_ids": ids[:16],
            }
        )
        print(f"[runtime] {label}: {rows[-1]['tokens_per_s']:.1f} tok/s", flush=True)
        del model
    for scheme, label in (("w4g32s", "llama.cpp Q4_0"), ("w8s", "llama.cpp Q8_0"))[
        : 2 if llamacpp else 0
    ]:
        path, summary = gguf_export(work, scheme)
        rates, ids = [], None
        for _ in range(reps):
            r = llamacpp_decode_speed(path, prompt, new, threads)
            rates.append(median_rate(r["per_token_s"], warmup))
            ids = r["ids"]
        rows.append(
            {
                "label": label,
                "engine": "llama.cpp",
                "scheme": scheme,
                "gguf_types": summary["tensor_types"],
                "tokens_per_s": statistics.median(rates),
                "all_tokens_per_s": rates,
                "first_ids": ids[:16],
            }
        )
        print(f"[runtime] {label}: {rows[-1]['tokens_per_s']:.1f} tok/s", flush=True)
    return rows


# (label, lmpress scheme or None for the float model, GGUF embedding type)
AGREE_CASES = [
    ("float32 (control: F32 GGUF)", None, "f32"),
    ("w8s (exact Q8_0)", "w8s", "q8_0"),
    ("w4g32s (exact Q4_0)", "w4g32s", "q8_0"),
    ("w8", "w8", "q8_0"),
    ("w8, f16 embedding", "w8", "f16"),
    ("w4g32", "w4g32", "q8_0"),
    ("w4g32, f16 embedding", "w4g32", "f16"),
]


def bench_agreement(work: Path, windows: list[list[int]], threads: int) -> list[dict]:
    """Teacher-forced top-1 of llama.cpp on lmpress's GGUF against lmpress's model.

    Each export runs on llama.cpp's CPU path (8-bit activations in every quantized
    matmul) and, where llama-cpp-python has ggml's BLAS backend, on its float path
    (dequantized weights, float32 activations), which isolates the exported weights.
    """
    from lmpress.eval.llamacpp import llamacpp_has_blas, llamacpp_logits

    paths = ["cpu", "float"] if llamacpp_has_blas() else ["cpu"]
    rows = []
    for label, scheme, embed in AGREE_CASES:
        src = MODEL if scheme is None else checkpoint(work, scheme)
        path = work / f"agree-{scheme or 'float'}-{embed}.gguf"
        summary = lmpress.export_model(
            src, "gguf", path, overwrite=True, progress=False, embed_type=embed
        )
        model = load_model(str(src)).model
        with torch.no_grad():
            ours = [model(torch.tensor([w])).logits[0] for w in windows]
        del model
        for arith in paths:
            per_window = []
            max_diff = 0.0
            for w, mine in zip(windows, ours, strict=True):
                theirs = llamacpp_logits(path, w, threads, float_path=arith == "float")
                per_window.append((mine.argmax(-1) == theirs.argmax(-1)).float().mean().item())
                max_diff = max(max_diff, (mine - theirs).abs().max().item())
            rows.append(
                {
                    "label": label,
                    "scheme": scheme or "float32",
                    "embed_type": embed,
                    "llamacpp_path": arith,
                    "gguf_types": summary["tensor_types"],
                    "exact_grid_modules": summary["exact_grid_modules"],
                    "max_abs_error_quantized": summary["max_abs_error_quantized"],
                    "positions": len(windows[0]),
                    "top1_agreement": per_window[0],
                    "top1_agreement_windows": per_window,
                    "top1_agreement_mean": statistics.mean(per_window),
                    "max_logit_diff": max_diff,
                }
            )
            print(f"[runtime] gguf {label} ({arith}): agreement {per_window}", flush=True)
    return rows


def bench_ct(work: Path) -> list[dict]:
    from compressed_tensors.entrypoints.convert import CompressedTensorsDequantizer
    from safetensors.torch import load_file

    from lmpress.nn.qlinear import QLinear

    rows = []
    for scheme in ("w4g128", "w8"):
        ck = checkpoint(work, scheme)
        model = lmpress.load(ck)
        for sdt in ("native", "float32"):
            out = work / f"ct-{scheme}-{sdt}"
            lmpress.export_model(
                ck, "compressed-tensors", out, overwrite=True, progress=False, scale_dtype=sdt
            )
            dense = CompressedTensorsDequantizer(out, dtype=torch.float32).process(
                load_file(str(out / "model.safetensors"))
            )
            n = eq = 0
            for name, m in model.named_modules():
                if isinstance(m, QLinear):
                    w = m.packed().dequantize()
                    want = w if sdt == "float32" else w.to(m.scheme.torch_scale_dtype).float()
                    n += 1
                    eq += torch.equal(dense[name + ".weight"], want)
            rows.append({"scheme": scheme, "scale_dtype": sdt, "modules": n, "bit_exact": eq})
            print(f"[runtime] compressed-tensors {scheme} {sdt}: {eq}/{n} bit-exact", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "runtime.json"))
    ap.add_argument("--workdir", default=str(REPO / "bench_out" / "runtime"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--agree-windows", type=int, default=4, help="512-token windows")
    ap.add_argument("--skip", default="", help="comma list of: decode, agreement, ct")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    tok = load_model(MODEL).tokenizer
    ids = eval_ids(tok, "wikitext2")
    prompt = ids[: a.prompt_tokens].tolist()
    windows = [ids[i * 512 : (i + 1) * 512].tolist() for i in range(a.agree_windows)]
    skip = set(a.skip.split(","))
    out = {
        "threads": a.threads,
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "command": "python scripts/bench_runtime.py " + " ".join(sys.argv[1:]),
        "protocol": {
            "prompt": f"first {a.prompt_tokens} tokens of WikiText-2 test",
            "new_tokens": a.new_tokens,
            "reps": a.reps,
            "warmup_tokens": a.warmup,
            "agreement_window": "the first 512 tokens of WikiText-2 test (rows joined by blank "
            f"lines; also the next {a.agree_windows - 1} windows of 512)",
        },
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    try:
        import llama_cpp

        from lmpress.eval.llamacpp import llamacpp_has_blas

        out["llama_cpp_python"] = llama_cpp.__version__
        out["llama_cpp_blas"] = llamacpp_has_blas()
    except ImportError:
        skip |= {"decode-llamacpp", "agreement"}
    if "decode" not in skip:
        out["decode"] = bench_decode(
            work, prompt, a.new_tokens, a.reps, a.warmup, a.threads, "decode-llamacpp" not in skip
        )
    if "agreement" not in skip:
        out["gguf_agreement"] = bench_agreement(work, windows, a.threads)
    if "ct" not in skip:
        out["compressed_tensors"] = bench_ct(work)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=1))
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
