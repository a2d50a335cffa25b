"""Fused projections and exact head forms (lmpress.runtime.projections)."""

import pytest
import torch
from runtime_models import assert_projection_matches, q8_0_grid, quantized_tiny

from lmpress.kernels import decode_ops
from lmpress.runtime import Proj, exact_int8, is_bfloat16

built = pytest.mark.skipif(not decode_ops.available(), reason="lmpress C kernels not built here")


def test_exact_int8_finds_a_q8_0_grid_and_rejects_other_weights():
    w = torch.randn(40, 96, generator=torch.Generator().manual_seed(0))
    grid = q8_0_grid(w)
    packed = exact_int8(grid)
    assert packed is not None and packed.scheme.bits == 8
    assert torch.equal(packed.dequantize(), grid)
    assert exact_int8(w) is None
    assert exact_int8(grid + 1e-3) is None
    tall = q8_0_grid(torch.randn(100, 64, generator=torch.Generator().manual_seed(1)))
    assert exact_int8(tall) is not None  # past the first-rows check, the whole head decides
    tall[90, 3] += 1e-3
    assert exact_int8(tall) is None


def test_is_bfloat16():
    w = torch.randn(8, 8, generator=torch.Generator().manual_seed(0))
    assert is_bfloat16(w.to(torch.bfloat16).float()) and not is_bfloat16(w)


@built
@pytest.mark.parametrize("overrides", [[], [{"pattern": "k_proj", "scheme": "w8"}]])
def test_fused_projection_equals_its_modules(overrides):
    """Q/K/V as one product (packed codes, or float when the schemes differ), for one row
    with the residual folded in and for a prefill-sized batch."""
    model = quantized_tiny("llama", "w4g32", overrides)
    a = model.model.layers[0].self_attn
    mods = [a.q_proj, a.k_proj, a.v_proj]
    proj = Proj(mods)
    assert (proj.state is not None) == (not overrides)
    assert proj.out == sum(m.out_features for m in mods)
    assert_projection_matches(proj, mods)
