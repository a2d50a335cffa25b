"""Export to compressed-tensors ``pack-quantized`` (vLLM, SGLang, transformers) and GPTQ.

compressed-tensors stores per linear ``weight_packed`` (int32, codes packed along
the input dimension as one little-endian bit stream per row), ``weight_scale``
``[out, in / group]``, ``weight_zero_point`` (asymmetric only; int32, packed along
the *output* dimension) and ``weight_shape``. Its codes are signed with an offset
of ``2**(bits-1)``, which makes the stored unsigned words exactly lmpress's codes
and integer zero points, so the export re-packs and never re-rounds.

compressed-tensors needs the group size to divide the row. A partial last group
(576 = 4 x 128 + 64) is written with the group size ``gcd(group, in)`` (64 here):
each lmpress group becomes several groups with the same scale and zero, so the
grid is unchanged. Per-tensor schemes are written per channel the same way.

Decompression computes ``(q - z) * s`` in the dtype of ``weight_scale``: with the
default ``scale_dtype=native`` (lmpress's fp16/bf16 scales) the weights come back
as lmpress's weights rounded to that dtype, which is exact in that dtype; with
``scale_dtype=float32`` they come back bit for bit equal to lmpress's float32
weights. Float zero points (``:fz``) have no compressed-tensors form: such modules
are written dense (float) and listed in ``ignore``.

The GPTQ layout (``--to gptq``) writes AutoGPTQ/GPTQModel's ``qweight`` ``[in*b/32,
out]``, ``qzeros`` ``[groups, out*b/32]`` (v1: zero minus one, or ``gptq_v2`` when a
zero point is 0), ``scales`` ``[groups, out]`` and ``g_idx``.
"""

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from lmpress.errors import LmpressError
from lmpress.export.base import ExportOption, exportable_modules, register_exporter
from lmpress.formats.scheme import Scheme
from lmpress.nn.qlinear import QLinear
from lmpress.packing.int32 import pack_int32_rows
from lmpress.packing.packed import PackedWeight


def ct_group_size(scheme: Scheme, in_features: "int | list[int]") -> int | None:
    """compressed-tensors group size that divides every row width given (None: per channel).

    One size serves every module of a scheme, because runtimes resolve one config
    group per scheme; ``gcd(group, widths...)`` keeps every lmpress group whole.
    """
    if scheme.granularity != "group":
        return None
    widths = [in_features] if isinstance(in_features, int) else in_features
    return math.gcd(scheme.group_size, *widths)


def per_column_groups(p: torch.Tensor, packed: PackedWeight, new_group: int | None) -> torch.Tensor:
    """lmpress ``[P, G]`` parameters as ``[out, in / new_group]`` (or ``[out, 1]``)."""
    s = packed.scheme
    out_f, in_f = packed.out_features, packed.in_features
    p = p.expand(out_f, -1) if p.shape[0] == 1 else p
    if new_group is None:
        return p[:, :1].contiguous()
    rep = s.group_size // new_group
    return p.repeat_interleave(rep, dim=1)[:, : in_f // new_group].contiguous()


def ct_tensors(
    packed: PackedWeight, scale_dtype: str, g: int | None
) -> tuple[dict[str, torch.Tensor], dict]:
    """One module's compressed-tensors tensors (group size ``g``) and its weights args."""
    s = packed.scheme
    scale = per_column_groups(packed.scales.float(), packed, g)
    sdt = s.torch_scale_dtype if scale_dtype == "native" else torch.float32
    t = {
        "weight_packed": pack_int32_rows(packed.codes(), s.bits),
        "weight_scale": scale.to(sdt),
        "weight_shape": torch.tensor([packed.out_features, packed.in_features], dtype=torch.int64),
    }
    if not s.symmetric:
        z = per_column_groups(packed.zeros(), packed, g).to(torch.int64)
        t["weight_zero_point"] = pack_int32_rows(z.t().contiguous(), s.bits).t().contiguous()
    args = {
        "num_bits": s.bits,
        "type": "int",
        "symmetric": s.symmetric,
        "strategy": "channel" if g is None else "group",
        "group_size": g,
        "dynamic": False,
        "actorder": None,
        "observer": "minmax",
        "observer_kwargs": {},
    }
    return t, args


def quantized_modules(model: nn.Module, fmt: str) -> list[tuple[str, QLinear]]:
    mods = exportable_modules(model, fmt)
    if not mods:
        raise LmpressError(
            f"{fmt} export needs a quantized model; quantize it first (lmpress quantize)"
        )
    return mods


def _float_state(model: nn.Module, skip: set[str]) -> dict[str, torch.Tensor]:
    from lmpress.checkpoint import _state_dict_untied

    return {
        k: v
        for k, v in _state_dict_untied(model).items()
        if not any(k.startswith(m + ".") for m in skip)
    }


def _write_dir(out: Path, model: nn.Module, tokenizer, state: dict, qconf: dict) -> None:
    cfg = model.config.to_dict()
    cfg["quantization_config"] = qconf
    cfg["torch_dtype"] = "float32"
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
    if tokenizer is not None:
        tokenizer.save_pretrained(out)


def export_compressed_tensors(
    model: nn.Module, tokenizer, out: Path, options: dict[str, Any]
) -> dict[str, Any]:
    """Write ``model`` as a compressed-tensors ``pack-quantized`` directory at ``out``."""
    scale_dtype = options["scale_dtype"]  # validated against the declaration below
    qmods = quantized_modules(model, "compressed-tensors")
    state = _float_state(model, {n for n, _ in qmods})
    groups: dict[str, dict[str, Any]] = {}
    dense: list[str] = []
    written: dict[str, str] = {}
    widths: dict[Scheme, list[int]] = {}
    for _, m in qmods:
        widths.setdefault(m.scheme, []).append(m.in_features)
    for name, m in tqdm(
        qmods, desc="compressed-tensors", disable=not options.get("progress", True)
    ):
        packed = m.packed()
        if packed.scheme.float_zero:
            state[name + ".weight"] = packed.dequantize()
            dense.append(name)
        else:
            g = ct_group_size(packed.scheme, widths[packed.scheme])
            t, args = ct_tensors(packed, scale_dtype, g)
            state.update({f"{name}.{k}": v for k, v in t.items()})
            key = json.dumps(args, sort_keys=True)
            groups.setdefault(key, {"targets": [], "weights": args})["targets"].append(name)
            written[name] = f"w{args['num_bits']} {args['strategy']} g{args['group_size']}"
        if m.bias is not None:
            state[name + ".bias"] = m.bias.detach().float().contiguous()
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    ignore = sorted(set(linears) | set(dense))
    if getattr(model.config, "tie_word_embeddings", False) or "lm_head" in dict(
        model.named_modules()
    ):
        ignore = sorted(set(ignore) | {"lm_head"})
    config_groups = {}
    for i, g in enumerate(groups.values()):
        targets = ["Linear"] if len(groups) == 1 else g["targets"]
        config_groups[f"group_{i}"] = {
            "targets": targets,
            "weights": g["weights"],
            "input_activations": None,
            "output_activations": None,
            "format": "pack-quantized",
        }
    qconf = {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "config_groups": config_groups,
        "ignore": ignore,
        "kv_cache_scheme": None,
        "global_compression_ratio": None,
        "sparsity_config": {},
        "transform_config": {},
        "producer": "lmpress",
    }
    _write_dir(out, model, tokenizer, state, qconf)
    return {
        "format": "compressed-tensors",
        "scale_dtype": scale_dtype,
        "quantized_modules": len(written),
        "dense_modules": dense,
        "config_groups": len(config_groups),
        "modules": written,
    }


def gptq_zeros(packed: PackedWeight) -> torch.Tensor:
    """Integer zero points as int64 ``[out, groups]`` (per-tensor parameters repeated)."""
    z = packed.zeros().to(torch.int64)
    return z.expand(packed.out_features, -1) if z.shape[0] == 1 else z


def gptq_tensors(packed: PackedWeight, v2: bool) -> dict[str, torch.Tensor]:
    """AutoGPTQ-layout tensors of one module (``v2``: zero points stored as they are)."""
    s = packed.scheme
    k = packed.in_features
    scale = packed.scales.float()
    if scale.shape[0] == 1:
        scale = scale.expand(packed.out_features, -1)
    z = gptq_zeros(packed) - (0 if v2 else 1)
    return {
        "qweight": pack_int32_rows(packed.codes(), s.bits).t().contiguous(),
        "qzeros": pack_int32_rows(z.t().contiguous(), s.bits),
        "scales": scale.t().contiguous().to(torch.float16),
        "g_idx": (torch.arange(k) // s.group_len(k)).to(torch.int32),
    }


def export_gptq(model: nn.Module, tokenizer, out: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Write ``model`` in the AutoGPTQ / GPTQModel checkpoint layout at ``out``."""
    qmods = quantized_modules(model, "GPTQ")
    schemes = {m.scheme for _, m in qmods}
    if len(schemes) != 1:
        raise LmpressError("GPTQ export needs one scheme for every quantized module")
    s = next(iter(schemes))
    if s.float_zero or s.scale_dtype != "float16" or s.bits not in (2, 3, 4, 8):
        raise LmpressError(
            "GPTQ export needs 2, 3, 4 or 8-bit integer zero points and fp16 scales; "
            f"{s.name} does not fit (use --to compressed-tensors)"
        )
    for name, m in qmods:
        if m.in_features * s.bits % 32 or m.out_features * s.bits % 32:
            raise LmpressError(
                f"{name}: GPTQ packing needs in and out features with in*bits % 32 == 0"
            )
    state = _float_state(model, {n for n, _ in qmods})
    # v1 stores zero - 1 and cannot hold a zero point of 0; v2 stores it as it is.
    v2 = any(bool((gptq_zeros(m.packed()) == 0).any()) for _, m in qmods)
    for name, m in qmods:
        state.update({f"{name}.{k}": v for k, v in gptq_tensors(m.packed(), v2).items()})
        if m.bias is not None:
            state[name + ".bias"] = m.bias.detach().to(torch.float16).contiguous()
    fmt = "gptq_v2" if v2 else "gptq"
    qconf = {
        "quant_method": "gptq",
        "bits": s.bits,
        "group_size": s.group_size if s.granularity == "group" else -1,
        "desc_act": False,
        "sym": s.symmetric,
        "checkpoint_format": fmt,
        "format": fmt,
        "true_sequential": True,
        "producer": "lmpress",
    }
    _write_dir(out, model, tokenizer, state, qconf)
    return {"format": fmt, "quantized_modules": len(qmods), "scheme": s.name}


register_exporter(
    "compressed-tensors",
    "a compressed-tensors pack-quantized directory (vLLM, SGLang, transformers)",
    scale_dtype=ExportOption(
        "native",
        "scales as stored (fp16/bf16) or float32 (decompresses bit-exact in float32)",
        ("native", "float32"),
    ),
)(export_compressed_tensors)
register_exporter("gptq", "an AutoGPTQ / GPTQModel checkpoint directory")(export_gptq)
