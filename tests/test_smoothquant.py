"""SmoothQuant: the fold keeps the float function; the search only smooths where the
quantized output error drops; the recipe spelling runs end to end."""

import pytest
import torch
from conftest import first_block, outlier_channels, tiny_model

from lmpress.formats.scheme import parse_scheme
from lmpress.pipeline import quantize_model
from lmpress.recipe import Recipe
from lmpress.transforms.smoothquant import (
    quantized_group_error,
    smoothing_scale,
    smoothquant,
)


def _outliers(model):
    return outlier_channels(model, 3, 20.0)


def test_smoothing_scale_migrates_by_alpha():
    a = torch.tensor([8.0, 1.0, 0.0])
    w = torch.tensor([0.5, 2.0, 1.0])
    torch.testing.assert_close(smoothing_scale(a, w, 1.0), torch.tensor([8.0, 1.0, 1.0]))
    torch.testing.assert_close(smoothing_scale(a, w, 0.5), torch.tensor([4.0, 0.5**0.5, 1.0]))


@pytest.mark.parametrize("family", ["llama", "qwen2", "opt"])
def test_fold_keeps_the_float_function_and_lowers_the_error(family):
    model = _outliers(tiny_model(family))
    ids = torch.randint(0, 512, (4, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(ids).logits
    block, batches, groups, names = first_block(model, ids)
    schemes = {n: parse_scheme("w6a6") for n in names}
    first = groups[0]
    mods = dict(block.named_modules())
    xs = []
    h = mods[first[0]].register_forward_pre_hook(lambda _m, a: xs.append(a[0].reshape(-1, 64)))
    with torch.no_grad():
        for b in batches:
            block(b[0], **b[1])
    h.remove()
    x = torch.cat(xs)
    ws = [mods[n].weight.detach().clone() for n in first]
    plan = [schemes[n] for n in first]
    before = quantized_group_error(x, ws, plan, torch.ones(64))
    chosen = smoothquant(block, batches, groups, schemes)
    alpha = chosen[",".join(first)]
    assert isinstance(alpha, float), chosen  # the outlier channels were smoothed
    w_max = torch.stack([w.abs().amax(0) for w in ws]).amax(0)
    amax = x.abs().amax(0)
    after = quantized_group_error(x, ws, plan, smoothing_scale(amax, w_max, alpha))
    assert after < before
    with torch.no_grad():
        out = model(ids).logits
    assert (out - ref).abs().max() < 1e-4 * ref.abs().max()


def test_weight_only_schemes_smooth_only_where_it_helps():
    """Without activation quantization nothing forces a migration; every choice must
    still be no worse than leaving the group alone (s = 1 is a candidate)."""
    model = _outliers(tiny_model("llama"))
    ids = torch.randint(0, 512, (4, 16))
    res = quantize_model(model, Recipe(method="smoothquant+rtn", scheme="w8"), ids, progress=False)
    assert all(
        v is None or v == "no fold found" or 0 < v < 1
        for block in res.transforms
        for v in block["smoothquant"].values()
    )


def test_smoothquant_then_gptq_end_to_end():
    model = _outliers(tiny_model("llama"))
    ids = torch.randint(0, 512, (8, 16))
    recipe = Recipe(method="smoothquant+gptq", scheme="w6a6")
    assert recipe.needs_calibration
    quantize_model(model, recipe, ids, progress=False)
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()
