"""Issue 26's lossless figures: DFloat11-style coding of SmolLM2-135M's bf16 weights,
entropy-coded quantized codes, and zstd on the same bytes.

    python scripts/benchmark_lossless.py [--json benchmarks/lossless.json]
        [--checkpoint LMPRESS_DIR ...]

The bf16 model is the reference float32 weights rounded to bf16 (every distinct
tensor once: the tied head is the embedding). Codes: RTN at w4g128, w3g64 and w2g64
on the same weights (one histogram per module), and the codes of any lmpress
checkpoints given. bf16 encode and decode times are medians of three, code and zstd
times one run each, on this machine, one thread.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lmpress.formats.scheme import parse_scheme  # noqa: E402
from lmpress.lossless import compress_bf16, decode, decompress_bf16, encode  # noqa: E402
from lmpress.methods.rtn import rtn  # noqa: E402
from lmpress.models.arch import linear_weight  # noqa: E402
from lmpress.models.load import load_model  # noqa: E402
from lmpress.pipeline import quantizable_linears  # noqa: E402
from lmpress.report.machine import cpu_name  # noqa: E402

MODEL = "smollm2-135m"
CODE_SCHEMES = ["w4g128", "w3g64", "w2g64"]


def timed(fn, repeats: int = 3) -> tuple[float, object]:  # noqa: ANN001
    out, times = None, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def zstd_bytes(data: bytes, level: int) -> tuple[int, float]:
    import zstandard

    sec, out = timed(lambda: zstandard.ZstdCompressor(level=level).compress(data), 1)
    return len(out), sec


def unique_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    seen, out = set(), {}
    for n, p in model.state_dict().items():
        if p.data_ptr() in seen or not p.is_floating_point():
            continue
        seen.add(p.data_ptr())
        out[n] = p
    return out


def bf16_figures(model: torch.nn.Module) -> dict:
    tensors = {n: t.to(torch.bfloat16) for n, t in unique_tensors(model).items()}
    raw = sum(t.numel() * 2 for t in tensors.values())
    enc_s, coded = timed(lambda: {n: compress_bf16(t) for n, t in tensors.items()})
    dec_s, back = timed(lambda: {n: decompress_bf16(c) for n, c in coded.items()})
    exact = all(
        torch.equal(back[n].view(torch.int16), t.view(torch.int16)) for n, t in tensors.items()
    )
    stored = sum(c.nbytes() for c in coded.values())
    blob = b"".join(t.view(torch.int16).numpy().tobytes() for t in tensors.values())
    z3, z3s = zstd_bytes(blob, 3)
    z19, z19s = zstd_bytes(blob, 19)
    return {
        "tensors": len(tensors),
        "values": sum(t.numel() for t in tensors.values()),
        "bf16_bytes": raw,
        "coded_bytes": stored,
        "ratio": stored / raw,
        "bits_per_value": stored * 8 / sum(t.numel() for t in tensors.values()),
        "bit_exact": exact,
        "encode_s": enc_s,
        "decode_s": dec_s,
        "decode_gb_s": raw / dec_s / 1e9,
        "zstd3_ratio": z3 / raw,
        "zstd3_s": z3s,
        "zstd19_ratio": z19 / raw,
        "zstd19_s": z19s,
    }


def code_figures(label: str, packed: dict) -> dict:
    """Entropy-coded codes of ``packed`` (name -> PackedWeight), one histogram each."""
    bits = next(iter(packed.values())).scheme.bits
    n = sum(p.out_features * p.in_features for p in packed.values())
    stored_codes = sum(
        p.tensors["qweight"].numel() * p.tensors["qweight"].element_size() for p in packed.values()
    )
    codes = {k: p.codes().numpy() for k, p in packed.items()}
    enc_s, coded = timed(lambda: {k: encode(c, 1 << bits) for k, c in codes.items()}, 1)
    exact = all((decode(coded[k]) == c.reshape(-1)).all() for k, c in codes.items())
    coded_bytes = sum(c.nbytes() for c in coded.values())
    total_bits = sum(p.stored_bits() for p in packed.values())
    blob = b"".join(p.tensors["qweight"].numpy().tobytes() for p in packed.values())
    z19, _ = zstd_bytes(blob, 19)
    return {
        "codes": label,
        "bits": bits,
        "weights": n,
        "code_bits_per_weight": bits,
        "packed_code_bytes": stored_codes,
        "coded_bytes": coded_bytes,
        "coded_bits_per_weight": coded_bytes * 8 / n,
        "saved_fraction": 1 - coded_bytes / stored_codes,
        "bits_per_weight_before": total_bits / n,
        "bits_per_weight_after": (total_bits - stored_codes * 8 + coded_bytes * 8) / n,
        "bit_exact": bool(exact),
        "encode_s": enc_s,
        "zstd19_saved_fraction": 1 - z19 / stored_codes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "lossless.json"))
    ap.add_argument("--checkpoint", action="append", default=[], help="lmpress checkpoints")
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = load_model(MODEL).model
    out = {
        "command": "python scripts/benchmark_lossless.py"
        + "".join(f" --checkpoint {c}" for c in a.checkpoint),
        "cpu": cpu_name(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "bf16": bf16_figures(model),
        "codes": [],
    }
    print(json.dumps(out["bf16"], indent=1), flush=True)
    names = quantizable_linears(model)
    for spec in CODE_SCHEMES:
        s = parse_scheme(spec)
        packed = {}
        for n in names:
            w = linear_weight(model.get_submodule(n)).detach().float()
            packed[n] = rtn(w, s).packed(s)
        out["codes"].append(code_figures(f"rtn {spec}", packed))
        print(json.dumps(out["codes"][-1]), flush=True)
    import lmpress
    from lmpress.nn.qlinear import QLinear

    for ck in a.checkpoint:
        m = lmpress.load(ck)
        packed = {n: q.packed() for n, q in m.named_modules() if isinstance(q, QLinear)}
        by_bits: dict[int, dict] = {}
        for n, p in packed.items():
            by_bits.setdefault(p.scheme.bits, {})[n] = p
        for bits, group in sorted(by_bits.items()):
            out["codes"].append(code_figures(f"{Path(ck).name} ({bits}-bit modules)", group))
            print(json.dumps(out["codes"][-1]), flush=True)
    Path(a.json).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
