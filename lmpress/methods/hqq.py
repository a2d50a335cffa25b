"""HQQ: calibration-free half-quadratic optimisation of each group's zero point.

Badri & Shaji, "Half-Quadratic Quantization of Large Machine Learning Models"
(2023). The rounding error is measured with a robust ``l_p`` norm (``p < 1``),
which tolerates a few large outliers in exchange for fitting the bulk of the
group well. Half-quadratic splitting introduces an auxiliary error ``E``:

- ``E`` step: ``E = shrink_p(W - deq(Q))`` (generalised soft thresholding),
- zero step: the zero point that makes ``deq(Q)`` match ``W - E`` on average,
  in closed form (``z = mean(Q - (W - E) / s)``),

with the penalty ``beta`` growing by ``kappa`` each iteration, the scale fixed at
min-max's (as in the paper and the HQQ library). Each group keeps the iterate with
the lowest ``l_p`` error seen, so the result is never worse than the min-max start
in that measure.

Why the zero step pays: weights crowd around 0, and a grid that does not hold 0
rounds that crowd in one direction, an error that adds up coherently in every dot
product. The zero step pulls the group's mean error toward 0 (about a third of it
on SmolLM2's layer-12 ``down_proj`` at w3g64:fz). That needs fractional zero points,
as HQQ stores them (``:fz`` schemes): an integer zero point keeps 0 on the grid
already and cannot move by less than a step, so ``hqq`` refuses integer zeros unless
``fit_scale=true``. On SmolLM2 an integer-zero min-max grid usually still wins:
see README.md and BENCHMARKS.md.

``fit_scale=true`` (lmpress's addition) also re-fits each group's scale by least
squares against ``W - E``. It lowers the weight error but clips the groups' extreme
weights, and on SmolLM2-135M it raised perplexity at 5 of the 6 schemes measured (see
BENCHMARKS.md, ``hqq:scale``), so it is off by default.

``beta`` is relative to each group's scale (the weights are divided by the scale
while optimising), so one default suits every layer. The HQQ library applies its
``beta = 10`` to raw weights, where every rounding error is below the shrink
threshold and ``E`` stays 0 (its zero step is then a least-squares fit); measured
on SmolLM2 (w4g64:fz / w3g64:fz, 4 windows of 2048): 32.06 / 215.3 that way
against 32.24 / 186.0 with the relative ``beta``. HQQ 0.2.8's ``Quantizer.quantize``
(``optimize=True``, ``axis=1``, float zeros) scores 32.13 at w4g64 and 40.82 at w4g128
on the same windows, against 32.24 and 41.00 here.
"""

import torch

from lmpress.errors import LmpressError
from lmpress.formats.affine import group_view, minmax_qparams, storable_scale, storable_zero
from lmpress.formats.scheme import Scheme
from lmpress.methods.base import QuantResult, register_method


def _shrink(x: torch.Tensor, beta: float, p: float) -> torch.Tensor:
    """Proximal operator of ``|x|^p / beta`` (generalised soft threshold), elementwise."""
    ax = x.abs()
    return torch.sign(x) * torch.relu(ax - ax.clamp_min(1e-12).pow(p - 1) / beta)


@register_method(
    "hqq",
    needs_hessian=False,
    limits={
        "iters": (lambda v: v >= 0, "iters >= 0"),
        "lp": (lambda v: 0 < v <= 2, "0 < lp <= 2"),
        "beta": (lambda v: v > 0, "beta > 0"),
        "kappa": (lambda v: v >= 1, "kappa >= 1"),
    },
    iters=20,
    lp=0.7,
    beta=10.0,
    kappa=1.01,
    fit_scale=False,
)
def hqq(
    w: torch.Tensor,
    scheme: Scheme,
    hessian: torch.Tensor | None = None,
    iters: int = 20,
    lp: float = 0.7,
    beta: float = 10.0,
    kappa: float = 1.01,
    fit_scale: bool = False,
) -> QuantResult:
    """Quantize ``w [out, in]`` float32; returns codes and ``[P, G]`` scale and zero.

    ``beta`` is relative to each group's scale (the weights are divided by the
    scale while optimising), so one default suits every layer.
    """
    if scheme.symmetric and not fit_scale:
        raise LmpressError(
            "hqq with a symmetric scheme has no zero point to fit: use an asymmetric scheme "
            "with float zero points (e.g. w4g64:fz) or pass fit_scale=true"
        )
    if not scheme.float_zero and not fit_scale:
        raise LmpressError(
            f"hqq fits fractional zero points; with the integer zero points of {scheme.name} "
            "it would return round-to-nearest's grid: use float zero points as HQQ stores "
            f"them ({scheme.name}:fz, 16 bits per group) or pass fit_scale=true"
        )
    qmax = scheme.fmt.qmax
    scale, zero = minmax_qparams(w, scheme)
    g, mask = group_view(w.to(torch.float32), scheme)
    s = scale.unsqueeze(-1)
    z = zero.unsqueeze(-1)
    # Work in units of the initial scale, where a step of the grid is about 1.
    unit = s.clone()
    wn = g / unit
    sn = torch.ones_like(s)
    count = mask.sum(-1, keepdim=True)

    def error(sn_: torch.Tensor, z_: torch.Tensor) -> torch.Tensor:
        q = torch.clamp(torch.round(wn / sn_ + z_), 0, qmax)
        return ((wn - (q - z_) * sn_).abs().pow(lp) * mask).sum(-1)

    best_err = error(sn, z)
    best_s, best_z = sn.clone(), z.clone()
    for _ in range(iters):
        q = torch.clamp(torch.round(wn / sn + z), 0, qmax)
        e = _shrink(wn - (q - z) * sn, beta, lp)
        target = wn - e
        if not scheme.symmetric:
            z = ((q - target / sn) * mask).sum(-1, keepdim=True) / count
            z = _round_zero(z, scheme, qmax)
        if fit_scale:
            c = (q - z) * mask
            den = (c * c).sum(-1, keepdim=True)
            new = (c * target).sum(-1, keepdim=True) / den.clamp_min(1e-12)
            sn = torch.where((den > 0) & (new > 0), new, sn)
            sn = storable_scale(sn * unit, scheme) / unit
        err = error(sn, z)
        better = (err < best_err).unsqueeze(-1)
        best_err = torch.where(better.squeeze(-1), err, best_err)
        best_s = torch.where(better, sn, best_s)
        best_z = torch.where(better, z, best_z)
        beta *= kappa

    scale = storable_scale((best_s * unit).squeeze(-1), scheme)
    zero = best_z.squeeze(-1)
    codes = torch.clamp(torch.round(g / scale.unsqueeze(-1) + zero.unsqueeze(-1)), 0, qmax)
    codes = codes.reshape(-1)[: w.numel()] if scheme.granularity == "tensor" else codes
    codes = codes.reshape(w.shape[0], -1)[:, : w.shape[1]]
    return QuantResult(codes, scale, zero)


def _round_zero(z: torch.Tensor, scheme: Scheme, qmax: int) -> torch.Tensor:
    if scheme.float_zero:
        return storable_zero(z, scheme)
    return torch.round(z).clamp(0, qmax)
