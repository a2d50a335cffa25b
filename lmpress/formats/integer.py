"""The integer format ``int``: affine codes ``q`` in ``[0, 2**bits - 1]`` decoding to
``(q - z) * s``.

Symmetric schemes use the implicit zero point ``2**(bits-1)``; asymmetric ones store
a zero point per group, an integer packed at the code width or (``zero_format="float"``)
an fp16 value. Scales are fp16 or bf16. The numerics are the pure functions of
:mod:`lmpress.formats.affine`; this class binds them to a scheme.

Spellings: ``w<bits>[g<group>|gt][a|s][:bf16][:fz]``, e.g. ``w8`` (per output channel),
``w4g128`` (groups of 128 along the input), ``w4gt`` (one scale per tensor),
``w4g64s:bf16``, ``w3g64:fz``.
"""

import re
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from lmpress.errors import LmpressError
from lmpress.formats import affine
from lmpress.formats.base import Format, Params, register_format

if TYPE_CHECKING:
    from lmpress.formats.scheme import Scheme
    from lmpress.packing.components import Component

SUPPORTED_INT_BITS = (2, 3, 4, 5, 6, 8)

_SHORT = re.compile(
    r"^w(?P<bits>\d+)(?:g(?P<group>t|-?\d+))?(?P<sym>[as])?(?::(?P<dt>fp16|bf16))?(?P<fz>:fz)?$"
)
_SHORT_DTYPES = {"fp16": "float16", "bf16": "bfloat16", None: "float16"}


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` forward, identity backward."""
    return x + (torch.round(x) - x).detach()


@register_format("int")
class IntFormat(Format):
    """Unsigned integer codes with a scale and a zero point per group."""

    param_names = ("scale", "zero")
    traits = frozenset({"affine"})

    @property
    def bits(self) -> int:
        return self.scheme.bits

    @property
    def qmax(self) -> int:
        return (1 << self.scheme.bits) - 1

    @property
    def mid(self) -> int:
        """Implicit zero point of symmetric schemes."""
        return 1 << (self.scheme.bits - 1)

    # -- schemes -------------------------------------------------------------------
    @classmethod
    def check_scheme(cls, scheme: "Scheme") -> None:
        if scheme.bits not in SUPPORTED_INT_BITS:
            raise LmpressError(
                f"bits={scheme.bits} is not supported for integer codes; "
                f"choose one of {', '.join(map(str, SUPPORTED_INT_BITS))}"
            )
        if scheme.scale_dtype not in ("float16", "bfloat16"):
            raise LmpressError(f"integer codes store fp16 or bf16 scales, not {scheme.scale_dtype}")
        if scheme.variant or scheme.block_rows:
            raise LmpressError("integer codes have no element variants or 2-D blocks")
        if scheme.zero_format not in ("int", "float"):
            raise LmpressError(f"zero_format {scheme.zero_format!r} unknown; use int or float")
        if scheme.zero_format == "float" and scheme.symmetric:
            raise LmpressError("float zero points need an asymmetric scheme (drop the 's')")

    @classmethod
    def parse(cls, spec: str) -> "Scheme | None":
        from lmpress.formats.scheme import Scheme

        m = _SHORT.match(spec)
        if not m:
            return None
        common = {
            "bits": int(m["bits"]),
            "symmetric": m["sym"] == "s",
            "scale_dtype": _SHORT_DTYPES[m["dt"]],
            "zero_format": "float" if m["fz"] else "int",
        }
        group = m["group"]
        if group is None:
            return Scheme(granularity="channel", **common)
        if group == "t":
            return Scheme(granularity="tensor", **common)
        if int(group) <= 0:
            raise LmpressError(f"group size must be a positive integer in {spec!r}, e.g. w4g128")
        return Scheme(granularity="group", group_size=int(group), **common)

    @classmethod
    def spellings(cls) -> str:
        return "w8, w4g128, w3g64a, w4g128s, w8gt, w4g64:fz"

    def scheme_name(self) -> str:
        s = self.scheme
        g = {"tensor": "gt", "channel": ""}.get(s.granularity, f"g{s.group_size}")
        suffix = "s" if s.symmetric else ""
        dt = "" if s.scale_dtype == "float16" else ":bf16"
        fz = ":fz" if s.float_zero else ""
        return f"w{s.bits}{g}{suffix}{dt}{fz}"

    # -- numerics ------------------------------------------------------------------
    def choose_params(
        self, w: torch.Tensor, importance: torch.Tensor | None = None, search: bool = False
    ) -> Params:
        if search:
            scale, zero = affine.mse_qparams(w, self.scheme, importance)
        else:
            scale, zero = affine.minmax_qparams(w, self.scheme)
        return {"scale": scale, "zero": zero}

    def encode(
        self, w: torch.Tensor, params: Params, offset: torch.Tensor | float | None = None
    ) -> torch.Tensor:
        s, z = params["scale"], params["zero"]
        if offset is None:
            return affine.quantize_codes(w, s, z, self.qmax)
        return torch.clamp(torch.round(w / s + z + offset), 0, self.qmax)

    def encode_ste(
        self, w: torch.Tensor, params: Params, offset: torch.Tensor | float | None = None
    ) -> torch.Tensor:
        x = w / params["scale"] + params["zero"]
        if offset is not None:
            x = x + offset
        return torch.clamp(_round_ste(x), 0, self.qmax)

    def decode(self, codes: torch.Tensor, params: Params) -> torch.Tensor:
        return affine.dequantize_codes(codes, params["scale"], params["zero"])

    def params_from_range(self, lo: torch.Tensor, hi: torch.Tensor, ste: bool = False) -> Params:
        if self.scheme.symmetric:
            amax = torch.maximum(hi, -lo)
            s = amax / (self.mid - 1 if self.bits > 1 else 1)
            return {"scale": s.clamp_min(1e-10), "zero": torch.full_like(s, float(self.mid))}
        s = ((hi - lo) / self.qmax).clamp_min(1e-10)
        z = -lo / s
        if not self.scheme.float_zero:
            z = affine.integer_zero(z, self.qmax, ste)
        return {"scale": s, "zero": z}

    def round_params(self, params: Params, ste: bool = False) -> Params:
        """Parameters that must be integers (integer zero points) rounded, the rest as
        given: the grid a learned, still continuous scale is trained on."""
        out = dict(params)
        if "zero" in out and not (self.scheme.symmetric or self.scheme.float_zero):
            z = out["zero"]
            out["zero"] = affine.integer_zero(z, self.qmax, ste)
        return out

    def storable_params(self, params: Params) -> Params:
        out = dict(params)
        if "scale" in out:
            out["scale"] = affine.storable_scale(out["scale"], self.scheme)
        if "zero" in out and not self.scheme.symmetric:
            z = out["zero"]
            out["zero"] = (
                affine.storable_zero(z, self.scheme)
                if self.scheme.float_zero
                else affine.integer_zero(z, self.qmax)
            )
        return out

    def storage_problem(self, w: torch.Tensor) -> str | None:
        s = self.scheme
        dt = s.torch_scale_dtype
        lo, hi, amax = affine._extremes(w.float(), s)
        steps = (self.mid - 1 if self.bits > 1 else 1) if s.symmetric else self.qmax
        scale = (amax if s.symmetric else hi - lo) / steps
        info = torch.finfo(dt)
        name = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dt, str(dt))
        wide = replace(s, scale_dtype="bfloat16")
        fix = f"; quantize it as {wide.name} (bf16 scales)" if dt != torch.bfloat16 else ""
        if bool((scale > info.max).any()):
            return (
                f"has weights up to {float(amax.max()):.3g}, whose {s.name} scales would "
                f"exceed {name}'s largest value {info.max:.5g}{fix}"
            )
        smallest = 2.0**-24 if dt == torch.float16 else info.tiny
        # groups that matter next to the tensor's largest, whose grid would collapse to 0
        lost = (scale > 0) & (scale < smallest) & (amax >= 1e-3 * amax.max())
        if bool(lost.any()):
            return (
                f"has groups of weights as small as {float(amax[lost].min()):.3g}, whose "
                f"{s.name} scales would fall below {name}'s smallest value {smallest:.3g} "
                f"and decode to 0{fix}"
            )
        return None

    # -- storage -------------------------------------------------------------------
    def components(self, out_features: int, in_features: int) -> "dict[str, Component]":
        from lmpress.packing.bits import packed_row_bytes
        from lmpress.packing.components import Component

        s = self.scheme
        rows = 1 if s.granularity == "tensor" else out_features
        g = affine.num_groups(in_features, s)
        comps = {
            "qweight": Component(
                (out_features, packed_row_bytes(in_features, s.bits)), torch.uint8, "codes"
            ),
            "scales": Component((rows, g), s.torch_scale_dtype, "params"),
        }
        if s.float_zero:
            comps["qzeros"] = Component((rows, g), torch.float16, "params")
        elif not s.symmetric:
            comps["qzeros"] = Component(
                (1, packed_row_bytes(rows * g, s.bits)), torch.uint8, "params"
            )
        return comps

    def pack(self, codes: torch.Tensor, params: Params) -> dict[str, torch.Tensor]:
        from lmpress.packing.bits import pack_codes

        s = self.scheme
        out = {
            "qweight": pack_codes(codes.to(torch.int64), s.bits),
            "scales": params["scale"].to(s.torch_scale_dtype).contiguous(),
        }
        zero = params["zero"]
        if s.float_zero:
            out["qzeros"] = zero.to(torch.float16).contiguous()
        elif not s.symmetric:
            # flattened row-major so that per-channel zeros are not padded row by row
            out["qzeros"] = pack_codes(zero.to(torch.int64).reshape(1, -1), s.bits)
        return out

    def unpack_codes(self, tensors: dict[str, torch.Tensor], in_features: int) -> torch.Tensor:
        from lmpress.packing.bits import unpack_codes

        return unpack_codes(tensors["qweight"], self.bits, in_features)

    def unpack_params(self, tensors: dict[str, torch.Tensor]) -> Params:
        from lmpress.packing.bits import unpack_codes

        scales = tensors["scales"]
        qzeros = tensors.get("qzeros")
        if qzeros is None:
            zero = torch.full(scales.shape, float(self.mid))
        elif self.scheme.float_zero:
            zero = qzeros.float()
        else:
            p, g = scales.shape
            zero = unpack_codes(qzeros, self.bits, p * g).reshape(p, g).float()
        return {"scale": scales.float(), "zero": zero}

    def concat_params(self, parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        from lmpress.packing.bits import pack_codes

        out = {"scales": torch.cat([p["scales"] for p in parts])}
        if "qzeros" in parts[0]:
            if self.scheme.float_zero:
                out["qzeros"] = torch.cat([p["qzeros"] for p in parts])
            else:  # one flat stream: re-packed
                z = torch.cat([self.unpack_params(p)["zero"] for p in parts]).to(torch.int64)
                out["qzeros"] = pack_codes(z.reshape(1, -1), self.bits)
        return out
