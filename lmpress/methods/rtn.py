"""Round to nearest with min-max ranges, optionally searched (clipping, importance)."""

import torch

from lmpress.formats.affine import expand_to_columns, minmax_qparams, mse_qparams, quantize_codes
from lmpress.formats.scheme import Scheme
from lmpress.methods.base import QuantResult, register_method


@register_method("rtn", needs_hessian=lambda o: o["imatrix"], mse=False, imatrix=False)
def rtn(
    w: torch.Tensor,
    scheme: Scheme,
    hessian: torch.Tensor | None = None,
    mse: bool = False,
    imatrix: bool = False,
) -> QuantResult:
    """Quantize ``w [out, in]`` float32 to the nearest code of each group's grid.

    With ``mse`` each group's range is shrunk by a grid search on the rounding
    error (:func:`lmpress.formats.affine.mse_qparams`). ``imatrix`` weights that
    error by ``E[x^2]`` of each input channel (the diagonal of ``hessian [in, in]``,
    llama.cpp's importance-matrix idea); it implies the search and needs
    calibration data.
    """
    if imatrix:
        if hessian is None:
            raise ValueError("rtn with imatrix=True needs the layer's Hessian")
        scale, zero = mse_qparams(w, scheme, hessian.diagonal())
    elif mse:
        scale, zero = mse_qparams(w, scheme)
    else:
        scale, zero = minmax_qparams(w, scheme)
    s = expand_to_columns(scale, w.shape[1], scheme)
    z = expand_to_columns(zero, w.shape[1], scheme)
    return QuantResult(quantize_codes(w, s, z, scheme.fmt.qmax), scale, zero)
