"""What a method is: a pure function from a float weight (and statistics) to codes.

A method is registered with :func:`register_method`. It declares

- its options: the keyword defaults of its function, stated once there (``limits``
  adds the valid ranges, checked at the edge);
- what the pipeline must provide (:class:`Needs`, a constant or a function of the
  options): the layer's input Hessian, GuidedQuant's end-loss-weighted Hessians, a
  block-level refinement stage with the float block's outputs as targets;
- the format operations it rounds through (``format_ops``, names of
  :class:`lmpress.formats.base.Format` methods): a format without one of them is
  refused with a one-line error before any work starts.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lmpress.formats.base import Params, require_ops
from lmpress.formats.scheme import Scheme
from lmpress.packing.packed import PackedWeight
from lmpress.registry import Limits, Registry, keyword_defaults, validate_options


@dataclass
class QuantResult:
    """A method's answer for one ``[out, in]`` weight.

    ``codes [out, in]`` float32 integers, ``params`` the format's per-group parameters
    ``{name: [P, G]}`` float32 (already rounded to storage), ``extra`` tensors of
    optional components (:mod:`lmpress.packing.components`), e.g. a sparsity mask.
    """

    codes: torch.Tensor
    params: Params
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def packed(self, scheme: Scheme) -> PackedWeight:
        return PackedWeight.from_codes(self.codes, self.params, scheme, self.extra)


@dataclass(frozen=True)
class Needs:
    """What the pipeline provides a method for one module, besides the float weight."""

    # X^T X / n over the layer's calibration inputs, float32 [in, in]
    hessian: bool = False
    # GuidedQuant: that many output-row groups, each with a Hessian weighted by the
    # end-loss gradients of the float model (one backward pass); the method then gets
    # a [guided_groups, in, in] stack in place of the plain Hessian
    guided_groups: int = 0
    # calibration samples (from the first) that get that backward pass; 0: all
    guided_samples: int = 0
    # the block-level stage: ``MethodSpec.refine`` runs after every linear of the block
    # is quantized, with the float block's outputs on the float model's inputs as targets
    block_refine: bool = False

    @property
    def data(self) -> bool:
        """Whether any calibration data is needed."""
        return self.hessian or self.guided_groups > 0 or self.block_refine


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
    ``[out, in]`` and ``hessian`` what :attr:`needs` asks for (float32 ``[in, in]``,
    a ``[g, in, in]`` stack for guided methods) or ``None``.
    ``refine(block, layers, batches, targets, seed=..., **options) -> (packed by name,
    summary)`` is the block-level stage (see
    :func:`lmpress.methods.learned_round.refine_block`).
    """

    fn: Callable[..., QuantResult]
    needs_fn: Callable[[dict[str, Any]], Needs]
    defaults: dict[str, Any] = field(default_factory=dict)
    limits: Limits = field(default_factory=dict)
    format_ops: tuple[str, ...] = ()
    refine: Callable[..., Any] | None = None

    def options(self, given: dict[str, Any] | None, name: str) -> dict[str, Any]:
        return validate_options(given, self.defaults, self.limits, f"method {name!r}")

    def needs(self, options: dict[str, Any]) -> Needs:
        """What this method, with these (complete) options, needs from the pipeline."""
        return self.needs_fn(options)

    def uses_hessian(self, options: dict[str, Any]) -> bool:
        """Whether this method, with these options, needs calibration statistics."""
        return self.needs(options).data

    def uses_refine(self, options: dict[str, Any]) -> bool:
        """Whether this method, with these options, refines whole blocks after ``fn``."""
        return self.refine is not None and self.needs(options).block_refine

    def check_format(self, scheme: Scheme, name: str) -> None:
        """Refuse a scheme whose format lacks an operation this method rounds through."""
        require_ops(scheme.fmt, self.format_ops, f"method {name!r}")


METHODS: Registry[MethodSpec] = Registry("method")

# Arguments every method function takes before its options.
_POSITIONAL = ("w", "scheme", "hessian")


def register_method(
    name: str,
    needs: "Needs | Callable[[dict[str, Any]], Needs]",
    format_ops: tuple[str, ...],
    limits: Limits | None = None,
    refine: Callable[..., Any] | None = None,
):
    """Register ``fn`` as method ``name``; its options are its keyword defaults."""

    def deco(fn: Callable[..., QuantResult]) -> Callable[..., QuantResult]:
        needs_fn = needs if callable(needs) else (lambda _o, n=needs: n)
        METHODS.register(name)(
            MethodSpec(
                fn, needs_fn, keyword_defaults(fn, _POSITIONAL), limits or {}, format_ops, refine
            )
        )
        return fn

    return deco


def get_method(name: str) -> MethodSpec:
    return METHODS.get(name)
