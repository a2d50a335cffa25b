"""Reference kernel: dequantize the packed weight, then a float32 matmul."""

from collections.abc import Callable

import torch
import torch.nn.functional as F

from lmpress.registry import Registry

Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
KERNELS: Registry[Kernel] = Registry("kernel")


@KERNELS.register("torch")
def dequant_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``x [..., in] @ weight.T + bias`` in float32, cast back to ``x``'s dtype."""
    y = F.linear(x.to(torch.float32), weight, None if bias is None else bias.to(torch.float32))
    return y.to(x.dtype)


def get_kernel(name: str = "torch") -> Kernel:
    return KERNELS.get(name)
