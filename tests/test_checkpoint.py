import pytest
import torch
from conftest import tiny_model

import lmpress
from lmpress.checkpoint import save_checkpoint
from lmpress.errors import LmpressError
from lmpress.nn import QLinear
from lmpress.pipeline import quantize_model
from lmpress.recipe import Recipe

FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gpt2", "opt"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_quantize_save_load_bit_exact(tmp_path, family, method):
    model = tiny_model(family)
    ids = torch.randint(0, 512, (8, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(ids[:2]).logits
    res = quantize_model(
        model, Recipe(method=method, scheme="w4g32"), ids, batch_size=4, progress=False
    )
    assert res.packed and all(isinstance(model.get_submodule(n), QLinear) for n in res.packed)
    with torch.no_grad():
        out = model(ids[:2]).logits
    assert (out - ref).abs().max() < 0.5 * ref.abs().max()  # quantized, but still the same model
    save_checkpoint(model, None, tmp_path / "q")
    loaded = lmpress.load(tmp_path / "q")
    with torch.no_grad():
        out2 = loaded(ids[:2]).logits
    assert torch.equal(out, out2)


def test_interrupted_save_leaves_nothing(tmp_path, monkeypatch):
    model = tiny_model("llama")
    quantize_model(model, Recipe(method="rtn", scheme="w4g32"), progress=False)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("lmpress.checkpoint.save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(model, None, tmp_path / "q")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path):
    model = tiny_model("llama")
    quantize_model(model, Recipe(method="rtn", scheme="w4g32"), progress=False)
    save_checkpoint(model, None, tmp_path / "q")
    with pytest.raises(LmpressError, match="--overwrite"):
        save_checkpoint(model, None, tmp_path / "q")
    save_checkpoint(model, None, tmp_path / "q", overwrite=True)


def test_bf16_scales_save_load_and_dtype_moves(tmp_path):
    model = tiny_model("llama")
    quantize_model(model, Recipe(method="rtn", scheme="w4g32:bf16"), progress=False)
    q = model.model.layers[0].mlp.up_proj
    assert q.scales.dtype == torch.bfloat16
    ids = torch.randint(0, 512, (1, 16))
    with torch.no_grad():
        ref = model(ids).logits
    save_checkpoint(model, None, tmp_path / "q")
    loaded = lmpress.load(tmp_path / "q")
    assert loaded.model.layers[0].mlp.up_proj.scales.dtype == torch.bfloat16
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, ref)
    scales = q.scales.clone()
    model.half()  # must not re-round the stored scales
    assert q.scales.dtype == torch.bfloat16 and torch.equal(q.scales, scales)
