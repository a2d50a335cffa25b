"""The lean decoder (lmpress.runtime.decoder) against transformers' own forward."""

import pytest
import torch
from runtime_models import assert_decoder_matches, q8_0_grid, quantized_tiny

from lmpress.errors import LmpressError
from lmpress.kernels import decode_ops
from lmpress.runtime import LEAN_FAMILIES, Decoder, can_decode

built = pytest.mark.skipif(not decode_ops.available(), reason="lmpress C kernels not built here")


@built
@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3"])
@pytest.mark.parametrize("scheme", ["w4g32", "w3g64s", "w8"])
def test_decoder_logits_match_the_model(family, scheme):
    model = quantized_tiny(family, scheme)
    assert_decoder_matches(model, Decoder(model, max_len=32), family)


@built
def test_decoder_handles_float_and_mixed_modules():
    """Unquantized (skipped) and differently quantized projections still fuse correctly."""
    over = [{"pattern": "k_proj", "scheme": "w8"}, {"pattern": "up_proj", "skip": True}]
    model = quantized_tiny("llama", "w4g32", over)
    dec = Decoder(model, max_len=16)
    with torch.no_grad():
        logits = dec.prefill([1, 2, 3])
        ref = model(torch.tensor([[1, 2, 3]])).logits[0, -1]
    assert torch.allclose(logits, ref, rtol=1e-4, atol=1e-4)


def test_unsupported_architecture_is_refused_by_the_decoder():
    model = quantized_tiny("opt")
    assert not can_decode(model)
    with pytest.raises(LmpressError, match="lean decoder supports llama, mistral, qwen2, qwen3"):
        Decoder(model)
    assert LEAN_FAMILIES == ("llama", "mistral", "qwen2", "qwen3")


@built
def test_cache_overflow_is_a_clear_error():
    model = quantized_tiny("llama")
    dec = Decoder(model, max_len=4)
    dec.prefill([1, 2, 3])
    dec.step(4)
    with pytest.raises(LmpressError, match="cache is full"):
        dec.step(5)


@built
@pytest.mark.parametrize("c_head", [True, False])
def test_float_head_either_gemv_gives_the_model_logits(c_head):
    """The float output head runs on lmpress's GEMV or torch's (whichever measured faster);
    both give the model's logits, and so do float projections inside decode_step."""
    over = [{"pattern": "o_proj", "skip": True}]
    model = quantized_tiny("llama", "w4g32", over)
    dec = Decoder(model, max_len=16)
    dec.head_c = c_head
    with torch.no_grad():
        dec.prefill([1, 2, 3])
        logits = dec.step(4)
        ref = model(torch.tensor([[1, 2, 3, 4]])).logits[0, -1]
    assert torch.allclose(logits, ref, rtol=1e-4, atol=1e-4)


@built
@pytest.mark.parametrize("exact_head", [True, False])
def test_q8_0_head_runs_from_its_codes_with_the_model_logits(exact_head):
    model = quantized_tiny("llama", "w4g32")
    with torch.no_grad():
        model.lm_head.weight.copy_(q8_0_grid(model.lm_head.weight.detach().float()))
    dec = Decoder(model, max_len=16, exact_head=exact_head)
    assert (dec.head is not None) == exact_head and (dec.head_w is None) == exact_head
    assert dec.head_kind == (
        "8-bit codes of its exact grid (w8g32s, ggml's Q8_0)" if exact_head else "float32"
    )
    with torch.no_grad():
        first = dec.prefill([1, 2, 3])
        logits = dec.step(4)
        assert torch.allclose(first, model(torch.tensor([[1, 2, 3]])).logits[0, -1], 1e-4, 1e-4)
        ref = model(torch.tensor([[1, 2, 3, 4]])).logits[0, -1]
    assert torch.allclose(logits, ref, rtol=1e-4, atol=1e-4)


@built
def test_bfloat16_head_runs_from_half_the_bytes_with_the_model_logits():
    model = quantized_tiny("llama", "w4g32")
    with torch.no_grad():
        w = model.lm_head.weight
        w.copy_(w.to(torch.bfloat16).float())
    dec = Decoder(model, max_len=16)
    assert dec.head is None and dec.head_w.dtype == torch.bfloat16 and dec.head_c
    assert dec.head_kind == "bfloat16"
    assert Decoder(model, max_len=16, exact_head=False).head_w.dtype == torch.float32
    with torch.no_grad():
        dec.prefill([1, 2, 3])
        logits = dec.step(4)
        ref = model(torch.tensor([[1, 2, 3, 4]])).logits[0, -1]
    assert torch.allclose(logits, ref, rtol=1e-4, atol=1e-4)
