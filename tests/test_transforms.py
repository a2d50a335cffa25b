"""Block transforms (AWQ), float zero points, method combinations and presets."""

import copy

import pytest
import torch
from conftest import tiny_model

import lmpress
from lmpress.checkpoint import save_checkpoint
from lmpress.errors import LmpressError
from lmpress.formats.scheme import parse_scheme
from lmpress.packing import PackedWeight
from lmpress.pipeline import quantize_model
from lmpress.recipe import Recipe
from lmpress.transforms.awq import awq


def _uneven(model):
    """Give a few hidden channels large activations, as trained models have."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name or "ln" in name):
                p[:4] *= 8.0
    return model


@pytest.mark.parametrize("family", ["llama", "qwen3", "opt", "gpt2"])
def test_awq_fold_keeps_the_float_function(family):
    model = _uneven(tiny_model(family))
    ids = torch.randint(0, 512, (4, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(ids).logits
    from lmpress.models.arch import find_layout
    from lmpress.pipeline import _capture_block_inputs, _input_groups

    layout = find_layout(model)
    batches = _capture_block_inputs(model, layout, ids, 4)
    block = layout.blocks[0]
    names = layout.linear_names[0]
    groups = _input_groups(block, names, batches[0])
    before = {k: v.clone() for k, v in block.state_dict().items()}
    chosen = awq(block, batches, groups, {n: parse_scheme("w3g16") for n in names})
    assert any(a > 0 for a in chosen.values()), chosen  # something was scaled
    assert any(not torch.equal(before[k], v) for k, v in block.state_dict().items())
    with torch.no_grad():
        out = model(ids).logits
    assert (out - ref).abs().max() < 1e-4 * ref.abs().max()


def test_awq_then_rtn_and_gptq_end_to_end(tmp_path):
    model = _uneven(tiny_model("llama"))
    ids = torch.randint(0, 512, (8, 32), generator=torch.Generator().manual_seed(0))
    for method in ("awq+rtn", "awq+gptq"):
        m = copy.deepcopy(model)
        res = quantize_model(m, Recipe(method=method, scheme="w4g16"), ids, 4, progress=False)
        assert len(res.transforms) == 2 and all("awq" in t for t in res.transforms)
        save_checkpoint(m, None, tmp_path / method)
        loaded = lmpress.load(tmp_path / method)
        with torch.no_grad():
            assert torch.equal(loaded(ids[:1]).logits, m(ids[:1]).logits)


def test_recipe_combinations_and_errors():
    r = Recipe(method="awq+gptq")
    assert r.method == "gptq" and [t.name for t in r.transforms] == ["awq"]
    assert r.label == "awq+gptq" and r.needs_calibration
    d = r.to_dict()
    assert d["transforms"][0]["name"] == "awq" and Recipe.from_dict(d).label == "awq+gptq"
    assert (
        Recipe.from_dict({"transforms": [{"name": "awq", "grid": 5}]}).transforms[0].args["grid"]
        == 5
    )
    assert Recipe(method="rtn", method_args={"imatrix": True}).needs_calibration
    assert not Recipe(method="rtn").needs_calibration
    assert not Recipe(method="hqq").needs_calibration
    with pytest.raises(LmpressError, match="unknown transform"):
        Recipe(method="awz+gptq")
    with pytest.raises(LmpressError, match="grid"):
        Recipe.from_dict({"transforms": [{"name": "awq", "grid": 1}]})
    with pytest.raises(LmpressError, match="must be a list"):
        Recipe.from_dict({"transforms": "awq"})


def test_float_zero_points_pack_save_load(tmp_path):
    s = parse_scheme("w3g16:fz")
    assert s.float_zero and s.name == "w3g16:fz" and parse_scheme(s.to_dict()) == s
    with pytest.raises(LmpressError, match="asymmetric"):
        parse_scheme("w4g16s:fz")
    w = torch.randn(8, 40)
    from lmpress.methods import get_method

    r = get_method("hqq").fn(w, s)
    assert not torch.equal(r.zero, r.zero.round())  # really fractional
    p = PackedWeight.from_codes(r.codes, r.scale, r.zero, s)
    assert p.qzeros.dtype == torch.float16 and p.qzeros.shape == r.scale.shape
    assert torch.equal(p.zeros(), r.zero)
    model = tiny_model("llama")
    quantize_model(model, Recipe(method="hqq", scheme="w4g32:fz"), progress=False)
    ids = torch.randint(0, 512, (1, 16))
    with torch.no_grad():
        ref = model(ids).logits
    save_checkpoint(model, None, tmp_path / "q")
    with torch.no_grad():
        assert torch.equal(lmpress.load(tmp_path / "q")(ids).logits, ref)


def test_presets_are_valid_recipes_within_budget():
    from lmpress.presets import PRESETS, preset_recipe

    for name in PRESETS.names():
        r = Recipe.from_dict(preset_recipe(name))
        budget = PRESETS.get(name).budget
        if budget is None:
            continue
        # bits per weight on the default model's shapes (576 wide, 1536 MLP)
        bits = [
            PackedWeight.expected_shapes(r.scheme, o, i)
            for o, i in [(576, 576), (192, 576), (1536, 576), (576, 1536)]
        ]
        stored = sum(
            torch.Size(shape).numel() * torch.empty((), dtype=dt).element_size() * 8
            for b in bits
            for shape, dt in b.values()
        )
        weights = 576 * 576 + 192 * 576 + 1536 * 576 + 576 * 1536
        assert stored / weights <= budget, (name, stored / weights)
