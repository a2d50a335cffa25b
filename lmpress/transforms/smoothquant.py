"""SmoothQuant: migrate activation outliers into the weights (Xiao et al., 2023).

Per input channel ``j`` of a group of linears sharing one input,
``s_j = max|X_j|^alpha / max_k max|W_k[:, j]|^(1 - alpha)``; the input becomes
``X / s`` (folded into its producer, a norm or an earlier linear) and the weights
``W diag(s)``, so the float function is unchanged while the activation range
flattens. The paper fixes ``alpha`` per model (0.5 for most); here it is searched per
group on a grid, by the group's output error with both the input and the weights
quantized as planned (``|| Q_a(X / s) Q_w(W s)^T - X W^T ||^2`` on calibration
tokens), and ``s = 1`` (no smoothing) is one of the candidates, so a group is only
smoothed where that error drops. Folds are checked like AWQ's.
"""

from typing import Any

import torch
from torch import nn

from lmpress.errors import LmpressError
from lmpress.formats.activation import quantize_activation
from lmpress.formats.scheme import Scheme
from lmpress.models.arch import linear_weight
from lmpress.transforms.base import Batch, register_transform, run_block, slice_batch
from lmpress.transforms.fold import fold_first_that_keeps, producers


def smoothing_scale(act_max: torch.Tensor, w_max: torch.Tensor, alpha: float) -> torch.Tensor:
    """``s [in]`` float32 from per-channel input maxima ``act_max [in]`` and weight
    maxima ``w_max [in]`` (both >= 0); channels without signal keep ``s = 1``."""
    a, w = act_max.clamp_min(1e-5), w_max.clamp_min(1e-5)
    s = a.pow(alpha) / w.pow(1.0 - alpha)
    return torch.where((act_max > 0) & (w_max > 0), s, torch.ones_like(s))


def quantized_group_error(
    x: torch.Tensor, weights: list[torch.Tensor], schemes: list[Scheme], s: torch.Tensor
) -> float:
    """``sum_k || Q_a(x / s) Q_w(W_k s)^T - x W_k^T ||^2`` for tokens ``x [n, in]`` and
    weights ``[out_k, in]`` (float32), each quantized by its scheme (inputs only where
    the scheme quantizes them)."""
    total = 0.0
    xs = x / s
    for w, sch in zip(weights, schemes, strict=True):
        ws = w * s
        fmt = sch.fmt
        wq = fmt.fake_quantize(ws, fmt.choose_params(ws))
        xq = xs if sch.act is None else quantize_activation(xs, sch.act)
        total += float((xq @ wq.T - x @ w.T).pow(2).sum())
    return total


@register_transform(
    "smoothquant",
    format_ops=("choose_params", "fake_quantize"),
    limits={
        "grid": (lambda v: v >= 2, "grid >= 2"),
        "max_tokens": (lambda v: v >= 16, "max_tokens >= 16"),
    },
)
@torch.no_grad()
def smoothquant(
    block: nn.Module,
    batches: list[Batch],
    groups: list[list[str]],
    schemes: dict[str, Scheme],
    grid: int = 10,
    max_tokens: int = 2048,
) -> dict[str, Any]:
    """Search and fold SmoothQuant scales for every group of ``block``; returns
    ``{group: alpha}`` (``None``: smoothing did not lower the error; ``"no fold found"``:
    no producer could absorb it). The per-channel maxima come from every calibration
    token, the error search from the first ``max_tokens``."""
    mods = dict(block.named_modules())
    if {p.dtype for p in block.parameters()} != {torch.float32}:
        raise LmpressError("smoothquant needs a float32 model: its folds are checked to float32")
    groups = [g for g in groups if any(n in schemes for n in g)]
    firsts = [g[0] for g in groups]
    amax = {f: torch.zeros(linear_weight(mods[f]).shape[1]) for f in firsts}
    kept: dict[str, list[torch.Tensor]] = {f: [] for f in firsts}
    seen = dict.fromkeys(firsts, 0)

    def hook(args, f):
        x = args[0].reshape(-1, args[0].shape[-1]).to(torch.float32)
        torch.maximum(amax[f], x.abs().amax(0), out=amax[f])
        if seen[f] < max_tokens:
            kept[f].append(x[: max_tokens - seen[f]].clone())
            seen[f] += kept[f][-1].shape[0]

    handles = [mods[f].register_forward_pre_hook(lambda _m, a, f=f: hook(a, f)) for f in firsts]
    try:
        for batch in batches:
            run_block(block, batch)
    finally:
        for h in handles:
            h.remove()
    probe = slice_batch(batches[0], 1)
    reference = run_block(block, probe)
    sources = producers(block, probe, groups)
    chosen: dict[str, Any] = {}
    for g in groups:
        f, key = g[0], ",".join(g)
        planned = [n for n in g if n in schemes]
        ws = [linear_weight(mods[n]).detach().to(torch.float32) for n in planned]
        plan = [schemes[n] for n in planned]
        x = torch.cat(kept[f]) if kept[f] else None
        if x is None:
            continue
        w_max = torch.stack([w.abs().amax(0) for w in ws]).amax(0)
        best = (quantized_group_error(x, ws, plan, torch.ones_like(w_max)), None, None)
        for i in range(grid):
            alpha = round(0.05 + 0.9 * i / (grid - 1), 4)
            s = smoothing_scale(amax[f], w_max, alpha)
            err = quantized_group_error(x, ws, plan, s)
            if err < best[0]:
                best = (err, alpha, s)
        _, alpha, s = best
        chosen[key] = None
        if s is None:
            continue
        chosen[key] = "no fold found"
        if fold_first_that_keeps(block, probe, reference, sources[f], g, s) is not None:
            chosen[key] = alpha
    return chosen
