"""AWQ: activation-aware per-input-channel scaling (Lin et al., 2023).

Channels that see large activations matter more to a layer's output; scaling
their weight columns up by ``s`` (and the input down by ``1/s``) makes their
relative rounding error smaller. For each group of linears sharing one input,
``s = a^alpha`` (``a`` = RMS activation per input channel, normalised so that
``max(s) * min(s) = 1``) with ``alpha`` chosen on a grid to minimise the
group's output error after round-to-nearest:

    sum_k  tr(dW_k H dW_k^T),   dW_k = Q(W_k diag(s)) diag(s)^-1 - W_k,

with ``H = X^T X / n`` the input's second moment (``alpha = 0`` is plain RTN,
so the search never does worse by this measure). ``1/s`` is folded into the
module that produces the input (a norm's weight, or the rows of a preceding
linear such as ``up_proj`` before ``down_proj``), so the float model computes
the same function; each fold is checked by running the block before and after,
and a group whose producer cannot absorb the scale is left alone.

Differences from the paper, by choice: the activation statistic is the RMS
(from ``H``'s diagonal) rather than the mean absolute value, and the objective is
the Hessian form of each group's output error rather than a forward pass of the
whole attention or MLP module, which makes each grid point a small matrix product.
"""

from typing import Any

import torch
from torch import nn

from lmpress.errors import LmpressError
from lmpress.formats.scheme import Scheme
from lmpress.models.arch import linear_weight
from lmpress.transforms.base import Batch, register_transform, run_block, slice_batch
from lmpress.transforms.fold import fold_first_that_keeps, producers


def scale_candidates(act_rms: torch.Tensor, grid: int) -> list[tuple[float, torch.Tensor]]:
    """``(alpha, s [in])`` for ``alpha`` in ``[0, 1)`` on ``grid`` points (float32)."""
    a = act_rms.clamp_min(1e-6)
    out = []
    for i in range(grid):
        alpha = i / grid
        s = a.pow(alpha)
        out.append((alpha, s / (s.max() * s.min()).sqrt()))
    return out


def scaled_output_error(
    weights: list[torch.Tensor], s: torch.Tensor, hessian: torch.Tensor, scheme: list[Scheme]
) -> float:
    """``sum_k tr(dW_k H dW_k^T)`` for weights ``[out_k, in]`` quantized after scaling by ``s``."""
    total = 0.0
    for w, sch in zip(weights, scheme, strict=True):
        ws = w * s
        fmt = sch.fmt
        dw = fmt.fake_quantize(ws, fmt.choose_params(ws)) / s - w
        total += float(((dw @ hessian) * dw).sum())
    return total


def search_scale(
    weights: list[torch.Tensor], hessian: torch.Tensor, schemes: list[Scheme], grid: int
) -> tuple[float, torch.Tensor]:
    """The best ``(alpha, s [in])`` for linears sharing an input with second moment ``hessian``."""
    act = hessian.diagonal().clamp_min(0).sqrt()
    best: tuple[float, float, torch.Tensor] | None = None
    for alpha, s in scale_candidates(act, grid):
        err = scaled_output_error(weights, s, hessian, schemes)
        if best is None or err < best[0]:
            best = (err, alpha, s)
    assert best is not None
    return best[1], best[2]


@register_transform(
    "awq",
    format_ops=("choose_params", "fake_quantize"),
    limits={
        "grid": (lambda v: v >= 2, "grid >= 2"),
        "max_tokens": (lambda v: v >= 1, "max_tokens >= 1"),
    },
)
@torch.no_grad()
def awq(
    block: nn.Module,
    batches: list[Batch],
    groups: list[list[str]],
    schemes: dict[str, Scheme],
    grid: int = 20,
    max_tokens: int = 16384,
) -> dict[str, Any]:
    """Search and fold AWQ scales for every group of ``block``.

    Returns ``{group: alpha}``, with ``"no fold found"`` for groups whose producer
    could not absorb the scale (left unscaled).

    Statistics come from the first ``max_tokens`` calibration tokens of the float
    block (all groups measured before any fold, as in the paper).
    """
    mods = dict(block.named_modules())
    dtypes = {p.dtype for p in block.parameters()}
    if dtypes != {torch.float32}:
        raise LmpressError(
            f"awq needs a float32 model (this block holds {sorted(map(str, dtypes))}): its "
            "folds are checked to float32 rounding; load the model in float32"
        )
    # Searched on the quantized linears of a group, folded into all of them.
    groups = [g for g in groups if any(n in schemes for n in g)]
    firsts = [g[0] for g in groups]
    width = {f: linear_weight(mods[f]).shape[1] for f in firsts}
    grams = {f: torch.zeros(width[f], width[f]) for f in firsts}
    counts = dict.fromkeys(firsts, 0)

    def hook(_m, args, f):
        x = args[0].reshape(-1, args[0].shape[-1]).to(torch.float32)
        grams[f].addmm_(x.T, x)
        counts[f] += x.shape[0]

    handles = [mods[f].register_forward_pre_hook(lambda m, a, f=f: hook(m, a, f)) for f in firsts]
    try:
        tokens = 0
        for batch in batches:
            if tokens >= max_tokens:
                break
            run_block(block, batch)
            tokens += batch[0].shape[0] * batch[0].shape[1]
    finally:
        for h in handles:
            h.remove()

    probe = slice_batch(batches[0], 1)
    reference = run_block(block, probe)
    sources = producers(block, probe, groups)
    chosen: dict[str, float] = {}
    for g in groups:
        f = g[0]
        if counts[f] == 0:
            continue
        if not sources[f]:
            chosen[",".join(g)] = "no fold found"
            continue
        H = grams[f] / counts[f]
        planned = [n for n in g if n in schemes]
        ws = [linear_weight(mods[n]).detach().to(torch.float32) for n in planned]
        alpha, s = search_scale(ws, H, [schemes[n] for n in planned], grid)
        chosen[",".join(g)] = "no fold found"  # replaced below when a fold passes the check
        if alpha == 0.0:
            chosen[",".join(g)] = 0.0
            continue
        if fold_first_that_keeps(block, probe, reference, sources[f], g, s) is not None:
            chosen[",".join(g)] = alpha
    return chosen
