"""Small floating-point element formats as value tables, and nearest-value rounding.

A minifloat with ``e`` exponent and ``m`` mantissa bits has codes ``s | exponent |
mantissa`` (sign in the top bit) of ``1 + e + m`` bits; :func:`minifloat_values` lists
the value of every code, so that encoding is "nearest entry of a table" and decoding a
gather, for the element formats of FP8 (E4M3, E5M2; OCP 8-bit floating point
specification), MX (OCP Microscaling Formats v1.0: E2M1, E2M3, E3M2, E4M3) and NVFP4
(E2M1). Codes a format never produces (NaN, infinities) hold NaN.
"""

import math
from dataclasses import dataclass
from functools import cache

import torch


@dataclass(frozen=True)
class Minifloat:
    """An element format: ``exp`` and ``man`` bits, its bias, and which top codes are
    special: ``"ieee"`` (all-ones exponent = inf/NaN, E5M2), ``"fn"`` (only the all-ones
    pattern is NaN, E4M3FN), ``"none"`` (every code finite: the MX 4- and 6-bit types)."""

    name: str
    exp: int
    man: int
    special: str

    @property
    def bits(self) -> int:
        return 1 + self.exp + self.man

    @property
    def bias(self) -> int:
        return (1 << (self.exp - 1)) - 1

    @property
    def max(self) -> float:
        """The largest finite value."""
        v = minifloat_values(self)
        return float(v[torch.isfinite(v)].max())

    @property
    def emax(self) -> int:
        """Exponent of the largest finite value (OCP MX's ``emax_elem``)."""
        return math.floor(math.log2(self.max))


E4M3 = Minifloat("e4m3", 4, 3, "fn")
E5M2 = Minifloat("e5m2", 5, 2, "ieee")
E2M1 = Minifloat("e2m1", 2, 1, "none")
E2M3 = Minifloat("e2m3", 2, 3, "none")
E3M2 = Minifloat("e3m2", 3, 2, "none")


@cache
def _values(fmt: Minifloat) -> tuple[float, ...]:
    out = []
    top = (1 << fmt.exp) - 1
    for code in range(1 << fmt.bits):
        sign = -1.0 if code >> (fmt.exp + fmt.man) else 1.0
        e = (code >> fmt.man) & top
        m = code & ((1 << fmt.man) - 1)
        if fmt.special == "ieee" and e == top:
            out.append(math.nan)
            continue
        if fmt.special == "fn" and e == top and m == (1 << fmt.man) - 1:
            out.append(math.nan)
            continue
        if e == 0:
            v = m / (1 << fmt.man) * 2.0 ** (1 - fmt.bias)
        else:
            v = (1 + m / (1 << fmt.man)) * 2.0 ** (e - fmt.bias)
        out.append(sign * v)
    return tuple(out)


def minifloat_values(fmt: Minifloat) -> torch.Tensor:
    """Value of every code of ``fmt``, float32 ``[2**bits]`` (NaN for special codes)."""
    return torch.tensor(_values(fmt), dtype=torch.float32)


class NearestTable:
    """Nearest-entry rounding onto one fixed table of values.

    ``values [V]`` float32 (NaN entries are never chosen; of equal values the lowest
    code wins, so ``-0`` of a sign-magnitude format is not produced).
    """

    def __init__(self, values: torch.Tensor) -> None:
        self.values = values.to(torch.float32)
        lowest: dict[float, int] = {}
        for code, v in enumerate(self.values.tolist()):
            if math.isfinite(v):
                lowest.setdefault(v + 0.0, code)  # +0.0: -0 and +0 are one entry
        ordered = sorted(lowest)
        self.sorted = torch.tensor(ordered, dtype=torch.float32)
        self.codes = torch.tensor([lowest[v] for v in ordered], dtype=torch.int64)
        self.mids = (self.sorted[1:] + self.sorted[:-1]) / 2

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes (float32 integers, ``x``'s shape) of the entries nearest ``x`` (float32);
        values beyond the table saturate to its ends, ties go to the larger value."""
        if len(self.mids) <= 32:
            # a few comparisons beat bucketize's per-element binary search; >= keeps its
            # right=True ties (toward the larger value)
            idx = torch.zeros(x.shape, dtype=torch.uint8, device=x.device)
            for m in self.mids.tolist():
                idx += x >= m
        else:
            idx = torch.bucketize(x.contiguous(), self.mids.to(x.device), right=True)
        return self.codes.to(x.device)[idx.long()].to(torch.float32)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Values (float32) of ``codes`` (any integer-valued tensor)."""
        return self.values.to(codes.device)[codes.long()]


def e8m0_exponent(scale: torch.Tensor) -> torch.Tensor:
    """The E8M0 byte (biased exponent, float32 integers in ``[0, 254]``) of power-of-two
    ``scale`` (float32, any shape)."""
    return (torch.log2(scale).round() + 127).clamp(0, 254)


def e8m0_scale(exponent: torch.Tensor) -> torch.Tensor:
    """Float32 ``2 ** (exponent - 127)`` of E8M0 bytes (any integer-valued tensor)."""
    return torch.exp2(exponent.to(torch.float32) - 127)
