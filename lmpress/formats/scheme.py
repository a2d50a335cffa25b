"""A scheme: number format + granularity + scale storage + symmetry.

Each format parses its own shorthand spellings (the integer format's are
``w<bits>[g<group>][a|s][:bf16][:fz]``: ``w8`` per output channel, ``w4g128`` groups
of 128 along the input dimension, ``w4gt`` one scale per tensor; see
:mod:`lmpress.formats.integer`). The full form is a dict, e.g. ``{"bits": 4,
"group_size": 128, "symmetric": false, "scale_dtype": "float16", "zero_format":
"int"}``, with ``"format"`` naming a registered format (default ``int``).

A scheme may also quantize the linear's input: an activation suffix (``w8a8``,
``w4g128a8``, ``nvfp4a4``; see :mod:`lmpress.formats.activation`), or ``"act"`` in
the dict form.
"""

from dataclasses import asdict, dataclass, replace
from functools import cached_property
from typing import Any, Literal

import torch

from lmpress.errors import LmpressError
from lmpress.formats.activation import ActScheme, act_for, split_act_suffix
from lmpress.formats.base import FORMATS, Format

Granularity = Literal["tensor", "channel", "group"]
# how a scale may be stored (each format says which it accepts): the torch dtype it is
# computed in before storage; "e8m0" is a power of two stored as its exponent byte
SCALE_DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float8_e4m3": torch.float8_e4m3fn,
    "e8m0": torch.float32,
}


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
    # the format's element variant where it has several (fp8 "e5m2", mxfp6 "e3m2")
    variant: str = ""
    # rows of a 2-D block of one scale (fp8b128: 128 x group_size blocks); 0: 1 row
    block_rows: int = 0
    # how the linear's input is quantized at run time (None: it stays float)
    act: ActScheme | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise LmpressError(
                f"format {self.format!r} unknown; known: {', '.join(FORMATS.names())}"
            )
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
        FORMATS.get(self.format).check_scheme(self)

    @cached_property
    def fmt(self) -> Format:
        """The scheme's number format, bound to it (see :class:`lmpress.formats.base.Format`)."""
        return FORMATS.get(self.format)(self)

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
        base = self.fmt.scheme_name()
        return base + self.act.suffix(self.format) if self.act else base

    @property
    def weight_only(self) -> "Scheme":
        """This scheme without its activation part (how the weight itself is stored)."""
        return replace(self, act=None) if self.act else self

    @property
    def float_zero(self) -> bool:
        return self.zero_format == "float"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        # defaults are left out, so that dicts stay readable by older versions
        for key, default in (
            ("zero_format", "int"),
            ("variant", ""),
            ("block_rows", 0),
            ("act", None),
        ):
            if d[key] == default:
                del d[key]
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
        for key, typ in (
            ("bits", int),
            ("group_size", int),
            ("symmetric", bool),
            ("block_rows", int),
            ("variant", str),
        ):
            if key in d and (
                not isinstance(d[key], typ) or (typ is int and isinstance(d[key], bool))
            ):
                raise LmpressError(f"scheme {key} must be a {typ.__name__}, got {d[key]!r}")
        if "group_size" in d and "granularity" not in d:
            d["granularity"] = "group" if d["group_size"] else "channel"
        if "bits" not in d:
            raise LmpressError("a scheme needs 'bits'")
        if d.get("act") is not None:
            d["act"] = ActScheme.from_dict(d["act"])
        return cls(**d)


def parse_scheme(spec: "str | dict[str, Any] | Scheme") -> Scheme:
    """Parse a shorthand name (``w4g128``), a dict, or pass a Scheme through."""
    if isinstance(spec, Scheme):
        return spec
    if isinstance(spec, dict):
        return Scheme.from_dict(spec)
    text = str(spec).strip().lower()
    scheme = _parse_weight(text)
    if scheme is not None:
        return scheme
    split = split_act_suffix(text)
    if split is not None:
        scheme = _parse_weight(split[0])
        if scheme is not None and split[1]["bits"] == 16 and "format" not in split[1]:
            return scheme  # "w4a16": the usual name of weight-only quantization
        if scheme is not None:
            return replace(scheme, act=act_for(scheme.format, split[1]))
    examples = "; ".join(
        f"{n}: {FORMATS.get(n).spellings()}" for n in FORMATS.names() if FORMATS.get(n).spellings()
    )
    raise LmpressError(
        f"cannot parse scheme {spec!r}; expected e.g. {examples}; any of them may end in "
        "an activation suffix (w8a8, w4g128a8, nvfp4a4)"
    )


def _parse_weight(text: str) -> Scheme | None:
    for name in FORMATS.names():
        scheme = FORMATS.get(name).parse(text)
        if scheme is not None:
            return scheme
    return None
