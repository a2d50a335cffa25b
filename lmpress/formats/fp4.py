"""FP4 E2M1 codes with an fp16 (or bf16) scale per group of any size (LLM-FP4's
element format, Liu et al. 2023, without its per-channel exponent bias).

Spellings: ``fp4g32``, ``fp4g128``, ``fp4`` (per channel), ``fp4g64:bf16``.
"""

import re
from typing import TYPE_CHECKING

import torch

from lmpress.errors import LmpressError
from lmpress.formats.base import register_format
from lmpress.formats.grid import GridFormat, parse_group
from lmpress.formats.minifloat import E2M1, minifloat_values

if TYPE_CHECKING:
    from lmpress.formats.scheme import Scheme

_SHORT = re.compile(r"^fp4(?P<g>g\d+|gt)?(?::(?P<dt>fp16|bf16))?$")
DTYPES = {None: "float16", "fp16": "float16", "bf16": "bfloat16"}


@register_format("fp4")
class FP4Format(GridFormat):
    """E2M1 codes (sign, 2 exponent bits, 1 mantissa bit) times a per-group scale."""

    @classmethod
    def check_scheme(cls, scheme: "Scheme") -> None:
        if scheme.bits != 4:
            raise LmpressError(f"fp4 codes have 4 bits, not {scheme.bits}")
        super().check_scheme(scheme)

    @classmethod
    def parse(cls, spec: str) -> "Scheme | None":
        return parse_simple(spec, _SHORT, cls.name, 4)

    @classmethod
    def spellings(cls) -> str:
        return "fp4g32, fp4g128, fp4g64:bf16"

    def scheme_name(self) -> str:
        return f"fp4{self._group_suffix()}{self._dtype_suffix()}"

    def levels(self) -> torch.Tensor:
        return minifloat_values(E2M1)


def parse_simple(spec: str, pattern: re.Pattern, fmt: str, bits: int) -> "Scheme | None":
    """A ``<name>[g<n>][:fp16|:bf16]`` spelling (group ``g``, dtype ``dt`` in ``pattern``)."""
    from lmpress.formats.scheme import Scheme

    m = pattern.match(spec)
    if not m:
        return None
    fields = parse_group(m["g"] or "")
    if fields is None:
        raise LmpressError(f"cannot read the group size of {spec!r}; e.g. {fmt}g64")
    return Scheme(bits=bits, format=fmt, symmetric=True, scale_dtype=DTYPES[m["dt"]], **fields)
