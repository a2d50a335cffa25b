"""The components a packed weight may hold beyond its format's own tensors.

A packed weight is its format's tensors (codes and parameters, declared by the
format) plus any of the optional components registered here, each a small set of
named tensors with its own rule for decoding: a sparsity mask zeroes weights, low-rank
factors add ``U @ V``. Decoding applies them in registration order after the format
has decoded its codes. Each component says whether rows of several weights can be
stacked (:func:`lmpress.packing.packed.concat_rows`); exporters and kernels that do
not know a component refuse or skip the weight that holds it.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lmpress.errors import LmpressError
from lmpress.packing.bits import pack_codes, packed_row_bytes, unpack_codes
from lmpress.registry import Registry


@dataclass(frozen=True)
class Component:
    """One stored tensor: its shape, dtype and role (``codes``, ``params``, or the name of
    the optional component it belongs to)."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    role: str


@dataclass(frozen=True)
class OptionalComponent:
    """A kind of extra content: the tensor names it stores and how it changes decoding.

    ``apply(w, tensors)`` takes the float32 weight ``[out, in]`` decoded so far and this
    component's tensors, and returns the weight with the component applied.
    ``concat(parts)`` stacks the tensors of several weights along their rows, or raises
    :class:`LmpressError` when that has no meaning for this component. ``problem(tensors,
    out, in)`` says what is wrong with this component's tensors for an ``[out, in]``
    weight (a missing tensor, a shape or dtype), or returns ``None``.
    """

    name: str
    tensors: tuple[str, ...]
    apply: Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]
    concat: Callable[[list[dict[str, torch.Tensor]]], dict[str, torch.Tensor]]
    problem: Callable[[dict[str, torch.Tensor], int, int], str | None]


OPTIONAL_COMPONENTS: Registry[OptionalComponent] = Registry("weight component")


def optional_component_of(tensor_name: str) -> OptionalComponent | None:
    """The optional component that stores a tensor of this name, if any."""
    for name in OPTIONAL_COMPONENTS.names():
        comp = OPTIONAL_COMPONENTS.get(name)
        if tensor_name in comp.tensors:
            return comp
    return None


def _cat_rows(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


# -- sparsity mask: 1 bit per weight, 1 keeps it -----------------------------------------


def pack_mask(mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """``mask [out, in]`` (bool or 0/1) as ``{"mask": uint8 [out, ceil(in / 8)]}``."""
    return {"mask": pack_codes(mask.to(torch.int64), 1)}


def _apply_mask(w: torch.Tensor, t: dict[str, torch.Tensor]) -> torch.Tensor:
    return w * unpack_codes(t["mask"], 1, w.shape[1]).to(w.dtype)


def _mask_problem(t: dict[str, torch.Tensor], out_f: int, in_f: int) -> str | None:
    want = (out_f, packed_row_bytes(in_f, 1))
    m = t["mask"]
    if tuple(m.shape) != want or m.dtype != torch.uint8:
        return f"mask is {list(m.shape)} {m.dtype}, expected {list(want)} torch.uint8"
    return None


OPTIONAL_COMPONENTS.register("mask")(
    OptionalComponent("mask", ("mask",), _apply_mask, _cat_rows, _mask_problem)
)


# -- low-rank error compensation: W + U @ V ------------------------------------------------


def _apply_lowrank(w: torch.Tensor, t: dict[str, torch.Tensor]) -> torch.Tensor:
    return w + t["lowrank_u"].to(torch.float32) @ t["lowrank_v"].to(torch.float32)


def _concat_lowrank(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    v = parts[0]["lowrank_v"]
    if any(p["lowrank_v"].shape != v.shape or not torch.equal(p["lowrank_v"], v) for p in parts):
        raise LmpressError(
            "low-rank factors of different weights cannot share rows (their V factors "
            "differ); keep these projections apart"
        )
    return {"lowrank_u": torch.cat([p["lowrank_u"] for p in parts]), "lowrank_v": v}


def _lowrank_problem(t: dict[str, torch.Tensor], out_f: int, in_f: int) -> str | None:
    u, v = t["lowrank_u"], t["lowrank_v"]
    if u.dim() != 2 or v.dim() != 2 or u.shape[0] != out_f or v.shape[1] != in_f:
        return f"low-rank factors {list(u.shape)} @ {list(v.shape)} do not make [{out_f}, {in_f}]"
    if u.shape[1] != v.shape[0]:
        return f"low-rank factors {list(u.shape)} and {list(v.shape)} differ in rank"
    if not (u.is_floating_point() and v.is_floating_point()):
        return "low-rank factors must be floating point"
    return None


OPTIONAL_COMPONENTS.register("lowrank")(
    OptionalComponent(
        "lowrank", ("lowrank_u", "lowrank_v"), _apply_lowrank, _concat_lowrank, _lowrank_problem
    )
)
