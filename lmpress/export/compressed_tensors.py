"""Export to compressed-tensors (vLLM, SGLang, transformers) and GPTQ.

Integer schemes are written ``pack-quantized``; the float formats (FP8, NVFP4, MX) in
the layouts compressed-tensors has for them (below); W8A8 int8 and FP8 with quantized
activations as :mod:`lmpress.export.ct_activations` describes.

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

Float formats are written in compressed-tensors' own layouts for them, again from the
stored codes and scales, never re-rounded (``weights`` args ``type: float``):

=========  ========================  ===============================================
lmpress    compressed-tensors        tensors per linear
=========  ========================  ===============================================
fp8        ``float-quantized``       ``weight`` float8_e4m3fn ``[out, in]`` (the codes
(fp8gt,                              are the E4M3 bit patterns), ``weight_scale``
fp8b128)                             float32 ``[out, 1]`` (channel), ``[1]`` (tensor)
                                     or ``[ceil(out/b), ceil(in/b)]`` (block ``[b, b]``)
nvfp4      ``nvfp4-pack-quantized``  ``weight_packed`` uint8 ``[out, in/2]`` (E2M1, low
                                     nibble first), ``weight_scale`` float8_e4m3fn
                                     ``[out, in/16]``, ``weight_global_scale`` float32
                                     ``[1]`` (strategy ``tensor_group``)
mxfp4      ``mxfp4-pack-quantized``  ``weight_packed`` as nvfp4, ``weight_scale`` uint8
                                     E8M0 exponents ``[out, in/32]``
mxfp6      ``mxfp6-pack-quantized``  ``weight_packed`` uint8 ``[out, 3*in/4]`` (four
                                     E2M3 codes in three bytes, little-endian)
mxfp8      ``mxfp8-quantized``       ``weight`` float8_e4m3fn ``[out, in]``,
                                     ``weight_scale`` uint8 E8M0 ``[out, in/32]``
=========  ========================  ===============================================

The bytes are lmpress's own: lmpress packs codes low bits first (two E2M1 codes a
byte, four 6-bit codes in three bytes), its E2M1/E2M3/E4M3 codes are the standard
sign-exponent-mantissa patterns, and its NVFP4 tensor scale is the divisor that
compressed-tensors calls ``weight_global_scale`` (a weight is
``e2m1 * (float32(block) / global)`` in both). Formats whose tables compressed-tensors
has no compressor for (``nf4``, ``fp4gN``, ``lut``, ``nupes``, ``mix``, ``iq4nl``, the
E5M2 and E3M2 variants) are refused before anything is written
(:func:`ct_refusal`).

The GPTQ layout (``--to gptq``) writes AutoGPTQ/GPTQModel's ``qweight`` ``[in*b/32,
out]``, ``qzeros`` ``[groups, out*b/32]`` (v1: zero minus one, or ``gptq_v2`` when a
zero point is 0), ``scales`` ``[groups, out]`` and ``g_idx``.

Both write ``quantization_config.producer`` as ``{"name": "lmpress", "version": ...}``:
vLLM reads ``producer.get("name")`` from every quantization config (ModelOpt's
convention) and fails on a plain string.
"""

import json
import math
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from lmpress.__version__ import __version__
from lmpress.errors import LmpressError
from lmpress.export.base import ExportOption, exportable_modules, register_exporter
from lmpress.export.ct_activations import ct_input_args, ct_int8_tensors
from lmpress.formats.scheme import Scheme
from lmpress.nn.qlinear import QLinear, refuse_online_parts
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


# What vLLM (and ModelOpt) expect under ``producer``: a dict with a name (see the
# module docstring); compressed-tensors itself writes no producer, only ``version``.
PRODUCER = {"name": "lmpress", "version": __version__}

# lmpress formats compressed-tensors stores (the variants are checked by ct_refusal)
CT_FORMATS = ("int", "fp8", "nvfp4", "mx")
_INSTEAD = "quantize with nvfp4, mxfp4, fp8 or an integer scheme (e.g. w4g128) instead"
# format -> why compressed-tensors cannot hold it (it has no compressor for that table)
_NO_LAYOUT = {
    "nf4": "NormalFloat tables",
    "fp4": "FP4 with fp16/bf16 group scales (it stores FP4 only as nvfp4 or mxfp4)",
    "lut": "learned per-group tables",
    "nupes": "power-law grids",
    "mix": "mixed per-group tables",
    "iq4nl": "IQ4_NL tables",
}
# (format, bits) -> compressed-tensors format
CT_FORMAT_NAMES = {
    ("fp8", 8): "float-quantized",
    ("nvfp4", 4): "nvfp4-pack-quantized",
    ("mx", 4): "mxfp4-pack-quantized",
    ("mx", 6): "mxfp6-pack-quantized",
    ("mx", 8): "mxfp8-quantized",
}


def ct_refusal(scheme: Scheme, in_features: int) -> str | None:
    """Why a ``scheme`` matrix of ``in_features`` columns has no compressed-tensors
    layout (one line naming what to use instead), or None when it has one."""
    fmt = scheme.format
    if fmt not in CT_FORMATS:
        what = _NO_LAYOUT.get(fmt, f"format {fmt!r}")
        return f"compressed-tensors has no layout for {scheme.name} ({what}); {_INSTEAD}"
    if fmt == "fp8" and scheme.variant:
        return f"compressed-tensors stores FP8 weights as E4M3 only, not {scheme.name}; use fp8"
    if fmt == "mx" and scheme.variant:
        # its MXFP6 packs E2M3 and its MXFP8 is E4M3; the other element has no flag
        return (
            f"compressed-tensors' mxfp{scheme.bits} is {'E2M3' if scheme.bits == 6 else 'E4M3'}"
            f", not {scheme.name}; use mxfp{scheme.bits}"
        )
    if fmt in ("nvfp4", "mx") and in_features % scheme.group_size:
        # compressed-tensors reshapes rows into whole groups; a partial one has no form
        return (
            f"{scheme.name} needs rows of whole {scheme.group_size}-blocks for "
            f"compressed-tensors, not {in_features} columns; leave this module unquantized"
        )
    return None


def ct_modules(model: nn.Module) -> list[tuple[str, QLinear]]:
    """The model's quantized modules, every one checked up front to have a
    compressed-tensors layout (one line naming the first that has none)."""
    refuse_online_parts(model, "compressed-tensors export", activations=False)
    for name, m in model.named_modules():
        if isinstance(m, QLinear):
            why = ct_refusal(m.scheme, m.in_features)
            if why:
                raise LmpressError(f"compressed-tensors export: {name}: {why}")
            ct_input_args(m.scheme)  # raises for activations it has no form of
    return quantized_modules(model, "compressed-tensors", CT_FORMATS, activations=True)


def _float_args(bits: int, strategy: str, group: int | None = None, **extra: Any) -> dict:
    """compressed-tensors ``QuantizationArgs`` of symmetric static float weights."""
    return {
        "num_bits": bits,
        "type": "float",
        "symmetric": True,
        "strategy": strategy,
        "group_size": group,
        "dynamic": False,
        "actorder": None,
        **extra,
    }


def ct_float_tensors(packed: PackedWeight) -> tuple[dict[str, torch.Tensor], dict, str]:
    """One float-format module's compressed-tensors tensors, its weights args and its
    compressed-tensors format, all from the stored codes and scales (see the table in
    the module docstring)."""
    s = packed.scheme
    fmt = CT_FORMAT_NAMES[(s.format, s.bits)]
    if s.format == "fp8":
        scale = packed.scales.to(torch.float32)
        if s.block_rows:
            args = _float_args(8, "block", block_structure=[s.block_rows, s.group_size])
        elif s.granularity == "tensor":
            args, scale = _float_args(8, "tensor"), scale.reshape(1)
        else:
            args = _float_args(8, "channel")
        # lmpress's fp8 codes are the E4M3 bit patterns: reinterpreted, not converted
        weight = packed.codes().view(torch.float8_e4m3fn)
        return {"weight": weight, "weight_scale": scale.contiguous()}, args, fmt
    if s.format == "nvfp4":
        t = {
            "weight_packed": packed.qweight,
            "weight_scale": packed.scales,
            "weight_global_scale": packed.tensors["global_scale"],
        }
        args = _float_args(4, "tensor_group", s.group_size, scale_dtype="torch.float8_e4m3fn")
        return {k: v.contiguous().clone() for k, v in t.items()}, args, fmt
    # MX: E8M0 scale bytes as they are; uint8 scale_dtype is what marks MX to readers
    args = _float_args(s.bits, "group", s.group_size, scale_dtype="torch.uint8")
    if s.bits == 8:
        codes = packed.codes().view(torch.float8_e4m3fn)
        t = {"weight": codes, "weight_scale": packed.scales}
    else:
        # 4 bits: two codes a byte, low nibble first; 6 bits: four codes in three bytes,
        # little-endian: lmpress's pack_codes stream is the same bytes in both
        t = {"weight_packed": packed.qweight, "weight_scale": packed.scales}
    return {k: v.contiguous().clone() for k, v in t.items()}, args, fmt


# layouts whose quantized weight is stored as "weight", like a float module's
_DENSE_NAMED = ("float-quantized", "mxfp8-quantized", "int-quantized")

# fused in vLLM as one layer with one NVFP4 tensor scale (it takes their maximum)
_FUSED = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def unshared_global_scales(qmods: list[tuple[str, QLinear]]) -> list[str]:
    """Parents (``model.layers.0.self_attn``) whose NVFP4 q/k/v or gate/up projections
    have different tensor scales: a runtime fusing them decodes all but one wrongly."""
    scales = {n: m.packed().tensors["global_scale"] for n, m in qmods if m.scheme.format == "nvfp4"}
    bad = []
    for name in scales:
        parent, _, leaf = name.rpartition(".")
        for fused in _FUSED:
            if leaf != fused[0]:
                continue
            sib = [scales.get(f"{parent}.{x}") for x in fused]
            if all(t is not None for t in sib) and any(not torch.equal(t, sib[0]) for t in sib):
                bad.append(parent)
    return bad


def quantized_modules(
    model: nn.Module, fmt: str, formats: tuple[str, ...] = ("int",), activations: bool = False
) -> list[tuple[str, QLinear]]:
    mods = exportable_modules(model, fmt, formats, activations)
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
    """Write ``model`` as a compressed-tensors directory at ``out`` (integer schemes
    ``pack-quantized``, float formats in their own layouts; mixed: ``mixed-precision``)."""
    scale_dtype = options["scale_dtype"]  # validated against the declaration below
    qmods = ct_modules(model)
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
        if m.bias is not None:
            state[name + ".bias"] = m.bias.detach().float().contiguous()
        packed = m.packed()
        if packed.scheme.float_zero:
            state[name + ".weight"] = packed.dequantize()
            dense.append(name)
            continue
        inputs = ct_input_args(packed.scheme)
        if inputs is not None and not inputs["dynamic"]:
            state[name + ".input_scale"] = m.input_scale.detach().float().reshape(1).clone()
        if packed.scheme.format == "int" and inputs is not None:
            sdt = packed.scheme.torch_scale_dtype if scale_dtype == "native" else torch.float32
            t, args = ct_int8_tensors(packed, sdt)
            fmt = "int-quantized"
            written[name] = f"w8a8 int8 {inputs['strategy']}"
        elif packed.scheme.format == "int":
            g = ct_group_size(packed.scheme, widths[packed.scheme])
            t, args = ct_tensors(packed, scale_dtype, g)
            fmt = "pack-quantized"
            written[name] = f"w{args['num_bits']} {args['strategy']} g{args['group_size']}"
        else:
            t, args, fmt = ct_float_tensors(packed)
            written[name] = f"{packed.scheme.name} {fmt} {args['strategy']}"
        state.update({f"{name}.{k}": v for k, v in t.items()})
        key = json.dumps([args, fmt, inputs], sort_keys=True)
        groups.setdefault(key, {"targets": [], "weights": args, "format": fmt, "inputs": inputs})
        groups[key]["targets"].append(name)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    ignore = sorted(set(linears) | set(dense))
    if getattr(model.config, "tie_word_embeddings", False) or "lm_head" in dict(
        model.named_modules()
    ):
        ignore = sorted(set(ignore) | {"lm_head"})
    config_groups = {}
    for i, g in enumerate(groups.values()):
        # "Linear" names a lone group's modules by class; layouts whose weight keeps the
        # name "weight" list their modules instead, since readers that go by tensor names
        # (compressed-tensors' own dequantizer) would take every ".weight" for theirs
        by_class = len(groups) == 1 and g["format"] not in _DENSE_NAMED
        targets = ["Linear"] if by_class else g["targets"]
        config_groups[f"group_{i}"] = {
            "targets": targets,
            "weights": g["weights"],
            "input_activations": g["inputs"],
            "output_activations": None,
            "format": g["format"],
        }
    formats = sorted({g["format"] for g in groups.values()})
    if len(config_groups) > 1:
        # transformers (5.25) decompresses every non-expert module with the first group's
        # scheme, so the other groups' modules come out wrong there, without an error
        warnings.warn(
            f"{len(config_groups)} compressed-tensors config groups: vLLM and "
            "compressed-tensors read each module's own group, but transformers' loader "
            "decompresses every module with the first group's scheme",
            stacklevel=2,
        )
    unshared = unshared_global_scales(qmods)
    if unshared:
        warnings.warn(
            f"nvfp4 q/k/v or gate/up projections of {len(unshared)} module(s) (first: "
            f"{unshared[0]}) have different tensor scales; runtimes that fuse them (vLLM) "
            "use one for all and decode the others wrongly",
            stacklevel=2,
        )
    qconf = {
        "quant_method": "compressed-tensors",
        # one format names the whole model; several: each group carries its own
        "format": "mixed-precision" if len(formats) > 1 else (formats or ["pack-quantized"])[0],
        "quantization_status": "compressed",
        "config_groups": config_groups,
        "ignore": ignore,
        "kv_cache_scheme": None,
        "global_compression_ratio": None,
        "sparsity_config": {},
        "transform_config": {},
        "producer": dict(PRODUCER),
    }
    _write_dir(out, model, tokenizer, state, qconf)
    return {
        "format": "compressed-tensors",
        "scale_dtype": scale_dtype,
        "quantized_modules": len(written),
        "dense_modules": dense,
        "config_groups": len(config_groups),
        "formats": formats,
        "nvfp4_unshared_global_scales": unshared,
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
        "producer": dict(PRODUCER),
    }
    _write_dir(out, model, tokenizer, state, qconf)
    return {"format": fmt, "quantized_modules": len(qmods), "scheme": s.name}


register_exporter(
    "compressed-tensors",
    "a compressed-tensors directory: int pack-quantized, fp8, nvfp4, mxfp4/6/8 "
    "(vLLM, SGLang, transformers)",
    scale_dtype=ExportOption(
        "native",
        "integer schemes' scales as stored (fp16/bf16) or float32 (decompresses bit-exact "
        "in float32); float formats always keep their stored scales",
        ("native", "float32"),
    ),
)(export_compressed_tensors)
register_exporter("gptq", "an AutoGPTQ / GPTQModel checkpoint directory")(export_gptq)
