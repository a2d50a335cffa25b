"""A scheme: number format + granularity + scale storage + symmetry.

Shorthand names: ``w<bits>[g<group>][a|s][:bf16][:fz]``. ``w8`` is per output
channel, ``w4g128`` is groups of 128 along the input dimension, ``w4gt`` one
scale per tensor. The letter picks asymmetric (``a``, the default) or symmetric
(``s``); ``:bf16`` stores scales in bfloat16 instead of float16; ``:fz`` stores
float zero points (in the scale dtype, as HQQ does) instead of integers packed at
the code width. The full form is a dict, e.g. ``{"bits": 4, "group_size": 128,
"symmetric": false, "scale_dtype": "float16", "zero_format": "int"}``.
"""

import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from lmpress.errors import LmpressError
from lmpress.formats.integer import IntFormat

Granularity = Literal["tensor", "channel", "group"]
SCALE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
_SHORT = re.compile(
    r"^w(?P<bits>\d+)(?:g(?P<group>t|-?\d+))?(?P<sym>[as])?(?::(?P<dt>fp16|bf16))?(?P<fz>:fz)?$"
)
_SHORT_DTYPES = {"fp16": "float16", "bf16": "bfloat16", None: "float16"}


@dataclass(frozen=True)
class Scheme:
    """How one weight matrix ``[out_features, in_features]`` is quantized."""

    bits: int
    granularity: Granularity = "channel"
    group_size: int = 0
    symmetric: bool = False
    scale_dtype: str = "float16"
    format: str = "int"
    # "int": zero points are integers in [0, qmax] packed at the code width;
    # "float": stored in the scale dtype, so the grid can shift by a fraction of a step.
    zero_format: str = "int"

    def __post_init__(self) -> None:
        IntFormat(self.bits)  # validates bits
        if self.granularity not in ("tensor", "channel", "group"):
            raise LmpressError(
                f"granularity {self.granularity!r} unknown; use tensor, channel or group"
            )
        if self.granularity == "group" and self.group_size <= 0:
            raise LmpressError(
                f"group size must be a positive integer, got {self.group_size}; "
                "use e.g. w4g128, or w4 for per-channel"
            )
        if self.granularity != "group" and self.group_size != 0:
            raise LmpressError("group_size is only meaningful with granularity 'group'")
        if self.scale_dtype not in SCALE_DTYPES:
            raise LmpressError(
                f"scale_dtype {self.scale_dtype!r} unknown; use {', '.join(SCALE_DTYPES)}"
            )
        if self.zero_format not in ("int", "float"):
            raise LmpressError(f"zero_format {self.zero_format!r} unknown; use int or float")
        if self.zero_format == "float" and self.symmetric:
            raise LmpressError("float zero points need an asymmetric scheme (drop the 's')")
        if self.format != "int":
            raise LmpressError(f"format {self.format!r} is not supported yet; use 'int'")

    @property
    def fmt(self) -> IntFormat:
        return IntFormat(self.bits)

    @property
    def torch_scale_dtype(self) -> torch.dtype:
        return SCALE_DTYPES[self.scale_dtype]

    def group_len(self, in_features: int) -> int:
        """Columns per group for a matrix with ``in_features`` columns (last may be partial)."""
        if self.granularity == "group":
            return self.group_size
        return in_features

    def check_fits(self, in_features: int, name: str = "module") -> None:
        """Raise if the group size cannot apply to a matrix of this width."""
        if self.granularity == "group" and self.group_size > in_features:
            raise LmpressError(
                f"group size {self.group_size} is larger than the input dimension "
                f"{in_features} of {name}; choose a group size <= {in_features}"
            )

    @property
    def name(self) -> str:
        g = {"tensor": "gt", "channel": ""}.get(self.granularity, f"g{self.group_size}")
        suffix = "s" if self.symmetric else ""
        dt = "" if self.scale_dtype == "float16" else ":bf16"
        fz = ":fz" if self.float_zero else ""
        return f"w{self.bits}{g}{suffix}{dt}{fz}"

    @property
    def float_zero(self) -> bool:
        return self.zero_format == "float"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["zero_format"] == "int":
            del d["zero_format"]  # the default: dicts stay readable by older versions
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Scheme":
        allowed = set(cls.__dataclass_fields__)
        unknown = set(d) - allowed
        if unknown:
            raise LmpressError(
                f"unknown scheme key(s) {sorted(unknown)}; allowed: {sorted(allowed)}"
            )
        d = dict(d)
        for key, typ in (("bits", int), ("group_size", int), ("symmetric", bool)):
            if key in d and (
                not isinstance(d[key], typ) or (typ is int and isinstance(d[key], bool))
            ):
                raise LmpressError(f"scheme {key} must be a {typ.__name__}, got {d[key]!r}")
        if "group_size" in d and "granularity" not in d:
            d["granularity"] = "group" if d["group_size"] else "channel"
        if "bits" not in d:
            raise LmpressError("a scheme needs 'bits'")
        return cls(**d)


def parse_scheme(spec: "str | dict[str, Any] | Scheme") -> Scheme:
    """Parse a shorthand name (``w4g128``), a dict, or pass a Scheme through."""
    if isinstance(spec, Scheme):
        return spec
    if isinstance(spec, dict):
        return Scheme.from_dict(spec)
    m = _SHORT.match(str(spec).strip().lower())
    if not m:
        raise LmpressError(
            f"cannot parse scheme {spec!r}; expected e.g. w8, w4g128, w3g64a, w4g128s, w8gt, "
            "w4g64:fz"
        )
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
