"""What a transform is: a change to a float decoder block, made before it is quantized.

Transforms keep the block's float function (up to rounding) but reshape its
weights so that they quantize better, e.g. AWQ's per-channel scales folded into
the preceding norm. They see the block's calibration inputs; they run before
the block's linears are quantized, so the quantizer's statistics are taken on
the transformed block.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lmpress.formats.base import require_ops
from lmpress.formats.scheme import Scheme
from lmpress.registry import Limits, Registry, keyword_defaults, validate_options

# (hidden states [batch, seq, hidden], the block's keyword arguments)
Batch = tuple[torch.Tensor, dict]


@dataclass(frozen=True)
class TransformSpec:
    """``fn(block, batches, groups, schemes, **options) -> dict`` (a summary for the log).

    A ``scope="model"`` transform is ``fn(model, calib_ids, schemes, **options) -> dict``
    instead (``calib_ids`` int64 ``[n, seq]`` or None, ``schemes`` by full module name):
    it rewrites the whole float model (a rotation of the residual stream touches the
    embedding, every block and the head) once, before calibration inputs are captured.
    ``needs_data``: whether it needs calibration data.

    ``groups`` lists the block's linears (names relative to the block) grouped by
    shared input, in execution order; ``schemes`` maps each planned linear to its
    scheme (linears left float are absent).
    """

    fn: Callable[..., dict[str, Any]]
    defaults: dict[str, Any] = field(default_factory=dict)
    limits: Limits = field(default_factory=dict)
    # the format operations it uses on the planned schemes (as methods declare theirs)
    format_ops: tuple[str, ...] = ()
    scope: str = "block"
    needs_data: bool = True

    def options(self, given: dict[str, Any] | None, name: str) -> dict[str, Any]:
        return validate_options(given, self.defaults, self.limits, f"transform {name!r}")

    def check_format(self, scheme: Scheme, name: str) -> None:
        """Refuse a scheme whose format lacks an operation this transform uses."""
        require_ops(scheme.fmt, self.format_ops, f"transform {name!r}")


TRANSFORMS: Registry[TransformSpec] = Registry("transform")


def register_transform(
    name: str,
    format_ops: tuple[str, ...],
    limits: Limits | None = None,
    scope: str = "block",
    needs_data: bool = True,
):
    """Register ``fn(block, batches, groups, schemes, **options)`` (``scope="model"``:
    ``fn(model, calib_ids, schemes, **options)``); its options are its keyword defaults."""
    model_args = ("model", "calib_ids", "schemes")
    positional = model_args if scope == "model" else ("block", "batches", "groups", "schemes")

    def deco(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        defaults = keyword_defaults(fn, positional)
        spec = TransformSpec(fn, defaults, limits or {}, format_ops, scope, needs_data)
        TRANSFORMS.register(name)(spec)
        return fn

    return deco


def get_transform(name: str) -> TransformSpec:
    return TRANSFORMS.get(name)


def run_block(block: nn.Module, batch: Batch) -> torch.Tensor:
    """The block's output hidden states for one batch."""
    return block_output(block(batch[0], **batch[1]))


def block_output(out) -> torch.Tensor:
    """The hidden states of a decoder block's return value (a tensor or a tuple)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def slice_batch(batch: Batch, n: int) -> Batch:
    """The first ``n`` samples of a batch (keyword tensors with a batch dimension are cut too)."""
    return select_samples(batch, slice(0, n))


def select_samples(batch: Batch, idx: "slice | torch.Tensor") -> Batch:
    """The samples ``idx`` (a slice or int64 indices) of a batch, keyword tensors included."""
    h, kw = batch
    size = h.shape[0]

    def cut(v):
        if torch.is_tensor(v) and v.dim() >= 2 and v.shape[0] == size and size > 1:
            return v[idx]
        if isinstance(v, tuple):
            return tuple(cut(t) for t in v)
        return v

    return h[idx], {k: cut(v) for k, v in kw.items()}


__all__ = ["TRANSFORMS", "TransformSpec", "Scheme", "get_transform", "register_transform"]
