"""Load GPTQ and compressed-tensors checkpoints made by other tools as lmpress models.

Both formats store integer codes, scales and zero points on the same affine grid
lmpress uses, so a module imports exactly: its codes are re-packed into a
:class:`~lmpress.packing.packed.PackedWeight` and it becomes a ``QLinear``. What has
no lmpress form (GPTQ act-order with a non-contiguous ``g_idx``, float32 scales
that fp16 cannot hold, FP8 scales per group or per non-square block) is loaded as a
float ``nn.Linear`` holding the exactly dequantized weight, with a warning, so
that evaluation still measures the checkpoint's quality.

compressed-tensors' float layouts import as lmpress's float formats, byte for byte:
``float-quantized`` / ``naive-quantized`` FP8 (E4M3 ``weight`` and a float scale per
channel, per tensor or per square block) as ``fp8`` / ``fp8gt`` / ``fp8b<n>``,
``nvfp4-pack-quantized`` as ``nvfp4`` (its ``weight_global_scale`` is lmpress's tensor
divisor), and the MX layouts (E8M0 ``uint8`` scales per 32) as ``mxfp4`` / ``mxfp6`` /
``mxfp8``. Quantized activations in the config (``input_activations``, e.g. FP8
dynamic per token) are not modelled: the weights import exactly and a warning says
that activations run in float.
"""

import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from lmpress.errors import LmpressError
from lmpress.formats.scheme import Scheme, parse_scheme
from lmpress.packing.bits import pack_codes
from lmpress.packing.int32 import unpack_int32_rows
from lmpress.packing.packed import PackedWeight, format_version

FOREIGN_METHODS = ("gptq", "compressed-tensors")


def foreign_method(path: Path) -> str | None:
    """``gptq`` / ``compressed-tensors`` when ``path`` holds such a checkpoint, else None."""
    cfg = path / "config.json"
    if not cfg.is_file():
        return None
    qc = json.loads(cfg.read_text()).get("quantization_config") or {}
    m = qc.get("quant_method")
    return m if m in FOREIGN_METHODS else None


def _state(path: Path) -> dict[str, torch.Tensor]:
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise LmpressError(f"{path} has no .safetensors files")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def _scale_dtype(scales: torch.Tensor) -> str | None:
    """lmpress scale dtype holding ``scales`` exactly (None: neither fp16 nor bf16 does)."""
    if scales.dtype == torch.float16:
        return "float16"
    if scales.dtype == torch.bfloat16:
        return "bfloat16"
    s = scales.float()
    if torch.equal(s.to(torch.float16).float(), s):
        return "float16"
    if torch.equal(s.to(torch.bfloat16).float(), s):
        return "bfloat16"
    return None


def _scheme(bits: int, group: int | None, k: int, symmetric: bool, sdt: str) -> Scheme:
    if group is None or group >= k:
        return Scheme(bits=bits, granularity="channel", symmetric=symmetric, scale_dtype=sdt)
    return Scheme(
        bits=bits, granularity="group", group_size=group, symmetric=symmetric, scale_dtype=sdt
    )


def _packed_or_dense(
    name: str,
    codes: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    bits: int,
    group: int | None,
    why_dense: str | None,
) -> PackedWeight | torch.Tensor:
    """``codes [N, K]``, ``scale``/``zero`` ``[N, G]`` -> a PackedWeight, or the float weight."""
    n, k = codes.shape
    sdt = _scale_dtype(scale) if why_dense is None else None
    if why_dense is None and sdt is None:
        why_dense = "its scales are float32 values that fp16/bf16 cannot hold"
    if why_dense is not None:
        g = k if group is None else group
        s = scale.float().repeat_interleave(g, 1)[:, :k]
        z = zero.float().repeat_interleave(g, 1)[:, :k]
        warnings.warn(f"{name}: loaded as a float layer ({why_dense})", stacklevel=4)
        return (codes.float() - z) * s
    mid = 2 ** (bits - 1)
    symmetric = bool((zero == mid).all())
    scheme = _scheme(bits, group, k, symmetric, sdt)
    return PackedWeight.from_codes(codes, {"scale": scale.float(), "zero": zero.float()}, scheme)


def read_gptq(path: Path, qc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """GPTQ (AutoGPTQ / GPTQModel v1 and v2) modules and the remaining float tensors."""
    bits = int(qc.get("bits", 4))
    if bits not in (2, 3, 4, 8):
        raise LmpressError(f"{path}: GPTQ with {bits} bits is not supported (2, 3, 4, 8)")
    fmt = qc.get("checkpoint_format") or qc.get("format") or "gptq"
    if fmt not in ("gptq", "gptq_v2"):
        raise LmpressError(f"{path}: GPTQ checkpoint format {fmt!r} is not supported")
    state = _state(path)
    mods: dict[str, Any] = {}
    for key in [k for k in state if k.endswith(".qweight")]:
        name = key.removesuffix(".qweight")
        qweight = state.pop(key)
        qzeros = state.pop(f"{name}.qzeros")
        scales = state.pop(f"{name}.scales")
        g_idx = state.pop(f"{name}.g_idx", None)
        k = qweight.shape[0] * 32 // bits
        n = scales.shape[1]
        codes = unpack_int32_rows(qweight.t().contiguous(), bits, k)
        zeros = unpack_int32_rows(qzeros, bits, n).t()  # [N, G]
        if fmt == "gptq":
            zeros = (zeros + 1) % (1 << bits)  # v1 stores zero - 1
        n_groups = scales.shape[0]
        group = int(qc.get("group_size", -1))
        group = k if group <= 0 else group
        if -(-k // group) != n_groups:
            raise LmpressError(
                f"{path}: {name} has {n_groups} scale groups, not ceil({k}/{group}) as its "
                "group_size says"
            )
        why = None
        if g_idx is not None and not torch.equal(g_idx.to(torch.int64), torch.arange(k) // group):
            why = "act-order g_idx with non-contiguous groups"
            # the grid is per column through g_idx: expand to per-column parameters
            scale_cols = scales.t().float()[:, g_idx.long()]
            zero_cols = zeros.float()[:, g_idx.long()]
            w = (codes.float() - zero_cols) * scale_cols
            warnings.warn(f"{name}: loaded as a float layer ({why})", stacklevel=3)
            mods[name] = w
            continue
        mods[name] = _packed_or_dense(
            name, codes, scales.t().contiguous(), zeros, bits, group if n_groups > 1 else None, None
        )
    if not mods:
        raise LmpressError(f"{path}: no GPTQ tensors (.qweight) found")
    return mods, state


def _ct_scheme_for(name: str, groups: dict[str, Any], ignore: list[str]) -> dict | None:
    def match(target: str) -> bool:
        if target.startswith("re:"):
            return re.match(target[3:], name) is not None
        return target == name or target == "Linear"

    if any(match(t) and t != "Linear" for t in ignore):
        return None
    for g in groups.values():
        if any(match(t) for t in g.get("targets", [])):
            return g
    return None


# compressed-tensors formats lmpress reads (int: pack-quantized; the rest float)
CT_IMPORT_FORMATS = (
    None,
    "pack-quantized",
    "float-quantized",
    "naive-quantized",
    "nvfp4-pack-quantized",
    "mxfp4-pack-quantized",
    "mxfp6-pack-quantized",
    "mxfp8-quantized",
    "mixed-precision",
)


def _ct_int_module(name: str, state: dict[str, torch.Tensor], wa: dict[str, Any]):
    """One ``pack-quantized`` integer module: a PackedWeight, or its float weight."""
    bits = int(wa["num_bits"])
    packed = state.pop(f"{name}.weight_packed")
    shape = state.pop(f"{name}.weight_shape").tolist()
    scale = state.pop(f"{name}.weight_scale")
    zp = state.pop(f"{name}.weight_zero_point", None)
    g_idx = state.pop(f"{name}.weight_g_idx", None)
    n, k = int(shape[0]), int(shape[1])
    codes = unpack_int32_rows(packed, bits, k)
    if scale.dim() == 1:
        scale = scale.reshape(-1, 1)
    if scale.shape[0] == 1 and n > 1:
        scale = scale.expand(n, -1).contiguous()
    if zp is None:
        zero = torch.full(scale.shape, 2 ** (bits - 1), dtype=torch.int64)
    else:
        zero = unpack_int32_rows(zp.t().contiguous(), bits, n).t().contiguous()
        if zero.shape[0] == 1 and n > 1:
            zero = zero.expand(n, -1).contiguous()
    strategy = wa.get("strategy", "group")
    group = int(wa["group_size"]) if strategy == "group" else None
    why = "act-order g_idx" if g_idx is not None else None
    return _packed_or_dense(name, codes, scale, zero, bits, group, why)


def _fp8_dense(codes: torch.Tensor, scale: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """E4M3 ``codes`` (float8_e4m3fn ``[N, K]``) times ``scale`` ``[ceil(N/rows),
    ceil(K/cols)]`` broadcast over ``rows x cols`` tiles: float32 ``[N, K]``."""
    n, k = codes.shape
    s = scale.float().repeat_interleave(rows, 0)[:n].repeat_interleave(cols, 1)[:, :k]
    return codes.float() * s


def _ct_float_module(
    path: Path, name: str, state: dict[str, torch.Tensor], wa: dict[str, Any]
) -> PackedWeight | torch.Tensor:
    """One float-weight module (FP8, NVFP4, MX) as an lmpress PackedWeight, from its
    stored bytes; FP8 per group or per non-square block (no lmpress form) as its
    float32 weight, with a warning."""
    if not wa.get("symmetric", True):
        raise LmpressError(f"{path}: {name} has float weights with zero points; not supported")
    bits = int(wa["num_bits"])
    strategy = wa.get("strategy")
    group = wa.get("group_size")
    scale = state.pop(f"{name}.weight_scale")
    if scale.dtype == torch.uint8 and strategy == "group" and group == 32 and bits in (4, 6, 8):
        # MX: E8M0 exponent bytes, stored by lmpress as they are
        scheme = parse_scheme(f"mxfp{bits}")
        if bits == 8:
            w = state.pop(f"{name}.weight")
            n, k = w.shape
            qweight = pack_codes(w.view(torch.uint8), 8)  # E4M3 bit patterns, one a byte
        else:
            qweight = state.pop(f"{name}.weight_packed")
            n, k = qweight.shape[0], qweight.shape[1] * 8 // bits
        return PackedWeight(scheme, n, k, {"qweight": qweight, "scales": scale.contiguous()})
    if bits == 4 and strategy == "tensor_group" and group == 16:
        qweight = state.pop(f"{name}.weight_packed")
        glob = state.pop(f"{name}.weight_global_scale").to(torch.float32).reshape(1)
        s8 = scale.to(torch.float8_e4m3fn)
        if not torch.equal(s8.float(), scale.float()):
            raise LmpressError(f"{path}: {name}'s NVFP4 block scales are not E4M3 values")
        n, k = qweight.shape[0], qweight.shape[1] * 2
        tensors = {"qweight": qweight, "scales": s8.contiguous(), "global_scale": glob}
        return PackedWeight(parse_scheme("nvfp4"), n, k, tensors)
    if bits != 8:
        raise LmpressError(
            f"{path}: {name} has {bits}-bit float weights ({strategy}, group {group}); "
            "lmpress imports FP8, NVFP4 and MX"
        )
    w = state.pop(f"{name}.weight")
    if w.dtype != torch.float8_e4m3fn:
        raise LmpressError(f"{path}: {name}'s FP8 weight is {w.dtype}, not float8_e4m3fn")
    n, k = w.shape
    codes = w.view(torch.uint8)  # lmpress's fp8 codes are the E4M3 bit patterns
    s = scale.float()
    block = wa.get("block_structure")
    if strategy == "tensor":
        spec, s = "fp8gt", s.reshape(1, 1)
    elif strategy == "channel":
        spec, s = "fp8", s.reshape(n, 1)
    elif strategy == "block" and block and block[0] == block[1]:
        spec = f"fp8b{block[0]}"
    else:
        rows, cols = (block[0], block[1]) if strategy == "block" else (1, int(group or k))
        warnings.warn(
            f"{name}: loaded as a float layer (FP8 scales per {rows}x{cols}, no lmpress form)",
            stacklevel=4,
        )
        return _fp8_dense(w, s, rows, cols)
    return PackedWeight.from_codes(codes, {"scale": s}, parse_scheme(spec))


def read_compressed_tensors(
    path: Path, qc: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """compressed-tensors modules (integer ``pack-quantized``; FP8, NVFP4 and MX float
    layouts) and the remaining float tensors."""
    if qc.get("format") not in CT_IMPORT_FORMATS:
        raise LmpressError(
            f"{path}: compressed-tensors format {qc.get('format')!r} is not supported; "
            "lmpress imports pack-quantized integer, FP8, NVFP4 and MX weights"
        )
    if qc.get("quantization_status") not in (None, "compressed"):
        raise LmpressError(f"{path}: only compressed checkpoints can be imported")
    groups = qc.get("config_groups") or {}
    ignore = qc.get("ignore") or []
    state = _state(path)
    mods: dict[str, Any] = {}
    act_quantized = []
    # every quantized module, whatever its layout, has a weight_scale
    for key in [k for k in state if k.endswith(".weight_scale")]:
        name = key.removesuffix(".weight_scale")
        g = _ct_scheme_for(name, groups, ignore)
        if g is None:
            raise LmpressError(f"{path}: no config group covers {name}")
        wa = g["weights"]
        if g.get("input_activations"):
            act_quantized.append(name)
        if wa.get("type", "int") == "int":
            if f"{name}.weight_packed" not in state:
                raise LmpressError(
                    f"{path}: {name} has unpacked integer weights "
                    f"({g.get('format') or qc.get('format')}); lmpress imports pack-quantized"
                )
            mods[name] = _ct_int_module(name, state, wa)
        else:
            mods[name] = _ct_float_module(path, name, state, wa)
        state.pop(f"{name}.input_scale", None)  # static activation scales: not modelled
    if not mods:
        raise LmpressError(f"{path}: no quantized tensors (.weight_scale) found")
    if act_quantized:
        warnings.warn(
            f"{path}: {len(act_quantized)} module(s) quantize their inputs too "
            f"(first: {act_quantized[0]}); lmpress imports the weights exactly and runs "
            "activations in float",
            stacklevel=3,
        )
    return mods, state


def load_foreign(path: Path, method: str):
    """Load a GPTQ / compressed-tensors directory as a transformers model with QLinear modules."""
    from transformers import AutoTokenizer

    from lmpress.checkpoint import empty_model, fill_model
    from lmpress.models.arch import linear_weight
    from lmpress.nn.qlinear import QLinear
    from lmpress.pipeline import _set_module

    cfg_dict = json.loads((path / "config.json").read_text())
    qc = cfg_dict.pop("quantization_config")
    mods, state = (read_gptq if method == "gptq" else read_compressed_tensors)(path, qc)
    model = empty_model(cfg_dict)
    modules: dict[str, Any] = {}
    for name, m in mods.items():
        old = model.get_submodule(name)
        out_f, in_f = linear_weight(old).shape
        bias = state.pop(f"{name}.bias", None)
        if isinstance(m, PackedWeight):
            if (m.out_features, m.in_features) != (out_f, in_f):
                raise LmpressError(f"{path}: {name} has shape {m.out_features}x{m.in_features}")
            q = QLinear.from_packed(m, None if bias is None else bias.float())
            _set_module(model, name, q)
            modules[name] = {"method": f"import:{method}", "scheme": m.scheme.to_dict()}
        else:
            lin = nn.Linear(in_f, out_f, bias=bias is not None)
            lin.weight = nn.Parameter(m.float(), requires_grad=False)
            if bias is not None:
                lin.bias = nn.Parameter(bias.float(), requires_grad=False)
            _set_module(model, name, lin)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    fill_model(model, state, path)
    model.config.quantization_config = {
        "quant_method": "lmpress",
        "format_version": format_version([m for m in mods.values() if isinstance(m, PackedWeight)]),
        "imported_from": method,
        "source_model": str(path),
        "modules": modules,
    }
    tok = AutoTokenizer.from_pretrained(path) if (path / "tokenizer_config.json").exists() else None
    return model.eval(), tok
