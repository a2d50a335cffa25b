"""The typed wrappers of the C decode step (lmpress.kernels.decode_ops)."""

import pytest
import torch
import torch.nn.functional as F

from lmpress.kernels import decode_ops as D

pytestmark = pytest.mark.skipif(not D.available(), reason="lmpress C kernels not built here")


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_rmsnorm_matches_torch_over_the_last_dimension():
    x, w = _rand(3, 5, 16), _rand(16, seed=1)
    ref = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w
    assert torch.allclose(D.rmsnorm(x, w, 1e-6), ref, atol=1e-5)
    out = x.clone()
    D.rmsnorm(out, w, 1e-6, out=out)  # in place
    assert torch.allclose(out, ref, atol=1e-5)


def test_rope_attend_and_silu_mul_match_torch():
    q, cos, sin = _rand(4, 8), _rand(8, seed=1), _rand(8, seed=2)
    a, b = q.split(4, -1)
    ref = q * cos + torch.cat([-b, a], -1) * sin
    assert torch.allclose(D.rope_(q.clone(), cos, sin), ref, atol=1e-6)

    k, v = _rand(2, 10, 8, seed=3), _rand(2, 10, 8, seed=4)
    att = D.attend(q, k, v, 6, 8**-0.5)
    kk, vv = k[:, :6].repeat_interleave(2, 0), v[:, :6].repeat_interleave(2, 0)
    ref = F.scaled_dot_product_attention(q[:, None], kk, vv, scale=8**-0.5)[:, 0]
    assert torch.allclose(att, ref, atol=1e-5)

    gu = _rand(20, seed=5)
    assert torch.allclose(D.silu_mul(gu), F.silu(gu[:10]) * gu[10:], atol=1e-5)


def test_dense_linear_through_a_one_block_step_and_bad_inputs():
    """A shape, dtype or contiguity the C side would misread is a ValueError here."""
    x = _rand(1, 8)
    with pytest.raises(ValueError, match="contiguous"):
        D.rmsnorm(_rand(8, 4).t(), _rand(8), 1e-6)
    with pytest.raises(ValueError, match="last dimension"):
        D.rmsnorm(x, _rand(7), 1e-6)
    with pytest.raises(ValueError, match="float32"):
        D.dense_linear(_rand(4, 8).double())
    with pytest.raises(ValueError, match="hold 4"):
        D.dense_linear(_rand(4, 8), torch.zeros(5))
    with pytest.raises(ValueError, match="n_kv"):
        D.attend(_rand(3, 8), _rand(2, 4, 8), _rand(2, 4, 8), 1, 1.0)

    hidden, heads, hd, inter, max_len = 8, 2, 4, 6, 3
    lin = {
        "qkv": D.dense_linear(_rand(3 * heads * hd, hidden, seed=1)),
        "attn_out": D.dense_linear(_rand(hidden, heads * hd, seed=2)),
        "gate_up": D.dense_linear(_rand(2 * inter, hidden, seed=3)),
        "down": D.dense_linear(_rand(hidden, inter, seed=4)),
    }
    caches = torch.zeros(2, heads, max_len, hd)
    block = D.DecodeBlock(
        attn_norm=torch.ones(hidden),
        mlp_norm=torch.ones(hidden),
        k_cache=caches[0],
        v_cache=caches[1],
        **lin,
    )
    dims = D.DecodeDims(hidden, heads, heads, hd, inter, max_len)
    step = D.DecodeStep([block], dims, 1e-6, hd**-0.5)
    with pytest.raises(ValueError, match="qkv must map 8 -> 24"):
        D.DecodeStep([D.DecodeBlock(**{**block.__dict__, "qkv": lin["down"]})], dims, 1e-6, 1.0)
    h = _rand(hidden, seed=5)
    with pytest.raises(ValueError, match="outside the cache"):
        step(h.clone(), max_len, torch.ones(hd), torch.zeros(hd))

    # position 0 with cos 1 / sin 0: attention returns v itself
    x = h.clone()
    step(x, 0, torch.ones(hd), torch.zeros(hd))
    n1 = D.rmsnorm(h, torch.ones(hidden), 1e-6)
    qkv = lin["qkv"].keep[0] @ n1
    v = qkv[2 * heads * hd :]
    r = h + lin["attn_out"].keep[0] @ v
    gu = lin["gate_up"].keep[0] @ D.rmsnorm(r, torch.ones(hidden), 1e-6)
    ref = r + lin["down"].keep[0] @ (F.silu(gu[:inter]) * gu[inter:])
    assert torch.allclose(x, ref, atol=1e-4)
    assert torch.allclose(caches[1, :, 0].reshape(-1), v, atol=1e-5)  # v cached at 0
