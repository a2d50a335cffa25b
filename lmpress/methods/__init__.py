"""Quantization methods: each file registers one method in ``METHODS``."""

from lmpress.methods.base import METHODS, MethodSpec, QuantResult, get_method
from lmpress.methods import gptq, rtn  # noqa: F401  (registration)

__all__ = ["METHODS", "MethodSpec", "QuantResult", "get_method"]
