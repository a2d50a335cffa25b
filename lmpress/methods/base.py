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
    # option name -> (predicate, what a valid value is), checked at the edge
    limits: dict[str, tuple[Callable[[Any], bool], str]] = field(default_factory=dict)

    def options(self, given: dict[str, Any] | None, name: str) -> dict[str, Any]:
        given = given or {}
        unknown = set(given) - set(self.defaults)
        if unknown:
            raise LmpressError(
                f"unknown option(s) {sorted(unknown)} for method {name!r}; "
                f"allowed: {sorted(self.defaults) or 'none'}"
            )
        for key, value in given.items():
            want = type(self.defaults[key])
            ok_type = isinstance(value, want) and not (want is not bool and isinstance(value, bool))
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                ok_type = True
            if not ok_type:
                raise LmpressError(
                    f"option {key}={value!r} of method {name!r} must be a {want.__name__}"
                )
            if key in self.limits and not self.limits[key][0](value):
                raise LmpressError(
                    f"option {key}={value!r} of method {name!r} is out of range: "
                    f"{self.limits[key][1]}"
                )
        return {**self.defaults, **given}


METHODS: Registry[MethodSpec] = Registry("method")


def register_method(
    name: str,
    needs_hessian: bool,
    limits: dict[str, tuple[Callable[[Any], bool], str]] | None = None,
    **defaults: Any,
):
    def deco(fn: Callable[..., QuantResult]) -> Callable[..., QuantResult]:
        METHODS.register(name)(MethodSpec(fn, needs_hessian, defaults, limits or {}))
        return fn

    return deco


def get_method(name: str) -> MethodSpec:
    return METHODS.get(name)
