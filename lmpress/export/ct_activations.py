"""compressed-tensors' forms of quantized activations: W8A8 int8 and FP8 dynamic/static.

What vLLM serves as W8A8 is a pair: symmetric int8 weights with one scale per output
channel (``int-quantized``: ``weight`` int8 ``[out, in]``, ``weight_scale`` ``[out, 1]``)
and int8 inputs quantized per token at run time (``input_activations``: ``strategy:
token``, ``dynamic: true``) or with one calibrated scale (``strategy: tensor``,
``input_scale`` ``[1]``); FP8 the same with E4M3 weights (``float-quantized``). lmpress's
``w8sa8`` / ``w8sa8s`` / ``fp8a8`` / ``fp8a8s`` map to these; other pairs have no layout
there and are refused with the pair that has one.

lmpress's dynamic int8 scale is ``amax / 127`` per token (vLLM's); compressed-tensors'
own simulation divides by 127.5, so transformers' forward of an export differs from
lmpress's by that rounding, vLLM's does not.
"""

from typing import Any

import torch

from lmpress.errors import LmpressError
from lmpress.formats.scheme import Scheme
from lmpress.packing.packed import PackedWeight

_PAIRS = "w8sa8 / w8sa8s (int8) or fp8a8 / fp8a8s (FP8)"


def ct_activation_refusal(scheme: Scheme) -> str | None:
    """Why ``scheme``'s activation scheme has no compressed-tensors form (one line), or
    None when it has one (or quantizes no activations)."""
    act = scheme.act
    if act is None:
        return None
    if act.format == "int" and act.bits == 8 and act.clip == 1.0:
        ok = (
            scheme.format == "int"
            and scheme.bits == 8
            and scheme.symmetric
            and scheme.granularity == "channel"
        )
        return None if ok else "int8 activations go with symmetric per-channel int8 weights"
    if act.format == "fp8":
        ok = scheme.format == "fp8" and not scheme.variant and not scheme.block_rows
        return None if ok else "fp8 activations go with E4M3 weights per channel or tensor"
    return f"compressed-tensors' runtimes take int8 or fp8 activations, not {act.format}{act.bits}"


def ct_input_args(scheme: Scheme) -> dict[str, Any] | None:
    """The ``input_activations`` args of a scheme :func:`ct_activation_refusal` accepts."""
    act = scheme.act
    if act is None:
        return None
    why = ct_activation_refusal(scheme)
    if why:
        raise LmpressError(f"compressed-tensors export of {scheme.name}: {why}; use {_PAIRS}")
    return {
        "num_bits": 8,
        "type": "int" if act.format == "int" else "float",
        "symmetric": True,
        "strategy": "token" if act.dynamic else "tensor",
        "group_size": None,
        "dynamic": act.dynamic,
        "actorder": None,
        "observer": None if act.dynamic else "minmax",
        "observer_kwargs": {},
    }


def ct_int8_tensors(packed: PackedWeight, scale_dtype: torch.dtype) -> tuple[dict, dict]:
    """``int-quantized`` tensors and weights args of a symmetric per-channel int8
    weight: the stored codes minus their implicit zero point 128, as int8."""
    s = packed.scheme
    codes = packed.codes().to(torch.int16) - 2 ** (s.bits - 1)
    t = {
        "weight": codes.to(torch.int8).contiguous(),
        "weight_scale": packed.scales.to(scale_dtype).reshape(-1, 1).contiguous(),
    }
    args = {
        "num_bits": 8,
        "type": "int",
        "symmetric": True,
        "strategy": "channel",
        "group_size": None,
        "dynamic": False,
        "actorder": None,
        "observer": "minmax",
        "observer_kwargs": {},
    }
    return t, args
