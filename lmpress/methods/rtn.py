"""Round to nearest with min-max ranges, optionally searched (clipping, importance)."""

import torch

from lmpress.formats.scheme import Scheme
from lmpress.methods.base import Needs, QuantResult, register_method


@register_method(
    "rtn",
    needs=lambda o: Needs(hessian=o["imatrix"]),
    format_ops=("choose_params", "encode"),
)
def rtn(
    w: torch.Tensor,
    scheme: Scheme,
    hessian: torch.Tensor | None = None,
    mse: bool = False,
    imatrix: bool = False,
) -> QuantResult:
    """Quantize ``w [out, in]`` float32 to the nearest code of each group's grid.

    With ``mse`` each group's range is shrunk by a search on the rounding error
    (the format's ``choose_params(search=True)``; for integers
    :func:`lmpress.formats.affine.mse_qparams`). ``imatrix`` weights that error by
    ``E[x^2]`` of each input channel (the diagonal of ``hessian [in, in]``,
    llama.cpp's importance-matrix idea); it implies the search and needs
    calibration data.
    """
    fmt = scheme.fmt
    if imatrix:
        if hessian is None:
            raise ValueError("rtn with imatrix=True needs the layer's Hessian")
        params = fmt.choose_params(w, hessian.diagonal(), search=True)
    else:
        params = fmt.choose_params(w, search=mse)
    return QuantResult(fmt.encode(w, fmt.expand(params, w.shape[1], w.shape[0])), params)
