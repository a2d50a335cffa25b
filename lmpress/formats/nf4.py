"""NormalFloat-4: 16 values at the quantiles of a standard normal, scaled by each
group's absolute maximum (Dettmers et al. 2023, "QLoRA", the table of its appendix E,
as bitsandbytes ships it).

Spellings: ``nf4g64`` (bitsandbytes' default block), ``nf4g128``, ``nf4g64:bf16``.
"""

from typing import TYPE_CHECKING

import torch

from lmpress.formats.base import register_format
from lmpress.formats.grid import ScaledGridFormat

if TYPE_CHECKING:
    pass


# QLoRA's NF4 levels, in code order (code 7 is exactly 0)
NF4_LEVELS = (
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
)


@register_format("nf4")
class NF4Format(ScaledGridFormat):
    """NF4 codes times a per-group absmax scale."""

    prefix = "nf4"
    examples = "nf4g64, nf4g128"

    def levels(self) -> torch.Tensor:
        return torch.tensor(NF4_LEVELS, dtype=torch.float32)
