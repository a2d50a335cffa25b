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
        if exact or not key.endswith(".qweight"):
            if exact:
                assert torch.equal(got, want), key
            else:
                torch.testing.assert_close(got.float(), want.float(), rtol=1e-2, atol=1e-3)
        else:
            same = (got == want).float().mean().item()
            assert same >= 0.99, f"{key}: only {same:.4f} of the packed code bytes agree"
