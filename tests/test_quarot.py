"""The hadamard (QuaRot-style) transform: the float function kept for every family it
rotates, online parts saved and loaded, exports refusing what they cannot express, and
on the real model the 4-bit activations it makes usable."""

import copy

import pytest
import torch
from conftest import needs_data, needs_smollm2, tiny_model

from lmpress.checkpoint import load_checkpoint, save_checkpoint
from lmpress.errors import LmpressError
from lmpress.nn.qlinear import QLinear, online_parts
from lmpress.pipeline import quantize_model
from lmpress.recipe import Recipe
from lmpress.transforms.quarot import hadamard
from lmpress.transforms.rotation import InputRotation, online_rotations


def _perturbed(family: str, tied: bool):
    """A tiny model whose norms and biases are not the identity (random init leaves
    norms at 1, which would hide a wrong fold)."""
    m = tiny_model(family)
    m.config.tie_word_embeddings = tied
    if tied:
        m.lm_head.weight = m.get_input_embeddings().weight
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "norm" in n or n.endswith("bias"):
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return m


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3"])
@pytest.mark.parametrize("tied", [True, False])
def test_rotation_keeps_the_float_function(family, tied):
    m = _perturbed(family, tied)
    ids = torch.randint(0, 512, (2, 40))
    with torch.no_grad():
        ref = m(ids).logits
        info = hadamard(m, None, {}, seed=3)
        out = m(ids).logits
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert info["tied_head_online"] == tied
    # the stream really is rotated: the embedding rows changed, norms are identities
    assert float(m.model.layers[0].input_layernorm.weight.detach().sub(1).abs().max()) == 0
    assert isinstance(m.model.layers[1].mlp.down_proj.input_rotation, InputRotation)


def test_rotation_matrix_is_orthogonal_and_applies_like_forward():
    r = InputRotation(160, 7, inner=True)
    r.inner.copy_(torch.linspace(0.5, 2, 160))
    q = r.matrix()
    torch.testing.assert_close(q @ q.T, torch.eye(160, dtype=torch.float64))
    x = torch.randn(3, 160, dtype=torch.float64)
    want = ((x @ q.T) * r.inner.double()) @ q
    torch.testing.assert_close(r(x), want)


@pytest.mark.parametrize("family", ["gpt2", "opt"])
def test_other_families_are_refused(family):
    with pytest.raises(LmpressError, match="RMSNorm families"):
        hadamard(tiny_model(family), None, {})


def test_hadamard_then_gptq_saves_and_loads(tmp_path):
    m = _perturbed("llama", tied=True)
    ids = torch.randint(0, 512, (8, 32))
    recipe = Recipe(method="gptq", scheme="w4g32a8", transforms=["hadamard"])
    assert not recipe.needs_calibration or recipe.needs_calibration  # gptq decides
    res = quantize_model(m, recipe, ids, progress=False)
    assert res.model_transforms["hadamard"]["logit_drift"] < 1e-3
    down = m.model.layers[0].mlp.down_proj
    assert isinstance(down, QLinear) and isinstance(down.input_rotation, InputRotation)
    assert set(online_rotations(m)) == {
        "lm_head",
        "model.layers.0.mlp.down_proj",
        "model.layers.1.mlp.down_proj",
    }
    save_checkpoint(m, None, tmp_path / "ck")
    back, _ = load_checkpoint(tmp_path / "ck", with_tokenizer=False)
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, m(ids).logits)
    assert online_rotations(back) == online_rotations(m)


def test_rotation_alone_needs_no_calibration():
    recipe = Recipe(method="rtn", scheme="w4a4", transforms=["hadamard"])
    assert not recipe.needs_calibration
    m = _perturbed("qwen2", tied=False)
    quantize_model(m, recipe, None, progress=False)
    with torch.no_grad():
        assert torch.isfinite(m(torch.randint(0, 512, (1, 8))).logits).all()


def test_folded_rotation_exports_as_a_plain_model(tmp_path):
    """Untied head, no online down_proj rotation: every rotation is in the weights, so
    the export is an ordinary weight-only checkpoint; with online parts it is refused."""
    from lmpress.api import export_model

    ids = torch.randint(0, 512, (1, 16))
    for online, ok in ((False, True), (True, False)):
        m = _perturbed("llama", tied=False)
        steps = [{"name": "hadamard", "online_down": online}]
        quantize_model(m, Recipe(method="rtn", scheme="w8", transforms=steps), None, False)
        assert bool(online_parts(m)) is not ok
        d = tmp_path / f"ck{online}"
        save_checkpoint(m, None, d)
        out = tmp_path / f"ct{online}"
        if ok:
            export_model(d, "compressed-tensors", out, progress=False)
            assert (out / "config.json").is_file()
        else:
            with pytest.raises(LmpressError, match="online"):
                export_model(d, "compressed-tensors", out, progress=False)
            assert not out.exists()
    with torch.no_grad():
        assert torch.isfinite(m(ids).logits).all()


@pytest.mark.heavy
@needs_smollm2
@needs_data
def test_rotation_rescues_w4a4_on_the_real_model(smollm2):
    from lmpress.calibration import calibration_ids
    from lmpress.eval.perplexity import eval_ids, evaluate_perplexity

    ids = eval_ids(smollm2.tokenizer, "wikitext2")
    ppl = {}
    for method in ("rtn", "hadamard+rtn"):
        m = copy.deepcopy(smollm2.model)
        cal = calibration_ids(smollm2.tokenizer, "wikitext2", 4, 128, 0)
        quantize_model(m, Recipe(method=method, scheme="w4a4"), cal, progress=False)
        ppl[method] = evaluate_perplexity(m, ids, 512, 2, progress=False).ppl
    assert ppl["hadamard+rtn"] * 5 < ppl["rtn"], ppl


def test_cayley_step_stays_orthogonal_and_descends():
    """On f(Q) = ||Q - T||^2 for an orthogonal target T, Cayley steps stay on the
    orthogonal group and move toward T."""
    from lmpress.transforms.spinquant import cayley_step

    torch.manual_seed(0)
    t, _ = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64))
    q = torch.eye(12, dtype=torch.float64)
    dist = [float((q - t).norm())]
    for _ in range(30):
        q = cayley_step(q, 2 * (q - t), 0.2)
        dist.append(float((q - t).norm()))
    torch.testing.assert_close(q @ q.T, torch.eye(12, dtype=torch.float64))
    assert dist[-1] < 0.5 * dist[0]


@pytest.mark.parametrize("tied", [True, False])
def test_spinquant_keeps_the_function_and_round_trips(tmp_path, tied):
    m = _perturbed("llama", tied)
    ids = torch.randint(0, 512, (8, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = m(ids[:2]).logits
    recipe = Recipe(
        method="rtn", scheme="w4sa4", transforms=[{"name": "spinquant", "steps": 4, "seq_len": 32}]
    )
    assert recipe.needs_calibration
    with pytest.raises(LmpressError, match="calibration"):
        quantize_model(copy.deepcopy(m), recipe, None, progress=False)
    float_copy = copy.deepcopy(m)
    from lmpress.transforms.spinquant import spinquant

    info = spinquant(float_copy, ids, {}, steps=4, seq_len=32)
    assert all(0 < info[k] < 20 for k in ("loss_first", "loss_last", "loss_min"))
    with torch.no_grad():
        torch.testing.assert_close(float_copy(ids[:2]).logits, ref, rtol=1e-4, atol=1e-4)
    quantize_model(m, recipe, ids, progress=False)
    assert (online_rotations(m).get("lm_head", {}).get("kind") == "dense") is tied
    save_checkpoint(m, None, tmp_path / "ck")
    back, _ = load_checkpoint(tmp_path / "ck", with_tokenizer=False)
    with torch.no_grad():
        torch.testing.assert_close(back(ids[:2]).logits, m(ids[:2]).logits)


@pytest.mark.heavy
@needs_smollm2
@needs_data
def test_learned_rotation_beats_hadamard_on_the_real_model(smollm2):
    from lmpress.calibration import calibration_ids
    from lmpress.eval.perplexity import eval_ids, evaluate_perplexity

    ids = eval_ids(smollm2.tokenizer, "wikitext2")
    cal = calibration_ids(smollm2.tokenizer, "wikitext2", 64, 256, 0)
    ppl = {}
    for name, steps in (("hadamard", {}), ("spinquant", {"steps": 30})):
        m = copy.deepcopy(smollm2.model)
        recipe = Recipe(method="rtn", scheme="w4sa4", transforms=[{"name": name, **steps}])
        quantize_model(m, recipe, cal, progress=False)
        ppl[name] = evaluate_perplexity(m, ids, 512, 4, progress=False).ppl
    assert ppl["spinquant"] < ppl["hadamard"], ppl
