"""OCP Microscaling (MX) formats: blocks of 32 elements sharing one power-of-two scale
stored as an E8M0 byte (OCP Microscaling Formats Specification v1.0; Rouhani et al.
2023, "Microscaling Data Formats for Deep Learning").

Spellings: ``mxfp4`` (E2M1), ``mxfp6`` (E2M3), ``mxfp6:e3m2``, ``mxfp8`` (E4M3),
``mxfp8:e5m2``. Min-max follows the specification: the shared exponent is
``floor(log2(amax)) - emax_elem``, so the largest element may saturate; the search
also tries one exponent either side.
"""

import math
import re
from typing import TYPE_CHECKING, ClassVar

import torch

from lmpress.errors import LmpressError
from lmpress.formats.base import register_format
from lmpress.formats.grid import GridFormat
from lmpress.formats.minifloat import E2M1, E2M3, E3M2, E4M3, E5M2, Minifloat, minifloat_values

if TYPE_CHECKING:
    from lmpress.formats.scheme import Scheme

BLOCK = 32
_SHORT = re.compile(r"^mxfp(?P<bits>[468])(?::(?P<v>e\dm\d))?$")
# (bits, variant) -> element; the first variant of each width is its default
ELEMENTS: dict[tuple[int, str], Minifloat] = {
    (4, ""): E2M1,
    (6, ""): E2M3,
    (6, "e3m2"): E3M2,
    (8, ""): E4M3,
    (8, "e5m2"): E5M2,
}
DEFAULT_VARIANT = {4: "e2m1", 6: "e2m3", 8: "e4m3"}


@register_format("mx")
class MXFormat(GridFormat):
    """MX element codes times a shared power-of-two scale per block of 32."""

    scale_dtypes: ClassVar[tuple[str, ...]] = ("e8m0",)
    granularities: ClassVar[tuple[str, ...]] = ("group",)

    @classmethod
    def check_scheme(cls, scheme: "Scheme") -> None:
        if (scheme.bits, scheme.variant) not in ELEMENTS:
            known = ", ".join(f"mxfp{b}" + (f":{v}" if v else "") for b, v in ELEMENTS)
            raise LmpressError(f"no MX element of {scheme.bits} bits {scheme.variant!r}: {known}")
        if scheme.group_size != BLOCK:
            raise LmpressError(f"MX blocks have {BLOCK} elements, not {scheme.group_size}")
        super().check_scheme(scheme)

    @classmethod
    def parse(cls, spec: str) -> "Scheme | None":
        from lmpress.formats.scheme import Scheme

        m = _SHORT.match(spec)
        if not m:
            return None
        bits = int(m["bits"])
        v = m["v"] or ""
        if v == DEFAULT_VARIANT[bits]:
            v = ""
        return Scheme(
            bits=bits,
            granularity="group",
            group_size=BLOCK,
            symmetric=True,
            scale_dtype="e8m0",
            format="mx",
            variant=v,
        )

    @classmethod
    def spellings(cls) -> str:
        return "mxfp4, mxfp6, mxfp6:e3m2, mxfp8"

    def scheme_name(self) -> str:
        v = self.scheme.variant
        return f"mxfp{self.scheme.bits}" + (f":{v}" if v else "")

    @property
    def element(self) -> Minifloat:
        return ELEMENTS[(self.scheme.bits, self.scheme.variant)]

    def levels(self) -> torch.Tensor:
        return minifloat_values(self.element)

    def scale_candidates(self, amax: torch.Tensor, search: bool) -> list[torch.Tensor]:
        tiny = torch.finfo(torch.float32).tiny
        e0 = torch.floor(torch.log2(amax.clamp_min(tiny))) - self.element.emax
        e0 = torch.where(amax > 0, e0, torch.zeros_like(e0))
        shifts = (-1, 0, 1) if search else (0,)
        return [self.storable_scale(torch.exp2(e0 + d)) for d in shifts]


def spec_exponent(amax: float, element: Minifloat) -> int:
    """The OCP shared exponent ``floor(log2(amax)) - emax_elem`` of one block (for tests)."""
    return math.floor(math.log2(amax)) - element.emax
