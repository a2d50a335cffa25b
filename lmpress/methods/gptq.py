"""GPTQ: second-order error compensation, column by column (Frantar et al., 2022).

Minimises ``||W X - Q X||^2`` for the layer's calibration inputs ``X`` by
quantizing one column at a time and spreading its error over the columns not
yet quantized, using the inverse Hessian ``H = X^T X`` through its Cholesky
factor. Updates are applied lazily in blocks of ``block_size`` columns.

With ``act_order`` columns are visited by decreasing ``diag(H)``; groups then
use *static* parameters chosen on the original weight, so that a column's
scale and zero depend on its group, not on the visiting order.
"""

import torch

from lmpress.errors import LmpressError
from lmpress.formats.affine import num_groups
from lmpress.formats.scheme import Scheme
from lmpress.guidance import output_row_groups
from lmpress.methods.base import Needs, QuantResult, register_method


def _inverse_hessian_factor(h: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of ``(H + damp * mean(diag H) I)^-1``; more damping if needed."""
    eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    mean_diag = h.diagonal().mean()
    for attempt in range(6):
        lam = damp * (10**attempt) * mean_diag
        chol, info = torch.linalg.cholesky_ex(h + lam * eye)
        if info.item() == 0:
            hinv = torch.cholesky_inverse(chol)
            up, info = torch.linalg.cholesky_ex(hinv, upper=True)
            if info.item() == 0:
                return up
    raise RuntimeError("Hessian is not positive definite even with heavy damping")


GUIDED_LIMIT = (
    lambda v: isinstance(v, int) and 0 <= v <= 64,
    "an integer 0..64 (output-channel groups of GuidedQuant's end-loss weighting; 0: off)",
)

GUIDED_SAMPLES_LIMIT = (
    lambda v: isinstance(v, int) and v >= 0,
    "an integer >= 0 (calibration samples whose end-loss gradients weight the guided "
    "Hessians; 0: all)",
)


def _guided(
    w: torch.Tensor, scheme: Scheme, hessians: torch.Tensor, groups: int, *args
) -> QuantResult:
    """GPTQ on each row group of ``w [out, in]`` with its Hessian ``hessians[k] [in, in]``."""
    if hessians.dim() != 3 or hessians.shape[0] != groups:
        raise LmpressError(
            f"guided={groups} needs {groups} end-loss-weighted Hessians [{groups}, in, in], "
            f"got a tensor of shape {list(hessians.shape)}; run it through lmpress.quantize, "
            "which computes them from calibration data"
        )
    if scheme.granularity == "tensor":
        raise LmpressError(
            "guided quantization needs per-channel or grouped scales (one scale per tensor "
            "cannot be fitted per row group); use e.g. w4g128 or w8"
        )
    parts = [
        gptq(w[rows], scheme, h, *args)
        for rows, h in zip(output_row_groups(w.shape[0], groups), hessians, strict=True)
    ]
    return QuantResult(
        torch.cat([p.codes for p in parts]),
        {k: torch.cat([p.params[k] for p in parts]) for k in parts[0].params},
    )


def guided_needs(o: dict) -> Needs:
    """The Hessian, and GuidedQuant's weighted ones when ``guided`` asks for them."""
    return Needs(hessian=True, guided_groups=o["guided"], guided_samples=o["guided_samples"])


# every format operation GPTQ rounds through
GPTQ_FORMAT_OPS = ("choose_params", "encode", "decode")


@register_method(
    "gptq",
    needs=guided_needs,
    format_ops=GPTQ_FORMAT_OPS,
    limits={
        "damp": (lambda v: 0 <= v <= 10, "0 <= damp <= 10 (fraction of the mean Hessian diagonal)"),
        "block_size": (lambda v: v >= 1, "block_size >= 1"),
        "grid_weight": (lambda v: v in ("hdiag", "hinv"), "hdiag or hinv"),
        "grid_power": (lambda v: 0 < v <= 4, "0 < grid_power <= 4"),
        "guided": GUIDED_LIMIT,
        "guided_samples": GUIDED_SAMPLES_LIMIT,
    },
)
def gptq(
    w: torch.Tensor,
    scheme: Scheme,
    hessian: torch.Tensor,
    damp: float = 0.01,
    act_order: bool = True,
    block_size: int = 128,
    mse: bool = True,
    grid_weight: str = "hdiag",
    grid_power: float = 1.0,
    guided: int = 0,
    guided_samples: int = 32,
) -> QuantResult:
    """Quantize ``w [out, in]`` float32 given ``hessian [in, in]`` float32.

    ``guided > 0`` (GuidedQuant, :mod:`lmpress.guidance`): ``hessian`` is
    ``[guided, in, in]``, one end-loss-weighted Hessian per contiguous group of rows
    (:func:`lmpress.guidance.output_row_groups`), and each group is quantized with its own.
    ``guided_samples`` is read by the pipeline: how many calibration samples (from the
    first) get the backward pass that weights those Hessians (0: all).

    ``mse`` chooses each group's range by a clipping search weighted by the
    Hessian diagonal (``E[x^2]`` per input, ``grid_weight="hdiag"``) or by GPTQ's
    own loss weights ``(1 / U_jj^2)^grid_power`` (``"hinv"``, LeanQuant; see
    :mod:`lmpress.methods.leanquant`) instead of min-max.
    """
    if grid_weight == "hinv" and not (mse and (act_order or scheme.granularity != "group")):
        raise LmpressError(
            "the loss-aware grid (grid_weight=hinv, leanquant) needs mse=true and act_order=true "
            "for grouped schemes: its static groups are fitted once, before the column loop"
        )
    if guided or hessian.dim() == 3:
        return _guided(
            w, scheme, hessian, guided, damp, act_order, block_size, mse, grid_weight, grid_power
        )
    W = w.detach().to(torch.float32).clone()
    H = hessian.detach().to(torch.float32).clone()
    if not torch.isfinite(H).all():
        raise LmpressError(
            "the calibration Hessian holds NaN or inf (the model produced non-finite "
            "activations on the calibration text); check the model in float32"
        )
    n_out, n_in = W.shape
    fmt = scheme.fmt

    dead = H.diagonal() == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0

    dynamic = scheme.granularity == "group" and not act_order
    if dynamic and (scheme.block_rows or "whole_matrix_params" in fmt.traits):
        raise LmpressError(
            f"gptq with act_order=false re-fits each group's scale as it goes, but "
            f"{scheme.name}'s scales are chosen for the whole matrix at once; use act_order=true"
        )
    g = scheme.group_len(n_in)
    if dynamic:
        params = {k: torch.zeros(n_out, num_groups(n_in, scheme)) for k in fmt.param_names}
        cols_p = {k: torch.zeros(n_out, n_in) for k in fmt.param_names}
    elif not (mse and grid_weight == "hinv"):  # (hinv: chosen below, after the factor)
        params = fmt.choose_params(W, H.diagonal() if mse else None, search=mse)
        cols_p = {k: v.clone() for k, v in fmt.expand(params, n_in, n_out).items()}

    perm = torch.arange(n_in)
    if act_order:
        perm = torch.argsort(H.diagonal(), descending=True)
    hinv = _inverse_hessian_factor(H[perm][:, perm], damp)
    if mse and grid_weight == "hinv":
        # LeanQuant: quantizing column j costs err^2 / U_jj^2 in GPTQ's sequential loss
        imp = torch.empty(n_in)
        imp[perm] = hinv.diagonal().pow(-2.0 * grid_power)
        params = fmt.choose_params(W, imp, search=True)
        cols_p = {k: v.clone() for k, v in fmt.expand(params, n_in, n_out).items()}
    if act_order:
        W, H = W[:, perm], H[perm][:, perm]
        cols_p = {k: v[:, perm] for k, v in cols_p.items()}
    codes = torch.zeros_like(W)

    for i1 in range(0, n_in, block_size):
        i2 = min(i1 + block_size, n_in)
        W1 = W[:, i1:i2].clone()
        err1 = torch.zeros_like(W1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            j = i1 + i
            if dynamic and j % g == 0:
                # Parameters from the group's current, error-updated columns.
                end = min(j + g, n_in)
                cols = W1[:, i : i + g]
                if end > i2:
                    # Columns past this block have not yet received its pending errors.
                    later = W[:, i2:end] - err1[:, :i] @ hinv[i1:j, i2:end]
                    cols = torch.cat([cols, later], dim=1)
                imp = H.diagonal()[j : j + cols.shape[1]] if mse else None
                for k, v in fmt.choose_params(cols, imp, search=mse).items():  # one group
                    params[k][:, j // g] = v[:, 0]
                    cols_p[k][:, j:end] = v
            col = W1[:, i]
            pj = {k: v[:, j] for k, v in cols_p.items()}
            q = fmt.encode(col, pj)
            codes[:, j] = q
            e = (col - fmt.decode(q, pj)) / hinv1[i, i]
            W1[:, i:] -= e.unsqueeze(1) * hinv1[i, i:].unsqueeze(0)
            err1[:, i] = e
        W[:, i2:] -= err1 @ hinv[i1:i2, i2:]

    if act_order:
        codes = codes[:, torch.argsort(perm)]
    if fmt.provides("refit_params"):
        params = fmt.refit_params(w.detach().to(torch.float32), codes, params, hessian)
    return QuantResult(codes, params)
