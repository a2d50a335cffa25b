import os

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


def test_overrides_and_skip():
    model = tiny_model("llama")
    r = Recipe.from_dict(
        {
            "method": "rtn",
            "scheme": "w4g32",
            "overrides": [
                {"pattern": r"down_proj", "scheme": "w8"},
                {"pattern": r"layers\.0\.self_attn\.q_proj", "skip": True},
            ],
        }
    )
    res = quantize_model(model, r, progress=False)
    assert "model.layers.0.self_attn.q_proj" not in res.packed
    assert isinstance(model.model.layers[0].self_attn.q_proj, torch.nn.Linear)
    assert res.plans["model.layers.1.mlp.down_proj"].scheme.bits == 8
    assert res.plans["model.layers.1.mlp.up_proj"].scheme.bits == 4


def test_unknown_recipe_keys_are_errors():
    with pytest.raises(LmpressError, match="unknown recipe key"):
        Recipe.from_dict({"method": "rtn", "shceme": "w4"})
    with pytest.raises(LmpressError, match="unknown option"):
        Recipe.from_dict({"method": "gptq", "method_args": {"dmap": 0.1}})
    with pytest.raises(LmpressError, match="unknown method"):
        Recipe.from_dict({"method": "gtpq"})


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


@pytest.mark.parametrize("is_dir", [True, False])
def test_atomic_output_replaces_only_on_success(tmp_path, is_dir):
    from lmpress.outputs import atomic_output

    out = tmp_path / "sub" / ("d" if is_dir else "f.bin")

    def write(tmp, text):
        (tmp / "x" if is_dir else tmp).write_text(text)

    def read():
        return (out / "x" if is_dir else out).read_text()

    with atomic_output(out, overwrite=False, is_dir=is_dir) as tmp:  # creates sub/
        write(tmp, "old")
    with pytest.raises(LmpressError, match="already exists; pass --overwrite"):
        with atomic_output(out, overwrite=False, is_dir=is_dir):
            pass
    with pytest.raises(RuntimeError):
        with atomic_output(out, overwrite=True, is_dir=is_dir) as tmp:
            write(tmp, "half")
            raise RuntimeError
    assert read() == "old"
    with atomic_output(out, overwrite=True, is_dir=is_dir) as tmp:
        write(tmp, "new")
    assert read() == "new"
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temp or old copies
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == (0o777 if is_dir else 0o666) & ~umask
    with pytest.raises(
        LmpressError, match="exists and is a " + ("directory" if is_dir else "file")
    ):
        with atomic_output(out, overwrite=True, is_dir=not is_dir):
            pass


def test_true_sequential_groups():
    from lmpress.models.arch import find_layout
    from lmpress.pipeline import _capture_block_inputs, _input_groups

    model = tiny_model("llama")
    layout = find_layout(model)
    batches = _capture_block_inputs(model, layout, torch.randint(0, 512, (2, 16)), 2)
    groups = _input_groups(layout.blocks[0], layout.linear_names[0], batches[0])
    assert groups == [
        ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
        ["self_attn.o_proj"],
        ["mlp.gate_proj", "mlp.up_proj"],
        ["mlp.down_proj"],
    ]


def test_gram_upper_equals_full():
    from lmpress.pipeline import _add_gram_upper

    x = torch.randn(300, 700, generator=torch.Generator().manual_seed(0))
    H = torch.zeros(700, 700)
    _add_gram_upper(H, x)
    H = torch.triu(H) + torch.triu(H, diagonal=1).T
    assert torch.allclose(H, x.T @ x, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("family", ["llama", "opt", "gpt2"])
def test_fast_propagation_matches_full_pass(family):
    """The linear-correction shortcut gives the block outputs a full pass would."""
    ids = torch.randint(0, 512, (8, 32), generator=torch.Generator().manual_seed(0))
    a, b = tiny_model(family), tiny_model(family)
    ra = quantize_model(a, Recipe(method="gptq", scheme="w4g32"), ids, batch_size=4, progress=False)
    import lmpress.pipeline as pl

    orig = pl._outputs_by_linear_correction

    def full_only(block, batches, *_):
        return [pl.block_output(block(h, **kw)) for h, kw in batches], False

    pl._outputs_by_linear_correction = full_only
    try:
        rb = quantize_model(
            b, Recipe(method="gptq", scheme="w4g32"), ids, batch_size=4, progress=False
        )
    finally:
        pl._outputs_by_linear_correction = orig
    if family == "llama":
        assert ra.fast_propagation_blocks == 1  # every block but the last, which needs no outputs
    assert rb.fast_propagation_blocks == 0
    with torch.no_grad():
        la, lb = a(ids[:2]).logits, b(ids[:2]).logits
    assert torch.allclose(la, lb, atol=1e-3 * lb.abs().max())


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


def test_per_layer_arguments_are_refused():
    """Sliding-window layers get other masks than block 0: calibration must refuse, not guess."""
    from conftest import tiny_config
    from transformers import Qwen2ForCausalLM

    cfg = tiny_config("qwen2", use_sliding_window=True, sliding_window=4, max_window_layers=1)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).eval()
    if len(set(getattr(model.config, "layer_types", []) or [])) < 2:
        pytest.skip("this transformers version gives every layer the same attention")
    ids = torch.randint(0, 512, (4, 16))
    with pytest.raises(LmpressError, match="different arguments"):
        quantize_model(model, Recipe(method="gptq", scheme="w4g32"), ids, progress=False)
