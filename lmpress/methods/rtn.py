"""Round to nearest with min-max (or absmax) ranges."""

import torch

from lmpress.formats.affine import expand_to_columns, minmax_qparams, quantize_codes
from lmpress.formats.scheme import Scheme
from lmpress.methods.base import QuantResult, register_method


@register_method("rtn", needs_hessian=False)
def rtn(w: torch.Tensor, scheme: Scheme, hessian: torch.Tensor | None = None) -> QuantResult:
    """Quantize ``w [out, in]`` float32 to the nearest code of min-max grids."""
    scale, zero = minmax_qparams(w, scheme)
    s = expand_to_columns(scale, w.shape[1], scheme)
    z = expand_to_columns(zero, w.shape[1], scheme)
    return QuantResult(quantize_codes(w, s, z, scheme.fmt.qmax), scale, zero)
