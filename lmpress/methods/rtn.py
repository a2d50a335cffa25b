"""Round to nearest with min-max (or absmax) ranges."""

import torch

from lmpress.formats.affine import expand_to_columns, minmax_qparams, mse_qparams, quantize_codes
from lmpress.formats.scheme import Scheme
from lmpress.methods.base import QuantResult, register_method


@register_method("rtn", needs_hessian=False, mse=False)
def rtn(
    w: torch.Tensor, scheme: Scheme, hessian: torch.Tensor | None = None, mse: bool = False
) -> QuantResult:
    """Quantize ``w [out, in]`` float32 to the nearest code of min-max grids.

    With ``mse`` each group's range is shrunk by a grid search on the rounding
    error (:func:`lmpress.formats.affine.mse_qparams`).
    """
    scale, zero = mse_qparams(w, scheme) if mse else minmax_qparams(w, scheme)
    s = expand_to_columns(scale, w.shape[1], scheme)
    z = expand_to_columns(zero, w.shape[1], scheme)
    return QuantResult(quantize_codes(w, s, z, scheme.fmt.qmax), scale, zero)
