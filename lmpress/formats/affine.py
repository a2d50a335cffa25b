"""Affine integer quantization as pure functions.

A weight ``w`` of shape ``[out, in]`` (float32) is cut into groups along ``in``;
each group has a scale ``s`` and a zero point ``z`` and a code ``q`` in
``[0, qmax]`` decodes to ``(q - z) * s``. Zero points are integers unless the
scheme stores them as floats (``zero_format="float"``). Parameters have shape ``[P, G]`` with
``P = out`` (or 1 for per-tensor) and ``G`` groups per row; the last group of a
row may be partial when the group size does not divide ``in``.

Scales are rounded to their storage dtype *before* codes are chosen, so the
stored scales reproduce the codes' intended values exactly.
"""

import math

import torch

from lmpress.formats.scheme import Scheme


def num_groups(in_features: int, scheme: Scheme) -> int:
    """Groups per row (1 for per-channel and per-tensor)."""
    return math.ceil(in_features / scheme.group_len(in_features))


def grouped(w: torch.Tensor, group_len: int) -> torch.Tensor:
    """View ``w [R, C]`` as ``[R, ceil(C/g), g]``, padding a partial last group.

    The pad repeats the row's last column, which leaves every group's min, max
    and absmax unchanged.
    """
    rows, cols = w.shape
    pad = (-cols) % group_len
    if pad:
        w = torch.cat([w, w[:, -1:].expand(rows, pad)], dim=1)
    return w.reshape(rows, -1, group_len)


def group_view(w: torch.Tensor, scheme: Scheme) -> tuple[torch.Tensor, torch.Tensor]:
    """``w [R, C]`` as ``[P, G, L]`` groups (zero-padded) and a float mask ``[1, G, L]``
    that is 1 on real columns and 0 on the padding of a partial last group."""
    rows, cols = w.shape
    if scheme.granularity == "tensor":
        return w.reshape(1, 1, -1), torch.ones(1, 1, rows * cols)
    glen = scheme.group_len(cols)
    pad = (-cols) % glen
    mask = torch.ones(1, cols)
    if pad:
        w = torch.nn.functional.pad(w, (0, pad))
        mask = torch.nn.functional.pad(mask, (0, pad))
    return w.reshape(rows, -1, glen), mask.reshape(1, -1, glen)


def minmax_qparams(
    w: torch.Tensor, scheme: Scheme, clip: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max scale and zero point for ``w [R, C]`` (float32).

    Returns ``scale [P, G]`` float32 (exactly representable in the scheme's
    scale dtype) and ``zero [P, G]`` float32 holding integers in ``[0, qmax]``
    (floats for ``zero_format="float"``). ``clip`` < 1 shrinks the range (used by
    clipping search).
    """
    return _qparams_from_extremes(_extremes(w, scheme), scheme, clip)


def _extremes(w: torch.Tensor, scheme: Scheme) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per group ``(min clamped <= 0, max clamped >= 0, absmax)``, each ``[P, G]``."""
    if scheme.granularity == "tensor":
        g = w.reshape(1, 1, -1)
    else:
        g = grouped(w, scheme.group_len(w.shape[1]))
    return g.amin(dim=-1).clamp(max=0), g.amax(dim=-1).clamp(min=0), g.abs().amax(dim=-1)


def _qparams_from_extremes(
    ext: tuple[torch.Tensor, torch.Tensor, torch.Tensor], scheme: Scheme, clip: float
) -> tuple[torch.Tensor, torch.Tensor]:
    fmt = scheme.fmt
    lo, hi, amax = ext
    if scheme.symmetric:
        scale = amax * clip / (fmt.mid - 1 if fmt.bits > 1 else 1)
        scale = storable_scale(scale, scheme)
        zero = torch.full_like(scale, float(fmt.mid))
        return scale, zero
    # The range always contains 0 so that the integer zero point is in [0, qmax].
    scale = storable_scale((hi * clip - lo * clip) / fmt.qmax, scheme)
    zero = -(lo * clip) / scale
    if scheme.float_zero:
        return scale, storable_zero(zero, scheme)
    return scale, integer_zero(zero, fmt.qmax)


def integer_zero(zero: torch.Tensor, qmax: int, ste: bool = False) -> torch.Tensor:
    """Zero points rounded to the integers ``[0, qmax]`` they are stored as (float32);
    with ``ste`` the rounding passes gradients straight through."""
    r = zero + (torch.round(zero) - zero).detach() if ste else torch.round(zero)
    return torch.clamp(r, 0, qmax)


def storable_zero(zero: torch.Tensor, scheme: Scheme) -> torch.Tensor:
    """A float zero point rounded to float16, its storage dtype (float32 out).

    Always fp16, even with bf16 scales: zero points live in ``[0, qmax]`` where
    bf16's 8-bit mantissa would round most of them to integers.
    """
    return zero.to(torch.float16).to(torch.float32)


def storable_scale(scale: torch.Tensor, scheme: Scheme) -> torch.Tensor:
    """Round a float32 scale to the storage dtype; an all-zero group gets scale 1."""
    dt = scheme.torch_scale_dtype
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    info = torch.finfo(dt)
    # The smallest positive value of the dtype (subnormal for fp16: 2**-24), so that
    # tiny-range groups keep a fine grid; it is still exactly storable.
    smallest = 2.0**-24 if dt == torch.float16 else info.tiny
    return scale.clamp(smallest, info.max).to(dt).to(torch.float32)


def expand_to_columns(p: torch.Tensor, in_features: int, scheme: Scheme) -> torch.Tensor:
    """Broadcast per-group parameters ``[P, G]`` to per-column ``[P, in_features]``."""
    if scheme.granularity != "group":
        return p.expand(p.shape[0], in_features)
    return p.repeat_interleave(scheme.group_size, dim=1)[:, :in_features]


def quantize_codes(
    w: torch.Tensor, scale_cols: torch.Tensor, zero_cols: torch.Tensor, qmax: int
) -> torch.Tensor:
    """Round ``w`` to codes with per-column parameters (all broadcastable float32).

    Returns float32 integers in ``[0, qmax]`` with ``w``'s shape. The zero point
    is added before rounding so that float zero points pick the nearest code too.
    """
    return torch.clamp(torch.round(w / scale_cols + zero_cols), 0, qmax)


def dequantize_codes(
    q: torch.Tensor, scale_cols: torch.Tensor, zero_cols: torch.Tensor
) -> torch.Tensor:
    """Decode codes to float32: ``(q - z) * s`` with broadcastable per-column parameters."""
    return (q.to(torch.float32) - zero_cols) * scale_cols


def mse_qparams(
    w: torch.Tensor,
    scheme: Scheme,
    importance: torch.Tensor | None = None,
    grid: int = 20,
    min_ratio: float = 0.5,
    norm: float = 2.4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group clipping search: the range shrink that minimises the rounding error.

    Tries ``grid`` ratios from 1 down to ``min_ratio`` of the min-max range and
    keeps, per group, the one with the least ``sum(importance * |w - q(w)|^norm)``
    (the |.|^2.4 objective follows the GPTQ reference code's MSE grid search;
    ``importance [in]`` float32 is e.g. ``E[x^2]`` per input channel, llama.cpp's
    importance-matrix idea). Shapes and dtypes as :func:`minmax_qparams`.
    """
    rows, cols = w.shape
    ext = _extremes(w, scheme)
    g, mask = group_view(w, scheme)
    imp = mask if importance is None else importance.to(torch.float32).expand(rows, cols)
    if importance is not None:
        imp, _ = group_view(imp.contiguous(), scheme)  # zero on padding: it never counts
    qmax = scheme.fmt.qmax
    best_s = best_z = best_err = None
    for k in range(grid):
        ratio = 1.0 - (1.0 - min_ratio) * k / max(grid - 1, 1)
        s, z = _qparams_from_extremes(ext, scheme, ratio)
        s3, z3 = s.unsqueeze(-1), z.unsqueeze(-1)
        # in place: this loop is a visible share of GPTQ's time
        d = g / s3
        d.add_(z3).round_().clamp_(0, qmax).sub_(z3).mul_(s3).sub_(g).abs_().pow_(norm).mul_(imp)
        err = d.sum(-1)
        if best_err is None:
            best_err, best_s, best_z = err, s, z
            continue
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_s = torch.where(better, s, best_s)
        best_z = torch.where(better, z, best_z)
    assert best_s is not None and best_z is not None
    return best_s, best_z
