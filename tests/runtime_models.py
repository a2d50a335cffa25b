"""Tiny quantized models shared by the runtime tests (not a test module)."""

import torch
from conftest import tiny_model
from torch import nn

from lmpress.pipeline import quantize_model
from lmpress.recipe import Recipe


def quantized_tiny(family: str, scheme: str = "w4g32", overrides=None) -> nn.Module:
    """A two-block random ``family`` model (conftest's ``tiny_config``) quantized by RTN
    under ``scheme``, with recipe ``overrides`` (a list of override dicts)."""
    model = tiny_model(family)
    ids = torch.randint(0, 500, (4, 16), generator=torch.Generator().manual_seed(0))
    recipe = Recipe.from_dict({"method": "rtn", "scheme": scheme, "overrides": overrides or []})
    quantize_model(model, recipe, ids, progress=False)
    return model


def q8_0_grid(w: torch.Tensor) -> torch.Tensor:
    """``w`` through llama.cpp's own Q8_0 quantizer (gguf-py) and back."""
    import gguf

    q = gguf.quants.quantize(w.numpy(), gguf.GGMLQuantizationType.Q8_0)
    return torch.from_numpy(gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0)).float()
