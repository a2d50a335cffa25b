import pytest
import torch
from conftest import tiny_model

from lmpress.errors import LmpressError
from lmpress.pipeline import quantize_model
from lmpress.recipe import Recipe


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
