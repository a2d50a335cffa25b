"""Learned rounding with AutoRound's block objective (``refine_block``) in the pipeline."""

import copy

import pytest
import torch
from conftest import needs_data, needs_smollm2, tiny_model

from lmpress.formats.scheme import parse_scheme
from lmpress.methods import get_method
from lmpress.methods.base import BlockLayer
from lmpress.methods.learned_round import refine_block
from lmpress.models.arch import find_layout, linear_weight
from lmpress.pipeline import quantize_model
from lmpress.recipe import Recipe
from lmpress.transforms.base import run_block


def _block_batches(model, ids, block_index, batch_size=4):
    """Calibration inputs ``(h, kwargs)`` of one decoder block, per batch of samples."""
    layout = find_layout(model)
    seen = []

    def hook(_m, args, kwargs):
        kw = dict(kwargs)
        h = args[0] if args else kw.pop("hidden_states")
        kw.pop("hidden_states", None)
        seen.append((h.detach(), kw))

    handle = layout.blocks[block_index].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            for i in range(0, ids.shape[0], batch_size):
                model(ids[i : i + batch_size], use_cache=False)
    finally:
        handle.remove()
    return layout.blocks[block_index], seen


def _rtn_layers(block, names, scheme):
    layers = []
    for n in names:
        w = linear_weight(block.get_submodule(n)).detach().float().clone()
        r = get_method("rtn").fn(w, scheme, None)
        layers.append(
            BlockLayer(
                block.get_submodule(n),
                n,
                w,
                r.packed(scheme),
            )
        )
    return layers


@needs_smollm2
@needs_data
def test_block_objective_cuts_real_block_error_against_rtn(smollm2):
    """On a real block, 30 sign steps must cut the block's output error well below RTN's.

    A learned rounding that silently kept round-to-nearest would fail here."""
    from lmpress.calibration import calibration_ids

    ids = calibration_ids(smollm2.tokenizer, "wikitext2", 8, 256, seed=1)
    block, batches = _block_batches(smollm2.model, ids, 4)
    block = copy.deepcopy(block)
    with torch.no_grad():
        targets = [run_block(block, b) for b in batches]
    names = [
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    ]
    layers = _rtn_layers(block, names, parse_scheme("w3g64"))
    with torch.no_grad():
        for layer in layers:  # the block as the pipeline hands it over: start weights in place
            linear_weight(layer.module).copy_(layer.start.dequantize())
        new, summary = refine_block(block, layers, batches, targets, iters=30, lr=0.01)
    assert summary["kept"]
    assert summary["loss_learned"] < 0.75 * summary["loss_start"], summary
    changed = sum(
        int((new[n].codes() != lay.start.codes()).sum())
        for n, lay in zip(names, layers, strict=True)
    )
    assert changed > 0


def test_bad_steps_keep_the_start():
    """Steps of a whole code at once make things worse; the start must come back unchanged."""
    model = tiny_model("llama")
    ids = torch.randint(0, 512, (8, 32), generator=torch.Generator().manual_seed(0))
    block, batches = _block_batches(model, ids, 0)
    with torch.no_grad():
        targets = [run_block(block, b) for b in batches]
    layers = _rtn_layers(block, ["self_attn.q_proj", "mlp.down_proj"], parse_scheme("w4g16"))
    with torch.no_grad():
        new, summary = refine_block(block, layers, batches, targets, iters=20, lr=1.0)
    assert not summary["kept"]
    for layer in layers:
        assert new[layer.name] is layer.start


@pytest.mark.parametrize("scheme", ["w3g16", "w4g16s", "w3g16:fz", "w4", "w2g24"])
@pytest.mark.parametrize("init,rounding", [("rtn", "add"), ("gptq", "add"), ("rtn", "div")])
def test_pipeline_refines_every_block(scheme, init, rounding):
    """Every block gets a refine summary, the float stream reaches the last block, and the
    quantized model ends closer to the float one than the start method alone."""
    ids = torch.randint(0, 512, (16, 32), generator=torch.Generator().manual_seed(1))
    start = "rtn" if init == "rtn" else "gptq"
    outs = {}
    learned = {"iters": 40, "init": init, "rounding": rounding}
    for method, args in ((start, {}), ("learned-round", learned)):
        m = tiny_model("llama")
        ref = m(ids[:4]).logits
        res = quantize_model(
            m,
            Recipe.from_dict({"method": method, "scheme": scheme, "method_args": args}),
            ids,
            progress=False,
        )
        with torch.no_grad():
            outs[method] = float((m(ids[:4]).logits - ref).square().mean())
        if method == "learned-round":
            summaries = [t.get("learned-round:refine") for t in res.transforms]
            assert all(s is not None for s in summaries)
            assert all(s["loss_learned"] < s["loss_start"] or not s["kept"] for s in summaries)
            assert res.packed  # stored form written for every linear
    assert outs["learned-round"] <= outs[start] * 1.0001, outs


def test_layer_objective_is_not_refined():
    spec = get_method("learned-round")
    assert spec.uses_refine(spec.options({}, "learned-round"))
    assert not spec.uses_refine(spec.options({"objective": "layer"}, "learned-round"))
    assert not spec.uses_refine(spec.options({"iters": 0}, "learned-round"))
    assert not get_method("gptq").uses_refine(get_method("gptq").options({}, "gptq"))


def test_flexround_division_needs_the_block_objective():
    from lmpress.errors import LmpressError

    w = torch.randn(8, 32)
    with pytest.raises(LmpressError, match="rounding=div"):
        get_method("learned-round").fn(
            w, parse_scheme("w4g16"), torch.eye(32), objective="layer", rounding="div"
        )
