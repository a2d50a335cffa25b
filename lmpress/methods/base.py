"""What a method is: a pure function from a float weight (and statistics) to codes."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from lmpress.registry import Registry, validate_options


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
    # a bool, or a function of the method's options (e.g. RTN needs data only with imatrix)
    needs_hessian: bool | Callable[[dict[str, Any]], bool]
    defaults: dict[str, Any] = field(default_factory=dict)
    # option name -> (predicate, what a valid value is), checked at the edge
    limits: dict[str, tuple[Callable[[Any], bool], str]] = field(default_factory=dict)

    def options(self, given: dict[str, Any] | None, name: str) -> dict[str, Any]:
        return validate_options(given, self.defaults, self.limits, f"method {name!r}")

    def uses_hessian(self, options: dict[str, Any]) -> bool:
        """Whether this method, with these (complete) options, needs calibration statistics."""
        nh = self.needs_hessian
        return bool(nh(options) if callable(nh) else nh)


METHODS: Registry[MethodSpec] = Registry("method")


def register_method(
    name: str,
    needs_hessian: bool | Callable[[dict[str, Any]], bool],
    limits: dict[str, tuple[Callable[[Any], bool], str]] | None = None,
    **defaults: Any,
):
    def deco(fn: Callable[..., QuantResult]) -> Callable[..., QuantResult]:
        METHODS.register(name)(MethodSpec(fn, needs_hessian, defaults, limits or {}))
        return fn

    return deco


def get_method(name: str) -> MethodSpec:
    return METHODS.get(name)
