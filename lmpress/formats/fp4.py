"""FP4 E2M1 codes with an fp16 (or bf16) scale per group of any size (LLM-FP4's
element format, Liu et al. 2023, without its per-channel exponent bias).

Spellings: ``fp4g32``, ``fp4g128``, ``fp4`` (per channel), ``fp4g64:bf16``.
"""

import torch

from lmpress.formats.base import register_format
from lmpress.formats.grid import ScaledGridFormat
from lmpress.formats.minifloat import E2M1, minifloat_values


@register_format("fp4")
class FP4Format(ScaledGridFormat):
    """E2M1 codes (sign, 2 exponent bits, 1 mantissa bit) times a per-group scale."""

    prefix = "fp4"
    examples = "fp4g32, fp4g128, fp4g64:bf16"

    def levels(self) -> torch.Tensor:
        return minifloat_values(E2M1)
