"""Quantized keys and values: what the attention reads back from a quantized KV cache.

Every attention call quantizes its keys and values (after the rotary embedding, as a
runtime stores them) per token and per head, then attends with them: the perplexity of
a model with a quantized cache. Spellings: ``kv8`` / ``kv4`` (integers, asymmetric,
one scale and offset per token and head), ``kvfp8`` (E4M3, one scale per token and
head); a trailing ``h`` (``kv4h``) rotates queries and keys by a Hadamard matrix of
the head size first (``(q H)(k H)^T = q k^T``), which spreads a key's outlier channels
before it is quantized (QuaRot's online key rotation). Quantizing the same row twice
gives the same values, so keys already in a cache stay what they were.

The hook is transformers' attention interface: the model's attention implementation
is swapped for one that quantizes, then calls the original (``sdpa`` or ``eager``).
"""

import re
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from lmpress.errors import LmpressError
from lmpress.formats.activation import FP8_MAX
from lmpress.transforms.hadamard import rotate

_SPELLING = re.compile(r"^kv(?P<fmt>fp)?(?P<bits>\d+)(?P<h>h)?$")
PREFIX = "lmpress_kv_"
BASES = ("sdpa", "eager")


@dataclass(frozen=True)
class KVScheme:
    """How keys and values ``[batch, heads, seq, head_dim]`` are stored."""

    format: str = "int"  # "int" or "fp8"
    bits: int = 8
    rotate_keys: bool = False

    def __post_init__(self) -> None:
        if self.format not in ("int", "fp8"):
            raise LmpressError(f"kv-cache format {self.format!r} unknown; use int or fp8")
        if self.format == "fp8" and self.bits != 8:
            raise LmpressError("an fp8 kv cache has 8 bits")
        if self.format == "int" and not 2 <= self.bits <= 8:
            raise LmpressError(f"an integer kv cache has 2 to 8 bits, not {self.bits}")

    @property
    def name(self) -> str:
        return (
            f"kv{'fp' if self.format == 'fp8' else ''}{self.bits}{'h' if self.rotate_keys else ''}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_kv(spec: "str | dict[str, Any] | KVScheme") -> KVScheme:
    """``kv8``, ``kv4h``, ``kvfp8`` or a dict of :class:`KVScheme`'s fields."""
    if isinstance(spec, KVScheme):
        return spec
    if isinstance(spec, dict):
        unknown = set(spec) - set(KVScheme.__dataclass_fields__)
        if unknown:
            raise LmpressError(
                f"unknown kv_cache key(s) {sorted(unknown)}; allowed: "
                f"{sorted(KVScheme.__dataclass_fields__)}"
            )
        return KVScheme(**spec)
    m = _SPELLING.match(str(spec).strip().lower())
    if not m:
        raise LmpressError(
            f"cannot parse kv-cache scheme {spec!r}; expected kv8, kv4, kv4h or kvfp8"
        )
    return KVScheme("fp8" if m["fmt"] else "int", int(m["bits"]), bool(m["h"]))


def quantize_kv(x: torch.Tensor, kv: KVScheme) -> torch.Tensor:
    """``x [..., head_dim]`` quantized per row and dequantized (``x``'s dtype).

    Integers: ``q = round((x - lo) / s)`` in ``[0, 2**bits - 1]`` with ``s = (hi - lo) /
    (2**bits - 1)`` from the row's range; fp8: E4M3 of ``x / s``, ``s = amax / 448``.
    """
    xf = x.to(torch.float32)
    if kv.format == "fp8":
        s = xf.abs().amax(-1, keepdim=True) / FP8_MAX
        s = torch.where(s > 0, s, torch.ones_like(s))
        q = (xf / s).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).to(torch.float32)
        return (q * s).to(x.dtype)
    lo, hi = xf.amin(-1, keepdim=True), xf.amax(-1, keepdim=True)
    qmax = 2**kv.bits - 1
    s = (hi - lo) / qmax
    s = torch.where(s > 0, s, torch.ones_like(s))
    q = torch.round((xf - lo) / s).clamp_(0, qmax)
    return (q * s + lo).to(x.dtype)


def _quantized_attention(base: str):
    def attend(module: nn.Module, query, key, value, attention_mask, **kwargs):
        kv: KVScheme | None = getattr(module, "lmpress_kv", None)
        if kv is not None:
            if kv.rotate_keys:
                hd = query.shape[-1]
                query, key = rotate(query, hd), rotate(key, hd)
            key, value = quantize_kv(key, kv), quantize_kv(value, kv)
        return ALL_ATTENTION_FUNCTIONS[base](module, query, key, value, attention_mask, **kwargs)

    return attend


for _base in BASES:
    AttentionInterface.register(PREFIX + _base, _quantized_attention(_base))
    AttentionMaskInterface.register(PREFIX + _base, ALL_MASK_ATTENTION_FUNCTIONS[_base])


def _attention_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if hasattr(m, "k_proj") and hasattr(m, "v_proj")]


def install_kv_quant(model: nn.Module, kv: KVScheme) -> int:
    """Quantize ``model``'s keys and values by ``kv`` from now on; returns the number of
    attention modules that do. Families with a fused qkv projection are refused."""
    mods = _attention_modules(model)
    if not mods:
        raise LmpressError(
            f"kv-cache quantization needs attention modules with k_proj and v_proj; "
            f"{getattr(model.config, 'model_type', type(model).__name__)!r} has none"
        )
    impl = model.config._attn_implementation or "eager"
    base = impl.removeprefix(PREFIX)
    if base not in BASES:
        raise LmpressError(
            f"kv-cache quantization runs on the sdpa or eager attention, not {impl!r}; "
            "load the model with attn_implementation='sdpa'"
        )
    for m in mods:
        m.lmpress_kv = kv
    model.config._attn_implementation = PREFIX + base
    return len(mods)


def kv_scheme_of(model: nn.Module) -> KVScheme | None:
    """The kv-cache scheme installed in ``model``, if any."""
    for m in _attention_modules(model):
        kv = getattr(m, "lmpress_kv", None)
        if kv is not None:
            return kv
    return None
