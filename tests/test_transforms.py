"""Block transforms (AWQ), float zero points, method combinations and presets."""

import copy

import pytest
import torch
from conftest import first_block, outlier_channels, tiny_model

import lmpress
from lmpress.checkpoint import save_checkpoint
from lmpress.errors import LmpressError
from lmpress.formats.scheme import parse_scheme
from lmpress.packing import PackedWeight
from lmpress.pipeline import quantize_model
from lmpress.recipe import Recipe
from lmpress.transforms.awq import awq


def _uneven(model):
    return outlier_channels(model, 4, 8.0)


@pytest.mark.parametrize("family", ["llama", "qwen3", "opt", "gpt2"])
def test_awq_fold_keeps_the_float_function(family):
    model = _uneven(tiny_model(family))
    ids = torch.randint(0, 512, (4, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(ids).logits
    block, batches, groups, names = first_block(model, ids)
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
    assert not torch.equal(r.params["zero"], r.params["zero"].round())  # really fractional
    p = r.packed(s)
    assert p.qzeros.dtype == torch.float16 and p.qzeros.shape == r.params["scale"].shape
    assert torch.equal(p.zeros(), r.params["zero"])
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


@pytest.mark.parametrize(
    "method,args",
    [
        ("awq+gptq", {}),
        ("leanquant", {}),
        ("hqq", {"fit_scale": True}),
        ("learned-round", {"iters": 5}),
    ],
)
def test_same_seed_same_bytes(tmp_path, smol_tokenizer, method, args):
    """Two runs of one recipe on one calibration set write identical checkpoints."""
    from lmpress.calibration import calibration_ids
    from lmpress.checkpoint import RUN_FILE

    calib = calibration_ids(smol_tokenizer, ["some calibration text " * 200], 4, 32, seed=0)
    files = []
    for run in range(2):
        model = _uneven(tiny_model("llama", vocab=len(smol_tokenizer)))
        r = Recipe(method=method, scheme="w3g16", method_args=args)
        res = quantize_model(model, r, calib if r.needs_calibration else None, 2, progress=False)
        meta = {"recipe": r.to_dict(), "layer_errors": res.layer_errors, "quantize_seconds": run}
        out = save_checkpoint(model, smol_tokenizer, tmp_path / f"run{run}", extra_config=meta)
        assert (out / RUN_FILE).is_file()
        files.append({f.name: f.read_bytes() for f in out.iterdir() if f.name != RUN_FILE})
    assert files[0].keys() == files[1].keys() and "model.safetensors" in files[0]
    for name in files[0]:
        assert files[0][name] == files[1][name], name


def test_awq_folds_into_linears_kept_float():
    """A group with one linear left float is still scaled: the fold rescales every reader."""
    model = _uneven(tiny_model("llama"))
    ids = torch.randint(0, 512, (4, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(ids).logits
    r = Recipe.from_dict(
        {"method": "awq+rtn", "scheme": "w3g16", "overrides": [{"pattern": "v_proj", "skip": True}]}
    )
    res = quantize_model(model, r, ids, 4, progress=False)
    qkv = "self_attn.q_proj,self_attn.k_proj,self_attn.v_proj"
    assert all(isinstance(t["awq"][qkv], float) and t["awq"][qkv] > 0 for t in res.transforms)
    with torch.no_grad():
        out = model(ids).logits
    assert (out - ref).abs().max() < 0.5 * ref.abs().max()


def test_awq_refuses_half_precision_models():
    model = tiny_model("llama").to(torch.bfloat16)
    ids = torch.randint(0, 512, (4, 32))
    with pytest.raises(LmpressError, match="float32"):
        quantize_model(model, Recipe(method="awq+rtn", scheme="w4g16"), ids, 4, progress=False)


def test_option_combinations_that_would_do_nothing_are_errors():
    from lmpress.methods import get_method

    w, h = torch.randn(8, 64), torch.eye(64)
    with pytest.raises(LmpressError, match="act_order"):
        get_method("leanquant").fn(w, parse_scheme("w4g16"), h, act_order=False)
    with pytest.raises(LmpressError, match="symmetric"):
        get_method("hqq").fn(w, parse_scheme("w4g16s"))
    with pytest.raises(LmpressError, match=r"w4g16:fz"):
        get_method("hqq").fn(w, parse_scheme("w4g16"))
    with pytest.raises(LmpressError, match="mapping"):
        Recipe.from_dict({"method_args": [1, 2]})
    with pytest.raises(LmpressError, match="whole recipe"):
        Recipe.from_dict({"overrides": [{"pattern": "q_proj", "method": "awq+gptq"}]})


def test_bad_recipe_yaml_is_a_clear_error(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("method: [gptq\n")
    with pytest.raises(LmpressError, match="not valid YAML"):
        Recipe.from_yaml(p)


def test_learned_round_with_float_zero_points():
    from lmpress.methods import get_method

    g = torch.Generator().manual_seed(5)
    x = torch.randn(512, 64, generator=g)
    w = torch.randn(16, 64, generator=g)
    s = parse_scheme("w3g16:fz")
    r = get_method("learned-round").fn(w, s, x.T @ x / 512, objective="layer", iters=10)
    assert torch.equal(r.codes, r.codes.round())
    dq = r.packed(s).dequantize()
    step = r.params["scale"].max()
    assert (dq - w).abs().max() < 2 * step
