"""What an older lmpress wrote still loads, and the methods still produce its numbers.

``tests/fixtures/legacy_v2_tiny`` was written by lmpress at commit 2fd1dfe, before the
format-neutral weight container (see ``tests/fixtures/make_legacy_checkpoint.py``).
"""

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lmpress

FIXTURE = Path(__file__).parent / "fixtures" / "legacy_v2_tiny"
sys.path.insert(0, str(FIXTURE.parent))
import make_legacy_checkpoint as legacy  # noqa: E402


@pytest.mark.parametrize("kernel", ["torch", "auto"])
def test_legacy_checkpoint_gives_the_same_logits(kernel):
    expected = load_file(str(FIXTURE / "expected_logits.safetensors"))
    model = lmpress.load(FIXTURE)
    for m in model.modules():
        if hasattr(m, "set_kernel"):
            m.set_kernel(kernel)
    with torch.no_grad():
        logits = model(expected["input_ids"]).logits
    if kernel == "torch":
        assert torch.equal(logits, expected["logits"])
    else:  # the C kernels sum in another order
        torch.testing.assert_close(logits, expected["logits"], rtol=1e-4, atol=1e-4)


def test_legacy_checkpoint_keeps_its_schemes():
    model = lmpress.load(FIXTURE)
    schemes = {n: m.scheme.name for n, m in model.named_modules() if hasattr(m, "scheme")}
    assert schemes["model.layers.0.self_attn.q_proj"] == "w3g32:fz"
    assert schemes["model.layers.0.self_attn.o_proj"] == "w2g8:bf16"
    assert schemes["model.layers.1.mlp.up_proj"] == "w6gt"
    assert "model.layers.1.mlp.gate_proj" not in schemes


# Exact where the arithmetic is elementwise; the second-order and learned methods go
# through BLAS reductions whose order may differ on another CPU, which can move a code
# that sits on a rounding boundary.
EXACT = ("rtn", "hqq")


@pytest.mark.parametrize("cell", list(legacy.METHOD_CELLS))
def test_methods_reproduce_the_legacy_outputs(cell):
    from transformers import AutoModelForCausalLM, LlamaConfig

    from lmpress.pipeline import quantize_model
    from lmpress.recipe import Recipe

    stored = load_file(str(FIXTURE / "method_outputs.safetensors"))
    old = {k.split("/", 1)[1]: v for k, v in stored.items() if k.startswith(cell + "/")}
    assert old, f"no stored outputs for {cell}"
    config = LlamaConfig(**legacy.TINY_CONFIG)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    recipe = Recipe.from_dict(legacy.METHOD_CELLS[cell])
    res = quantize_model(model, recipe, legacy.calibration_tokens(), progress=False)
    new = {
        f"{name}.{suffix}": t for name, p in res.packed.items() for suffix, t in p.tensors.items()
    }
    assert sorted(new) == sorted(old)
    exact = cell.split("@")[0].split(":")[0] in EXACT
    for key, want in old.items():
        got = new[key]
        assert got.dtype == want.dtype and got.shape == want.shape, key
        if exact:
            assert torch.equal(got, want), key
        else:
            same = (got == want).float().mean().item()
            assert same >= 0.99, f"{key}: only {same:.4f} of the stored elements agree"


# The old code's rounding rules, written out as they were before the formats became
# objects: IntFormat must reproduce each bit for bit.
def _old_codes(w, s, z, qmax):
    return torch.clamp(torch.round(w / s + z), 0, qmax)


@pytest.mark.parametrize("spec", ["w4g16", "w3g24s", "w2g8:bf16", "w5g32:fz", "w8", "w6gt"])
def test_int_format_keeps_the_old_rounding_rules(spec):
    from lmpress.formats import parse_scheme
    from lmpress.formats.affine import expand_to_columns, storable_scale, storable_zero

    scheme = parse_scheme(spec)
    fmt = scheme.fmt
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(24, 72, generator=gen) * torch.linspace(0.01, 3.0, 72)
    params = fmt.choose_params(w)
    s = expand_to_columns(params["scale"], 72, scheme)
    z = expand_to_columns(params["zero"], 72, scheme)
    cols = fmt.expand(params, 72)
    codes = fmt.encode(w, cols)
    assert torch.equal(codes, _old_codes(w, s, z, fmt.qmax))
    assert torch.equal(fmt.decode(codes, cols), (codes - z) * s)
    v = 0.4 * torch.rand(w.shape, generator=gen) - 0.2
    assert torch.equal(fmt.encode(w, cols, v), torch.clamp(torch.round(w / s + z + v), 0, fmt.qmax))
    # learned rounding's differentiable range, as the old _qparams computed it
    lo = -(torch.rand(params["scale"].shape, generator=gen) + 0.1)
    hi = torch.rand(params["scale"].shape, generator=gen) + 0.1
    got = fmt.params_from_range(lo, hi, ste=True)
    if scheme.symmetric:
        old_s = (torch.maximum(hi, -lo) / (fmt.mid - 1)).clamp_min(1e-10)
        old_z = torch.full_like(old_s, float(fmt.mid))
    else:
        old_s = ((hi - lo) / fmt.qmax).clamp_min(1e-10)
        old_z = -lo / old_s
        if not scheme.float_zero:
            old_z = torch.clamp(old_z + (torch.round(old_z) - old_z), 0, fmt.qmax)
    assert torch.equal(got["scale"], old_s) and torch.equal(got["zero"], old_z)
    stored = fmt.storable_params({"scale": old_s, "zero": old_z})
    assert torch.equal(stored["scale"], storable_scale(old_s, scheme))
    if scheme.float_zero:
        assert torch.equal(stored["zero"], storable_zero(old_z, scheme))
    elif not scheme.symmetric:
        assert torch.equal(stored["zero"], torch.round(old_z).clamp(0, fmt.qmax))
