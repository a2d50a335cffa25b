"""What a number format is, and the registry every format joins.

A format is the coding of one number within a scheme: how its parameters are chosen
for a group, channel or tensor (``choose_params``), how weights become codes given
those parameters (``encode``) and codes values again (``decode``), which tensors it
stores and what they cost (``components``, ``pack``, ``unpack``), and which scheme
spellings are its own (``parse``). A format object is bound to one
:class:`~lmpress.formats.scheme.Scheme`: ``scheme.fmt``.

Parameters travel as a dict of float32 tensors, ``{name: [P, G]}`` per group (``P``
rows, 1 for per-tensor; ``G`` groups per row), or broadcast to columns
``{name: [P, in]}`` (:meth:`Format.expand`) for the elementwise operations. Methods
use only these operations, so a method works with every format that provides the
ones it lists in ``format_ops``; :func:`require_ops` refuses the others at the edge.
"""

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import torch

from lmpress.errors import LmpressError
from lmpress.registry import Registry

if TYPE_CHECKING:
    from lmpress.formats.scheme import Scheme
    from lmpress.packing.components import Component

Params = dict[str, torch.Tensor]


class Format:
    """Base class: the operations a format may provide. Subclasses override what they
    support; an operation left as the base's is "not provided" (see :meth:`provides`)."""

    name: ClassVar[str] = ""
    # names of the per-group parameters, in the order a method may rely on
    param_names: ClassVar[tuple[str, ...]] = ()
    # properties of the format's arithmetic a method may rely on and ask for by name,
    # as it asks for operations: "affine" means codes decode to (q - zero) * scale
    traits: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, scheme: "Scheme") -> None:
        self.scheme = scheme

    # -- schemes ---------------------------------------------------------------
    @classmethod
    def check_scheme(cls, scheme: "Scheme") -> None:
        """Raise :class:`LmpressError` if ``scheme``'s fields do not suit this format."""

    @classmethod
    def parse(cls, spec: str) -> "Scheme | None":
        """The scheme a shorthand spelling names, or ``None`` if it is not this format's."""
        return None

    @classmethod
    def spellings(cls) -> str:
        """Examples of this format's shorthand spellings, for error messages."""
        return ""

    def scheme_name(self) -> str:
        """The shorthand spelling of the bound scheme."""
        raise NotImplementedError

    # -- numerics ----------------------------------------------------------------
    def choose_params(
        self, w: torch.Tensor, importance: torch.Tensor | None = None, search: bool = False
    ) -> Params:
        """Parameters ``{name: [P, G]}`` float32 for ``w [R, C]`` float32.

        ``search`` looks for the range that minimises the rounding error, weighted per
        input column by ``importance [C]`` when given; otherwise min-max.
        """
        raise NotImplementedError

    def encode(
        self, w: torch.Tensor, params: Params, offset: torch.Tensor | float | None = None
    ) -> torch.Tensor:
        """Codes (float32 integers) of ``w`` given broadcastable per-column ``params``.

        ``offset`` is added before rounding (learned rounding's per-weight offsets).
        """
        raise NotImplementedError

    def decode(self, codes: torch.Tensor, params: Params) -> torch.Tensor:
        """Float32 values of ``codes`` given broadcastable per-column ``params``."""
        raise NotImplementedError

    def encode_ste(
        self, w: torch.Tensor, params: Params, offset: torch.Tensor | float | None = None
    ) -> torch.Tensor:
        """:meth:`encode` with a straight-through gradient (rounding treated as identity)."""
        raise NotImplementedError

    def params_from_range(self, lo: torch.Tensor, hi: torch.Tensor, ste: bool = False) -> Params:
        """Parameters for groups spanning ``[lo, hi]`` (``lo <= 0 <= hi``, any shape).

        Differentiable in ``lo`` and ``hi`` (with ``ste``, rounded parameters pass
        gradients straight through); the result is not yet rounded to storage.
        """
        raise NotImplementedError

    def round_params(self, params: Params, ste: bool = False) -> Params:
        """Parameters that live on a grid of their own (integer zero points) rounded to it,
        the others left continuous: what a learned, not yet stored range trains on."""
        raise NotImplementedError

    def storable_params(self, params: Params) -> Params:
        """``params`` rounded to what the stored tensors can hold (float32 out)."""
        raise NotImplementedError

    def refit_params(
        self, w: torch.Tensor, codes: torch.Tensor, params: Params, hessian: torch.Tensor
    ) -> Params:
        """Storable parameters ``{name: [P, G]}`` that lower ``tr(dW H dW^T)`` for the fixed
        ``codes [out, in]`` of ``w [out, in]`` (float32), ``hessian [in, in]`` float32: a
        closed-form update a Hessian-based method may apply after choosing its codes
        (learned grids move their values). Formats without one keep the default: not
        provided."""
        raise NotImplementedError

    def storage_problem(self, w: torch.Tensor) -> str | None:
        """Why ``w [out, in]`` (float32) cannot be stored faithfully in this format's
        parameter dtypes (scales that would overflow or underflow them), as a clause
        to follow a module's name; ``None`` when it can. Formats whose parameters
        cannot overflow keep the default."""
        return None

    def expand(self, params: Params, in_features: int, out_features: int | None = None) -> Params:
        """Per-group parameters ``[P, G]`` broadcast to columns ``[P, in_features]``
        (formats whose parameters also span rows, 2-D blocks, need ``out_features`` and
        broadcast to ``[out_features, in_features]``)."""
        from lmpress.formats.affine import expand_to_columns

        return {k: expand_to_columns(v, in_features, self.scheme) for k, v in params.items()}

    def fake_quantize(self, w: torch.Tensor, params: Params) -> torch.Tensor:
        """Encode then decode ``w [out, in]`` with per-group ``params``."""
        cols = self.expand(params, w.shape[1], w.shape[0])
        return self.decode(self.encode(w, cols), cols)

    # -- storage -----------------------------------------------------------------
    def components(self, out_features: int, in_features: int) -> "dict[str, Component]":
        """The tensors this format stores for one ``[out, in]`` matrix, by name."""
        raise NotImplementedError

    def pack(self, codes: torch.Tensor, params: Params) -> dict[str, torch.Tensor]:
        """Stored tensors of codes ``[out, in]`` and per-group ``params``."""
        raise NotImplementedError

    def unpack_codes(self, tensors: dict[str, torch.Tensor], in_features: int) -> torch.Tensor:
        """Codes ``uint8 [out, in]`` from the stored tensors."""
        raise NotImplementedError

    def unpack_params(self, tensors: dict[str, torch.Tensor]) -> Params:
        """Per-group parameters ``{name: [P, G]}`` float32 from the stored tensors."""
        raise NotImplementedError

    def concat_params(self, parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Stored parameter tensors of several matrices stacked along their rows."""
        raise NotImplementedError

    # -- capabilities --------------------------------------------------------------
    @classmethod
    def provides(cls, op: str) -> bool:
        """Whether this format offers ``op``: one of its :attr:`traits`, an operation of
        :class:`Format` it implements itself, or one the base derives from operations it
        implements (``expand``; ``fake_quantize`` from ``encode`` and ``decode``)."""
        if op in cls.traits:
            return True
        if op in _DERIVED:
            return all(cls.provides(d) for d in _DERIVED[op])
        base = inspect.getattr_static(Format, op, None)
        if base is None:
            return False
        for klass in cls.__mro__:
            if klass is Format:
                return False
            if op in vars(klass):
                return _function(vars(klass)[op]) is not _function(base)
        return False


# operations the base class implements on top of others
_DERIVED = {"expand": (), "fake_quantize": ("encode", "decode")}


def _function(attr: object) -> object:
    """The plain function behind a method, classmethod or staticmethod."""
    return getattr(attr, "__func__", attr)


FORMATS: Registry[type[Format]] = Registry("format")


def register_format(name: str) -> Callable[[type[Format]], type[Format]]:
    """Class decorator: register a :class:`Format` subclass under ``name``."""

    def deco(cls: type[Format]) -> type[Format]:
        cls.name = name
        return FORMATS.register(name)(cls)

    return deco


def require_ops(fmt: "Format | type[Format]", ops: tuple[str, ...], who: str) -> None:
    """Refuse, in one line, a format that lacks an operation ``who`` needs."""
    cls = fmt if isinstance(fmt, type) else type(fmt)
    missing = [op for op in ops if not cls.provides(op)]
    if missing:
        raise LmpressError(
            f"{who} cannot use format {cls.name!r}: it does not provide {', '.join(missing)}"
        )
