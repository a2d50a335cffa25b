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
product. The zero step pulls the group's mean error toward 0. That needs fractional zero points,
as HQQ stores them (``:fz`` schemes): an integer zero point keeps 0 on the grid
already and cannot move by less than a step, so ``hqq`` refuses integer zeros unless
``fit_scale=true``. Whether the fit pays for the extra bits per group of fp16
zeros depends on the model: BENCHMARKS.md compares both on the default model.

``fit_scale=true`` (lmpress's addition) also re-fits each group's scale by least
squares against ``W - E``. It lowers the weight error but clips the groups' extreme
weights, which costs perplexity more than the lower weight error wins back on the
default model (BENCHMARKS.md, ``hqq:scale`` rows), so it is off by default.

``beta`` is relative to each group's scale (the weights are divided by the scale
while optimising), so one default suits every layer. The HQQ library applies its
``beta = 10`` to raw weights, where every rounding error is below the shrink
threshold and ``E`` stays 0 (its zero step is then a least-squares fit); the relative
``beta`` keeps the shrinkage active at every weight scale.
"""

import torch

from lmpress.errors import LmpressError
from lmpress.formats.affine import group_view
from lmpress.formats.scheme import Scheme
from lmpress.methods.base import Needs, QuantResult, register_method


def _shrink(x: torch.Tensor, beta: float, p: float) -> torch.Tensor:
    """Proximal operator of ``|x|^p / beta`` (generalised soft threshold), elementwise."""
    ax = x.abs()
    return torch.sign(x) * torch.relu(ax - ax.clamp_min(1e-12).pow(p - 1) / beta)


@register_method(
    "hqq",
    needs=Needs(),
    # the zero step solves for z in (q - z) * s: the format must decode affinely
    format_ops=("affine", "choose_params", "encode", "decode", "storable_params"),
    limits={
        "iters": (lambda v: v >= 0, "iters >= 0"),
        "lp": (lambda v: 0 < v <= 2, "0 < lp <= 2"),
        "beta": (lambda v: v > 0, "beta > 0"),
        "kappa": (lambda v: v >= 1, "kappa >= 1"),
    },
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
    fmt = scheme.fmt
    start = fmt.choose_params(w)
    g, mask = group_view(w.to(torch.float32), scheme)
    s = start["scale"].unsqueeze(-1)
    z = start["zero"].unsqueeze(-1)
    # Work in units of the initial scale, where a step of the grid is about 1.
    unit = s.clone()
    wn = g / unit
    sn = torch.ones_like(s)
    count = mask.sum(-1, keepdim=True)

    def error(sn_: torch.Tensor, z_: torch.Tensor) -> torch.Tensor:
        p = {"scale": sn_, "zero": z_}
        return ((wn - fmt.decode(fmt.encode(wn, p), p)).abs().pow(lp) * mask).sum(-1)

    best_err = error(sn, z)
    best_s, best_z = sn.clone(), z.clone()
    for _ in range(iters):
        p = {"scale": sn, "zero": z}
        q = fmt.encode(wn, p)
        e = _shrink(wn - fmt.decode(q, p), beta, lp)
        target = wn - e
        if not scheme.symmetric:
            z = ((q - target / sn) * mask).sum(-1, keepdim=True) / count
            z = fmt.storable_params({"zero": z})["zero"]
        if fit_scale:
            c = (q - z) * mask
            den = (c * c).sum(-1, keepdim=True)
            new = (c * target).sum(-1, keepdim=True) / den.clamp_min(1e-12)
            sn = torch.where((den > 0) & (new > 0), new, sn)
            sn = fmt.storable_params({"scale": sn * unit})["scale"] / unit
        err = error(sn, z)
        better = (err < best_err).unsqueeze(-1)
        best_err = torch.where(better.squeeze(-1), err, best_err)
        best_s = torch.where(better, sn, best_s)
        best_z = torch.where(better, z, best_z)
        beta *= kappa

    scale = fmt.storable_params({"scale": (best_s * unit).squeeze(-1)})["scale"]
    zero = best_z.squeeze(-1)
    codes = fmt.encode(g, {"scale": scale.unsqueeze(-1), "zero": zero.unsqueeze(-1)})
    codes = codes.reshape(-1)[: w.numel()] if scheme.granularity == "tensor" else codes
    codes = codes.reshape(w.shape[0], -1)[:, : w.shape[1]]
    return QuantResult(codes, {"scale": scale, "zero": zero})
