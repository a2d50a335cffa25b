"""What a method is: a pure function from a float weight (and statistics) to codes."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from lmpress.errors import LmpressError
from lmpress.registry import Registry


@dataclass
class QuantResult:
    """``codes [out, in]`` float32 integers, ``scale [P, G]`` and ``zero [P, G]`` float32."""

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor


@dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    ``fn(w, scheme, hessian, **options) -> QuantResult`` where ``w`` is float32
    ``[out, in]`` and ``hessian`` float32 ``[in, in]`` (``X^T X / n`` over the
    calibration inputs of the layer) or ``None`` when ``needs_hessian`` is false.
    """

    fn: Callable[..., QuantResult]
    needs_hessian: bool
    defaults: dict[str, Any] = field(default_factory=dict)

    def options(self, given: dict[str, Any] | None, name: str) -> dict[str, Any]:
        given = given or {}
        unknown = set(given) - set(self.defaults)
        if unknown:
            raise LmpressError(
                f"unknown option(s) {sorted(unknown)} for method {name!r}; "
                f"allowed: {sorted(self.defaults) or 'none'}"
            )
        return {**self.defaults, **given}


METHODS: Registry[MethodSpec] = Registry("method")


def register_method(name: str, needs_hessian: bool, **defaults: Any):
    def deco(fn: Callable[..., QuantResult]) -> Callable[..., QuantResult]:
        METHODS.register(name)(MethodSpec(fn, needs_hessian, defaults))
        return fn

    return deco


def get_method(name: str) -> MethodSpec:
    return METHODS.get(name)
