"""Quantization methods: each file registers one method in ``METHODS``."""

from lmpress.methods import gptq, hqq, leanquant, learned_round, rtn  # noqa: F401  (registration)
from lmpress.methods.base import METHODS, MethodSpec, QuantResult, get_method

__all__ = ["METHODS", "MethodSpec", "QuantResult", "get_method"]
