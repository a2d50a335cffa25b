"""Matmul backends for packed weights, one registry; ``torch`` is the reference,
``cpu`` the C kernels that read packed codes directly, ``auto`` the best available."""

from lmpress.kernels import cpu, reference  # noqa: F401  (registers the kernels)
from lmpress.kernels.base import KERNELS, Kernel, get_kernel, select_kernel

__all__ = ["KERNELS", "Kernel", "get_kernel", "select_kernel"]
