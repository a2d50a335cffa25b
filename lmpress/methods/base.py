"""What a method is: a pure function from a float weight (and statistics) to codes."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lmpress.packing.packed import PackedWeight
from lmpress.registry import Registry, validate_options


@dataclass
class QuantResult:
    """``codes [out, in]`` float32 integers, ``scale [P, G]`` and ``zero [P, G]`` float32."""

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor


@dataclass
class BlockLayer:
    """One linear of a block handed to a method's ``refine`` stage."""

    module: nn.Module
    name: str  # relative to the block
    weight: torch.Tensor  # float32 [out, in]: the float weight before quantization
    start: PackedWeight  # the first solution (``learned_round`` with objective="block")


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
    # Block-level second stage, run by the pipeline once every linear of a block has
    # been quantized by ``fn``: ``refine(block, layers, batches, targets, **options)``
    # (see :func:`lmpress.methods.learned_round.refine_block`); ``refines(options)``
    # says whether these options ask for it.
    refine: Callable[..., Any] | None = None
    refines: Callable[[dict[str, Any]], bool] | None = None

    def options(self, given: dict[str, Any] | None, name: str) -> dict[str, Any]:
        return validate_options(given, self.defaults, self.limits, f"method {name!r}")

    def uses_hessian(self, options: dict[str, Any]) -> bool:
        """Whether this method, with these (complete) options, needs calibration statistics."""
        nh = self.needs_hessian
        return bool(nh(options) if callable(nh) else nh)

    def uses_refine(self, options: dict[str, Any]) -> bool:
        """Whether this method, with these options, refines whole blocks after ``fn``."""
        return self.refine is not None and (self.refines is None or self.refines(options))


METHODS: Registry[MethodSpec] = Registry("method")


def register_method(
    name: str,
    needs_hessian: bool | Callable[[dict[str, Any]], bool],
    limits: dict[str, tuple[Callable[[Any], bool], str]] | None = None,
    refine: Callable[..., Any] | None = None,
    refines: Callable[[dict[str, Any]], bool] | None = None,
    **defaults: Any,
):
    def deco(fn: Callable[..., QuantResult]) -> Callable[..., QuantResult]:
        METHODS.register(name)(
            MethodSpec(fn, needs_hessian, defaults, limits or {}, refine, refines)
        )
        return fn

    return deco


def get_method(name: str) -> MethodSpec:
    return METHODS.get(name)
