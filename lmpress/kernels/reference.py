"""Reference kernel: dequantize the packed weight once, then a float32 matmul."""

import torch
import torch.nn.functional as F

from lmpress.kernels.base import KERNELS, YES, Support
from lmpress.packing.packed import PackedWeight


def dequant_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``x [..., in] @ weight.T + bias`` in float32, cast back to ``x``'s dtype."""
    y = F.linear(x.to(torch.float32), weight, None if bias is None else bias.to(torch.float32))
    return y.to(x.dtype)


class TorchKernel:
    """Works everywhere (any device, autograd); holds the float32 weight, so it uses
    as much memory as the float layer."""

    name = "torch"

    def available(self) -> bool:
        return True

    def supports(self, packed: PackedWeight, device: torch.device) -> Support:
        return YES

    def prepare(self, packed: PackedWeight) -> torch.Tensor:
        return packed.dequantize().to(packed.device)

    def __call__(self, x: torch.Tensor, state: torch.Tensor, bias: torch.Tensor | None):
        return dequant_linear(x, state, bias)


KERNELS.register("torch")(TorchKernel())
