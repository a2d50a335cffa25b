"""The kernel interface: how a ``QLinear`` turns packed tensors into ``x @ W.T``.

A kernel is registered by name in :data:`KERNELS`. ``prepare`` turns a
:class:`~lmpress.packing.packed.PackedWeight` into whatever the kernel reads at
run time (done once per module, lazily); calling the kernel computes the linear
layer from that state. ``available()`` says whether it can run here at all and
``supports(packed, device)`` whether it handles that weight there (its format,
scheme and components) and if not, why; ``auto`` picks the fastest kernel that
does, and any choice that cannot run falls back to the torch reference with the
reason.
"""

import warnings
from dataclasses import dataclass
from typing import Protocol

import torch

from lmpress.packing.packed import PackedWeight
from lmpress.registry import Registry


@dataclass(frozen=True)
class Support:
    """A kernel's answer to "can you run this weight here?": true, or false with a reason."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


YES = Support(True)


class Kernel(Protocol):
    name: str

    def available(self) -> bool: ...

    def supports(self, packed: PackedWeight, device: torch.device) -> Support: ...

    def prepare(self, packed: PackedWeight) -> object: ...

    def __call__(
        self, x: torch.Tensor, state: object, bias: torch.Tensor | None
    ) -> torch.Tensor: ...


KERNELS: Registry[Kernel] = Registry("kernel")
# Tried in this order by ``auto``; the torch reference always works.
AUTO_ORDER = ("cpu", "torch")


def get_kernel(name: str) -> Kernel:
    return KERNELS.get(name)


def select_kernel(name: str, packed: PackedWeight, device: torch.device) -> tuple[Kernel, str]:
    """The kernel to run ``packed`` on ``device`` and, when it is not the one asked for,
    why: ``name``, or for ``auto`` the first of :data:`AUTO_ORDER` that is available and
    supports the weight; the torch reference when none does (a named kernel that cannot
    run it falls back too, with a warning)."""
    if name != "auto":
        k = KERNELS.get(name)
        support = k.supports(packed, device) if k.available() else Support(False, "not built")
        if support:
            return k, ""
        warnings.warn(
            f"kernel {name!r} cannot run {packed.scheme.name}: {support.reason}; "
            "using the torch reference",
            stacklevel=3,
        )
        return KERNELS.get("torch"), f"{name}: {support.reason}"
    reasons = []
    for candidate in AUTO_ORDER:
        k = KERNELS.get(candidate)
        # what the weight needs first: a kernel that could not run it anyway is not asked
        # whether it is built (which warns when it is not)
        support = k.supports(packed, device)
        if support and not k.available():
            support = Support(False, "not available")
        if support:
            return k, "; ".join(reasons)
        reasons.append(f"{candidate}: {support.reason}")
    return KERNELS.get("torch"), "; ".join(reasons)
