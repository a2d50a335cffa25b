"""Sampling, the two generation engines and the generate command (lmpress.runtime.generation)."""

import json

import pytest
import torch
from conftest import needs_smollm2
from runtime_models import quantized_tiny

from lmpress.checkpoint import save_checkpoint
from lmpress.cli import main
from lmpress.errors import LmpressError
from lmpress.kernels import decode_ops
from lmpress.runtime import can_decode, generate_ids, sample

built = pytest.mark.skipif(not decode_ops.available(), reason="lmpress C kernels not built here")


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
        generate_ids(model, [5, 6, 7], 4, engine="lmpress")
    with pytest.raises(LmpressError, match="unknown engine"):
        generate_ids(model, [5, 6, 7], 4, engine="vllm")


def test_without_the_c_kernels_auto_generates_through_transformers(monkeypatch):
    from lmpress.kernels import cpu

    model = quantized_tiny("llama")
    monkeypatch.setattr(cpu, "_cpu", None)
    monkeypatch.setattr(cpu, "_warned", True)  # the one "not built" warning is tested elsewhere
    assert not decode_ops.available() and not can_decode(model)
    assert generate_ids(model, [5, 6, 7], 3)[3] == "transformers"


def test_sampling_is_seeded_and_greedy_at_zero_temperature():
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    assert sample(logits, 0.0, 0, 1.0, None) == 1
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = [sample(logits, 1.0, 0, 1.0, g1) for _ in range(20)]
    b = [sample(logits, 1.0, 0, 1.0, g2) for _ in range(20)]
    assert a == b and len(set(a)) > 1
    g = torch.Generator().manual_seed(0)
    assert {sample(logits, 1.0, 2, 1.0, g) for _ in range(30)} <= {1, 2}  # top-k 2
    # top-p 0.5: the most likely token alone holds more than half the mass
    assert {sample(logits, 1.0, 0, 0.5, g) for _ in range(30)} == {1}


def test_generation_stops_at_eos():
    model = quantized_tiny("opt")
    first = generate_ids(model, [5, 6, 7], 4, engine="transformers")[0][0]
    ids = generate_ids(model, [5, 6, 7], 4, eos={first}, engine="transformers")[0]
    assert ids == [first]


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
