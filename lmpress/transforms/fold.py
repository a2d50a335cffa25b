"""Folding a per-channel scale into the module that produces a group's input: the
helpers that scaling transforms (AWQ, SmoothQuant) share.

A group of linears reading one input ``x`` computes the same function with ``x / s``
and weights ``W diag(s)`` when the producer of ``x`` (a norm's weight, or the rows of
an earlier linear) absorbs ``1 / s``; :func:`producers` guesses which modules can,
:func:`fold_scale` applies it, :func:`same_function` checks the block afterwards.
"""

import torch
from torch import nn

from lmpress.models.arch import is_linear, linear_weight
from lmpress.transforms.base import Batch, run_block


def producers(block: nn.Module, batch: Batch, groups: list[list[str]]) -> dict[str, list[str]]:
    """Per group (by its first linear): modules that may absorb ``1/s``, most likely first.

    The module whose output *is* the group's input comes first; then the linears
    that ran before the group and whose output width matches its input, nearest
    first (e.g. ``up_proj``, whose output is multiplied into ``down_proj``'s input).
    Wrong guesses are caught by the caller's before/after check.
    """
    mods = dict(block.named_modules())
    outputs: list[tuple[str, torch.Tensor]] = []
    inputs: dict[str, torch.Tensor] = {}

    def keep_output(name: str, out) -> None:
        if torch.is_tensor(out):
            outputs.append((name, out))

    def keep_input(name: str, args) -> None:
        inputs.setdefault(name, args[0])

    handles = [
        m.register_forward_hook(lambda _m, _a, out, n=name: keep_output(n, out))
        for name, m in mods.items()
        if name and (is_linear(m) or _norm_weight(m) is not None)
    ]
    handles += [
        mods[g[0]].register_forward_pre_hook(lambda _m, a, n=g[0]: keep_input(n, a)) for g in groups
    ]
    try:
        run_block(block, batch)
    finally:
        for h in handles:
            h.remove()
    order = [n for n, _ in outputs]
    found: dict[str, list[str]] = {}
    for g in groups:
        x = inputs.get(g[0])
        if x is None or g[0] not in order:
            found[g[0]] = []
            continue
        exact = [n for n, o in outputs if o is x]
        earlier = [
            n
            for n, o in outputs[: order.index(g[0])]
            if is_linear(mods[n]) and n not in g and n not in exact and o.shape[-1] == x.shape[-1]
        ]
        found[g[0]] = list(dict.fromkeys(exact + earlier[::-1]))
    return found


def _norm_weight(m: nn.Module) -> torch.Tensor | None:
    """The elementwise weight of a norm-like module (LayerNorm, RMSNorm), else None."""
    w = getattr(m, "weight", None)
    if is_linear(m) or not isinstance(w, torch.Tensor) or w.dim() != 1:
        return None
    return w


def fold_scale(producer: nn.Module, linears: list[nn.Module], s: torch.Tensor) -> None:
    """Divide the producer's output channels by ``s``; multiply the linears' inputs by ``s``."""
    bias = getattr(producer, "bias", None)
    if is_linear(producer):
        w = linear_weight(producer)
        w.copy_(w / s.to(w.dtype).unsqueeze(1))
    else:
        producer.weight.copy_(producer.weight / s.to(producer.weight.dtype))
    if isinstance(bias, torch.Tensor):
        bias.copy_(bias / s.to(bias.dtype))
    for m in linears:
        w = linear_weight(m)
        w.copy_(w * s.to(w.dtype))


def same_function(out: torch.Tensor, ref: torch.Tensor, h: torch.Tensor, tol: float = 1e-4) -> bool:
    """Whether a fold left the block's output unchanged up to float rounding.

    Measured on what the block adds to its input (``ref - h``), not on the output
    itself: residual streams carry huge values in a few channels, against which a
    wrong fold that changes attention a little would look like rounding.
    """
    own = (ref - h).to(torch.float32)
    diff = (out - ref).to(torch.float32)
    return bool(diff.norm() <= tol * own.norm().clamp_min(1e-30))


def snapshot(mods: list[nn.Module]) -> list[dict[str, torch.Tensor]]:
    return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in mods]


def fold_first_that_keeps(
    block: nn.Module,
    probe: Batch,
    reference: torch.Tensor,
    candidates: list[str],
    group: list[str],
    s: torch.Tensor,
) -> str | None:
    """Fold ``s`` into the first of ``candidates`` (module names in ``block``) for which
    the block's output on ``probe`` stays ``reference``; undo each fold that does not.
    Returns the producer used, or None (the block is then as it was)."""
    mods = dict(block.named_modules())
    readers = [mods[n] for n in group]
    for p in candidates:
        touched = [mods[p], *readers]
        saved = snapshot(touched)
        fold_scale(mods[p], readers, s)
        if same_function(run_block(block, probe), reference, probe[0]):
            return p
        for m, sd in zip(touched, saved, strict=True):
            m.load_state_dict(sd)
    return None
