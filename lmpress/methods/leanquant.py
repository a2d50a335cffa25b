"""LeanQuant: GPTQ with a loss-error-aware grid (Zhang & Shrivastava, 2024).

GPTQ quantizes columns in sequence; quantizing column ``j`` adds
``err_j^2 / U_jj^2`` to the layer loss, where ``U`` is the upper Cholesky factor
of the inverse Hessian. LeanQuant chooses each group's scale and zero point to
minimise that loss-weighted rounding error instead of the min-max range (or an
``E[x^2]``-weighted one), so columns whose error GPTQ cannot compensate get the
finer fit. This is GPTQ with ``grid_weight="hinv"``; the method exists under its
own name so that recipes and reports say what was used.
"""

import torch

from lmpress.formats.scheme import Scheme
from lmpress.methods.base import QuantResult, register_method
from lmpress.methods.gptq import (
    GPTQ_FORMAT_OPS,
    GUIDED_LIMIT,
    GUIDED_SAMPLES_LIMIT,
    gptq,
    guided_needs,
)


@register_method(
    "leanquant",
    needs=guided_needs,
    format_ops=GPTQ_FORMAT_OPS,
    limits={
        "damp": (lambda v: 0 <= v <= 10, "0 <= damp <= 10 (fraction of the mean Hessian diagonal)"),
        "power": (lambda v: 0 < v <= 4, "0 < power <= 4"),
        "guided": GUIDED_LIMIT,
        "guided_samples": GUIDED_SAMPLES_LIMIT,
    },
)
def leanquant(
    w: torch.Tensor,
    scheme: Scheme,
    hessian: torch.Tensor,
    damp: float = 0.01,
    act_order: bool = True,
    power: float = 1.0,
    guided: int = 0,
    guided_samples: int = 32,
) -> QuantResult:
    """GPTQ on ``w [out, in]`` float32 with groups fitted to ``(1 / U_jj^2)^power``-weighted error.

    Grouped schemes need ``act_order=True`` (static groups, fitted once before the
    column loop, where the loss weights are known). ``guided``: as in
    :func:`lmpress.methods.gptq.gptq`.
    """
    return gptq(
        w,
        scheme,
        hessian,
        damp=damp,
        act_order=act_order,
        mse=True,
        grid_weight="hinv",
        grid_power=power,
        guided=guided,
    )
