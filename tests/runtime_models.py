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


def assert_decoder_matches(model: nn.Module, dec, label: object = None) -> None:
    """The lean decoder ``dec`` gives ``model``'s last logits after a prompt and after
    each of three steps (teacher-forced, float32 tolerance)."""
    prompt = [3, 17, 250, 9, 40]
    with torch.no_grad():
        logits = dec.prefill(prompt)
        ref = model(torch.tensor([prompt])).logits[0, -1]
        assert torch.allclose(logits, ref, rtol=1e-4, atol=1e-4)
        seq = list(prompt)
        for tok in (5, 77, 300):
            logits = dec.step(tok)
            seq.append(tok)
            ref = model(torch.tensor([seq])).logits[0, -1]
            assert torch.allclose(logits, ref, rtol=1e-4, atol=1e-4), (label, len(seq))


def assert_projection_matches(proj, mods: list[nn.Module]) -> None:
    """A fused projection equals its modules' outputs side by side, with and without a
    residual, at 1 and 12 rows, and its decode linear has the fused shape."""
    g = torch.Generator().manual_seed(0)
    for rows in (1, 12):
        x = torch.randn(rows, 64, generator=g)
        res = torch.randn(rows, proj.out, generator=g)
        with torch.no_grad():
            ref = torch.cat([m(x) for m in mods], -1)
        assert torch.allclose(proj(x), ref, rtol=1e-5, atol=1e-5)
        assert torch.allclose(proj(x, res), ref + res, rtol=1e-5, atol=1e-5)
    lin = proj.decode_linear()
    assert (lin.in_features, lin.out_features) == (64, proj.out)
