"""Matmul backends for packed weights, one registry; ``torch`` is the reference."""

from lmpress.kernels.reference import KERNELS, get_kernel

__all__ = ["KERNELS", "get_kernel"]
