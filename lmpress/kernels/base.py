"""The kernel interface: how a ``QLinear`` turns packed tensors into ``x @ W.T``.

A kernel is registered by name in :data:`KERNELS`. ``prepare`` turns a
:class:`~lmpress.packing.packed.PackedWeight` into whatever the kernel reads at
run time (done once per module, lazily); calling the kernel computes the linear
layer from that state. ``available()`` says whether it can run here at all and
``supports(scheme)`` whether it handles a scheme; ``auto`` picks the fastest
kernel that does.
"""

from typing import Protocol

import torch

from lmpress.formats.scheme import Scheme
from lmpress.packing.packed import PackedWeight
from lmpress.registry import Registry


class Kernel(Protocol):
    name: str

    def available(self) -> bool: ...

    def supports(self, scheme: Scheme) -> bool: ...

    def prepare(self, packed: PackedWeight) -> object: ...

    def __call__(
        self, x: torch.Tensor, state: object, bias: torch.Tensor | None
    ) -> torch.Tensor: ...


KERNELS: Registry[Kernel] = Registry("kernel")
# Tried in this order by ``auto``; the torch reference always works.
AUTO_ORDER = ("cpu", "torch")


def get_kernel(name: str) -> Kernel:
    return KERNELS.get(name)


def select_kernel(name: str, scheme: Scheme, device: torch.device) -> Kernel:
    """The kernel called ``name``, or for ``auto`` the first of :data:`AUTO_ORDER` that
    runs on ``device`` and supports ``scheme``."""
    if name != "auto":
        return KERNELS.get(name)
    for candidate in AUTO_ORDER:
        k = KERNELS.get(candidate)
        if candidate == "cpu" and device.type != "cpu":
            continue
        if k.available() and k.supports(scheme):
            return k
    return KERNELS.get("torch")
