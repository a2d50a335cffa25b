"""The lean decoder against transformers' own forward, and the generate command."""

import json

import pytest
import torch
from conftest import needs_smollm2, tiny_model

from lmpress.checkpoint import save_checkpoint
from lmpress.cli import main
from lmpress.errors import LmpressError
from lmpress.generate import Decoder, can_decode, exact_int8, generate_ids, sample
from lmpress.kernels import cpu as K
from lmpress.pipeline import quantize_model
from lmpress.recipe import Recipe

built = pytest.mark.skipif(K._cpu is None, reason="lmpress C kernels not built here")


def quantized_tiny(family: str, scheme: str = "w4g32", overrides=None):
    model = tiny_model(family)
    ids = torch.randint(0, 500, (4, 16), generator=torch.Generator().manual_seed(0))
    recipe = Recipe.from_dict({"method": "rtn", "scheme": scheme, "overrides": overrides or []})
    quantize_model(model, recipe, ids, progress=False)
    return model


@built
@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3"])
@pytest.mark.parametrize("scheme", ["w4g32", "w3g64s", "w8"])
def test_decoder_logits_match_the_model(family, scheme):
    model = quantized_tiny(family, scheme)
    prompt = [3, 17, 250, 9, 40]
    dec = Decoder(model, max_len=32)
    with torch.no_grad():
        logits = dec.prefill(prompt)
        ref = model(torch.tensor([prompt])).logits[0, -1]
        assert torch.allclose(logits, ref, rtol=1e-4, atol=1e-4)
        seq = list(prompt)
        for tok in (5, 77, 300):
            logits = dec.step(tok)
            seq.append(tok)
            ref = model(torch.tensor([seq])).logits[0, -1]
            assert torch.allclose(logits, ref, rtol=1e-4, atol=1e-4), (family, len(seq))


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


@built
def test_lean_and_transformers_engines_generate_the_same_tokens():
    model = quantized_tiny("llama")
    a = generate_ids(model, [5, 6, 7], 12, engine="lmpress")
    b = generate_ids(model, [5, 6, 7], 12, engine="transformers")
    assert a[0] == b[0] and a[3] == "lmpress" and b[3] == "transformers"


def test_unsupported_architecture_falls_back_to_transformers():
    model = quantized_tiny("opt")
    assert not can_decode(model)
    ids, *_rest, engine, _ = generate_ids(model, [5, 6, 7], 4)
    assert engine == "transformers" and len(ids) == 4
    with pytest.raises(LmpressError, match="lean decoder supports"):
        Decoder(model)


def test_sampling_is_seeded_and_greedy_at_zero_temperature():
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    assert sample(logits, 0.0, 0, 1.0, None) == 1
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = [sample(logits, 1.0, 0, 1.0, g1) for _ in range(20)]
    b = [sample(logits, 1.0, 0, 1.0, g2) for _ in range(20)]
    assert a == b and len(set(a)) > 1
    g = torch.Generator().manual_seed(0)
    assert {sample(logits, 1.0, 2, 1.0, g) for _ in range(30)} <= {1, 2}  # top-k 2


@built
def test_cache_overflow_is_a_clear_error():
    model = quantized_tiny("llama")
    dec = Decoder(model, max_len=4)
    dec.prefill([1, 2, 3])
    dec.step(4)
    with pytest.raises(LmpressError, match="cache is full"):
        dec.step(5)


@needs_smollm2
def test_generate_cli(tmp_path, smol_tokenizer, capsys):
    model = quantized_tiny("llama")
    model.resize_token_embeddings(len(smol_tokenizer))
    # re-quantize the resized head? it stays float; the blocks hold QLinear modules
    ckpt = save_checkpoint(model, smol_tokenizer, tmp_path / "q")
    out = tmp_path / "g.json"
    rc = main(
        ["generate", str(ckpt), "--prompt", "Hello world", "--max-new-tokens", "6"]
        + ["--json", str(out), "--no-stream"]
    )
    assert rc == 0
    r = json.loads(out.read_text())
    assert len(r["ids"]) <= 6 and r["engine"] in ("lmpress", "transformers")
    assert "tokens/s" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: "must be a positive integer"
        main(["generate", str(ckpt), "--prompt", "x", "--max-new-tokens", "0"])
    assert main(["generate", str(tmp_path / "nope"), "--prompt", "x"]) == 2


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


def q8_0_grid(w: torch.Tensor) -> torch.Tensor:
    """``w`` through llama.cpp's own Q8_0 quantizer (gguf-py) and back."""
    import gguf

    q = gguf.quants.quantize(w.numpy(), gguf.GGMLQuantizationType.Q8_0)
    return torch.from_numpy(gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0)).float()


def test_exact_int8_finds_a_q8_0_grid_and_rejects_other_weights():
    w = torch.randn(40, 96, generator=torch.Generator().manual_seed(0))
    grid = q8_0_grid(w)
    packed = exact_int8(grid)
    assert packed is not None and packed.scheme.bits == 8
    assert torch.equal(packed.dequantize(), grid)
    assert exact_int8(w) is None
    assert exact_int8(grid + 1e-3) is None
    tall = q8_0_grid(torch.randn(100, 64, generator=torch.Generator().manual_seed(1)))
    assert exact_int8(tall) is not None  # past the first-rows check, the whole head decides
    tall[90, 3] += 1e-3
    assert exact_int8(tall) is None


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
