"""Exports (GGUF, compressed-tensors, GPTQ) read back by their own readers, and imports."""

import importlib.util
import json

import gguf
import numpy as np
import pytest
import torch
from conftest import needs_smollm2, tiny_model

import lmpress
from lmpress.checkpoint import save_checkpoint
from lmpress.errors import LmpressError
from lmpress.eval.llamacpp import llamacpp_has_blas
from lmpress.export.gguf import rotary_row_order
from lmpress.models.load import load_model
from lmpress.nn.qlinear import QLinear
from lmpress.pipeline import quantize_model
from lmpress.recipe import Recipe

needs_ct = pytest.mark.skipif(
    importlib.util.find_spec("compressed_tensors") is None, reason="compressed-tensors missing"
)
needs_llamacpp = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python not installed (make bench installs it)",
)


def tiny_checkpoint(tmp_path, scheme: str, tokenizer, family: str = "llama", name: str = "q"):
    model = tiny_model(family, vocab=len(tokenizer))
    ids = torch.randint(0, 500, (4, 16), generator=torch.Generator().manual_seed(0))
    quantize_model(model, Recipe(method="rtn", scheme=scheme), ids, progress=False)
    return save_checkpoint(model, tokenizer, tmp_path / name), model


def qlinears(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, QLinear)}


GGUF_CASES = {
    # scheme: (ggml type, exact)
    "w4g32s": ("Q4_0", True),
    "w4g64s": ("Q4_0", True),
    "w3g32s": ("Q4_0", True),
    "w4g32": ("Q4_1", False),  # exact up to fp16 rounding of m = -z * s
    "w2g64": ("Q4_1", False),
    "w8s": ("Q8_0", True),
    "w6g32": ("Q8_0", True),
    "w4g48": ("Q8_0", False),  # groups of 48 straddle ggml blocks: re-quantized
}


@needs_smollm2
@pytest.mark.parametrize("scheme", list(GGUF_CASES))
def test_gguf_readback_matches_lmpress_weights(tmp_path, smol_tokenizer, scheme):
    ckpt, model = tiny_checkpoint(tmp_path, scheme, smol_tokenizer)
    out = tmp_path / "m.gguf"
    summary = lmpress.export_model(ckpt, "gguf", out, progress=False)
    want_type, exact = GGUF_CASES[scheme]
    assert summary["tensor_types"] == {want_type: len(qlinears(model))}
    reader = gguf.GGUFReader(str(out))
    tensors = {t.name: t for t in reader.tensors}
    cfg = model.config
    for name, m in qlinears(model).items():
        t = tensors[summary_name(summary, name)]
        back = torch.from_numpy(
            np.array(gguf.quants.dequantize(t.data, t.tensor_type)).reshape(m.out_features, -1)
        )
        w = m.packed().dequantize()
        if name.endswith("q_proj"):
            w = w[rotary_row_order(w.shape[0], cfg.num_attention_heads)]
        if name.endswith("k_proj"):
            w = w[rotary_row_order(w.shape[0], cfg.num_key_value_heads)]
        if exact:
            assert torch.equal(back, w), name
        else:
            step = m.packed().scales.float().max()
            assert (back - w).abs().max() <= step, name
    fields = reader.fields
    assert fields["general.architecture"].contents() == "llama"
    assert fields["llama.block_count"].contents() == cfg.num_hidden_layers
    assert len(fields["tokenizer.ggml.tokens"].contents()) == cfg.vocab_size
    assert len(fields["tokenizer.ggml.merges"].contents()) > 0


@needs_smollm2
def test_qwen3_gguf_names_its_per_head_norms(tmp_path, smol_tokenizer):
    ckpt, model = tiny_checkpoint(tmp_path, "w4g32s", smol_tokenizer, family="qwen3")
    out = tmp_path / "m.gguf"
    lmpress.export_model(ckpt, "gguf", out, progress=False)
    reader = gguf.GGUFReader(str(out))
    names = {t.name for t in reader.tensors}
    assert reader.fields["general.architecture"].contents() == "qwen3"
    assert {"blk.0.attn_q_norm.weight", "blk.0.attn_k_norm.weight"} <= names
    assert reader.fields["qwen3.attention.key_length"].contents() == model.config.head_dim


def summary_name(summary: dict, module: str) -> str:
    return next(k for k, v in summary["tensors"].items() if v["module"] == module)


def test_rotary_row_order_is_llama_cpp_permutation():
    """The permutation of llama.cpp's converter: [h, 2, d/2] -> [h, d/2, 2] on the rows."""
    w = torch.arange(2 * 8).reshape(2 * 8, 1).float()
    ref = w.reshape(2, 2, 4, 1).swapaxes(1, 2).reshape(w.shape)
    assert torch.equal(w[rotary_row_order(16, 2)], ref)


@needs_smollm2
def test_export_refuses_existing_output_and_unknown_format(tmp_path, smol_tokenizer):
    ckpt, _ = tiny_checkpoint(tmp_path, "w4g32", smol_tokenizer)
    out = tmp_path / "m.gguf"
    out.write_text("x")
    with pytest.raises(LmpressError, match="already exists; pass --overwrite"):
        lmpress.export_model(ckpt, "gguf", out, progress=False)
    with pytest.raises(LmpressError, match="unknown export format 'onnx'"):
        lmpress.export_model(ckpt, "onnx", tmp_path / "o", progress=False)
    with pytest.raises(LmpressError, match="does not exist"):
        lmpress.export_model(tmp_path / "missing", "gguf", tmp_path / "x.gguf", progress=False)
    assert out.read_text() == "x"
    assert not list(tmp_path.glob(".m.gguf.tmp-*"))


@needs_smollm2
@needs_ct
@pytest.mark.parametrize("scheme", ["w4g128", "w4g32s", "w8", "w3g64", "w2g32s:bf16"])
def test_compressed_tensors_decompresses_bit_exact(tmp_path, smol_tokenizer, scheme):
    from compressed_tensors.entrypoints.convert import CompressedTensorsDequantizer
    from safetensors.torch import load_file

    ckpt, model = tiny_checkpoint(tmp_path, scheme, smol_tokenizer)
    for sdt in ("native", "float32"):
        out = tmp_path / f"ct-{sdt}"
        lmpress.export_model(ckpt, "compressed-tensors", out, scale_dtype=sdt, progress=False)
        dense = CompressedTensorsDequantizer(out, dtype=torch.float32).process(
            load_file(str(out / "model.safetensors"))
        )
        for name, m in qlinears(model).items():
            w = m.packed().dequantize()
            # native: decompressed in the scales' dtype, i.e. lmpress's weights in that dtype
            want = w if sdt == "float32" else w.to(m.scheme.torch_scale_dtype).float()
            assert torch.equal(dense[name + ".weight"], want), (sdt, name)
        back = load_model(str(out)).model  # and lmpress imports it exactly
        for name, m in qlinears(back).items():
            assert torch.equal(m.packed().dequantize(), qlinears(model)[name].packed().dequantize())


@needs_smollm2
@needs_ct
def test_compressed_tensors_export_loads_in_transformers(tmp_path, smol_tokenizer):
    from transformers import AutoModelForCausalLM
    from transformers.utils.quantization_config import CompressedTensorsConfig

    ckpt, model = tiny_checkpoint(tmp_path, "w4g128", smol_tokenizer)
    out = tmp_path / "ct"
    lmpress.export_model(ckpt, "compressed-tensors", out, scale_dtype="float32", progress=False)
    hf = AutoModelForCausalLM.from_pretrained(
        out, dtype=torch.float32, quantization_config=CompressedTensorsConfig(dequantize=True)
    )
    ids = torch.randint(0, 500, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(hf(ids).logits, lmpress.load(ckpt)(ids).logits)
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["format"] == "pack-quantized" and "lm_head" in qc["ignore"]


@pytest.mark.parametrize("to", ["compressed-tensors", "gptq"])
def test_export_producer_is_a_dict_vllm_can_read(tmp_path, to):
    """Regression: ``producer`` was the string "lmpress", and vLLM (0.32) reads
    ``quantization_config.get("producer", {}).get("name")`` from every checkpoint, so it
    failed to load the export. It is now ModelOpt's shape, a dict of name and version
    (compressed-tensors itself writes no producer)."""
    model = tiny_model("llama")
    ids = torch.randint(0, 500, (4, 16), generator=torch.Generator().manual_seed(0))
    quantize_model(model, Recipe(method="rtn", scheme="w4g128"), ids, progress=False)
    ckpt = save_checkpoint(model, None, tmp_path / "q")
    lmpress.export_model(ckpt, to, tmp_path / "out", progress=False)
    qc = json.loads((tmp_path / "out" / "config.json").read_text())["quantization_config"]
    assert qc["producer"] == {"name": "lmpress", "version": lmpress.__version__}
    assert qc.get("producer", {}).get("name") == "lmpress"  # vLLM's own read


@needs_smollm2
@pytest.mark.parametrize("scheme", ["w4g128", "w4g32s", "w8", "w2g64"])
def test_gptq_export_import_round_trip(tmp_path, smol_tokenizer, scheme):
    ckpt, model = tiny_checkpoint(tmp_path, scheme, smol_tokenizer)
    out = tmp_path / "gptq"
    lmpress.export_model(ckpt, "gptq", out, progress=False)
    back = load_model(str(out)).model
    ids = torch.randint(0, 500, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(back(ids).logits, lmpress.load(ckpt)(ids).logits)
    assert all(isinstance(m, QLinear) for m in qlinears(back).values())


def test_gptq_act_order_import_loads_dense_exactly(tmp_path):
    """A GPTQ module whose g_idx is a permutation has no lmpress form: float, exact."""
    from safetensors.torch import save_file

    from lmpress.packing.int32 import pack_int32_rows

    model = tiny_model("llama")
    k, n, g, bits = 64, 64, 32, 4
    torch.manual_seed(0)
    codes = torch.randint(0, 16, (n, k))
    scales = torch.rand(k // g, n).half() + 0.1
    zeros = torch.randint(1, 15, (k // g, n))
    g_idx = (torch.randperm(k) % (k // g)).to(torch.int32)
    state = {
        kk: v.clone().contiguous() for kk, v in model.state_dict().items() if "q_proj" not in kk
    }
    name = "model.layers.0.self_attn.q_proj"
    state[name + ".qweight"] = pack_int32_rows(codes, bits).t().contiguous()
    state[name + ".qzeros"] = pack_int32_rows(zeros - 1, bits)
    state[name + ".scales"] = scales
    state[name + ".g_idx"] = g_idx
    for i in (1,):  # the other q_proj: plain groups
        other = f"model.layers.{i}.self_attn.q_proj"
        state[other + ".qweight"] = pack_int32_rows(codes, bits).t().contiguous()
        state[other + ".qzeros"] = pack_int32_rows(zeros - 1, bits)
        state[other + ".scales"] = scales.clone()
        state[other + ".g_idx"] = (torch.arange(k) // g).to(torch.int32)
    save_file(state, str(tmp_path / "model.safetensors"))
    cfg = model.config.to_dict()
    cfg["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": g, "sym": False}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.warns(UserWarning, match="act-order"):
        m = load_model(str(tmp_path)).model
    dense = m.get_submodule(name)
    assert not isinstance(dense, QLinear)
    want = (codes.float() - zeros.t().float()[:, g_idx.long()]) * scales.t().float()[
        :, g_idx.long()
    ]
    assert torch.equal(dense.weight, want)
    assert isinstance(m.get_submodule("model.layers.1.self_attn.q_proj"), QLinear)


@needs_smollm2
@needs_llamacpp
@pytest.mark.parametrize("scheme,family", [("w4g32s", "llama"), ("w8s", "llama"), ("w8s", "qwen3")])
def test_gguf_runs_in_llama_cpp(tmp_path, smol_tokenizer, scheme, family):
    """llama.cpp's logits for the exported GGUF agree with lmpress's model."""
    from lmpress.eval.llamacpp import llamacpp_logits

    ckpt, model = tiny_checkpoint(tmp_path, scheme, smol_tokenizer, family=family)
    out = tmp_path / "m.gguf"
    lmpress.export_model(ckpt, "gguf", out, progress=False)
    ids = torch.randint(0, 500, (64,), generator=torch.Generator().manual_seed(2)).tolist()
    theirs = llamacpp_logits(out, ids, threads=1)
    with torch.no_grad():
        ours = lmpress.load(ckpt)(torch.tensor([ids])).logits[0]
    agree = (theirs.argmax(-1) == ours.argmax(-1)).float().mean().item()
    assert agree >= 0.9, agree
    assert (theirs - ours).abs().max() < 0.1 * ours.abs().max()


@needs_smollm2
@needs_llamacpp
@pytest.mark.skipif(not llamacpp_has_blas(), reason="llama-cpp-python built without BLAS")
def test_gguf_float_path_isolates_the_exported_weights(tmp_path, smol_tokenizer):
    """On ggml's BLAS path (dequantized weights, float activations) an exact-grid export
    reproduces lmpress's logits far more closely than the CPU path's 8-bit activations."""
    from lmpress.eval.llamacpp import llamacpp_logits

    ckpt, _ = tiny_checkpoint(tmp_path, "w4g32s", smol_tokenizer)
    out = tmp_path / "m.gguf"
    lmpress.export_model(ckpt, "gguf", out, progress=False, embed_type="f32")
    ids = torch.randint(0, 500, (64,), generator=torch.Generator().manual_seed(3)).tolist()
    with torch.no_grad():
        ours = lmpress.load(ckpt)(torch.tensor([ids])).logits[0]
    cpu = (llamacpp_logits(out, ids, threads=1) - ours).abs().max()
    flt = (llamacpp_logits(out, ids, threads=1, float_path=True) - ours).abs().max()
    assert flt < 0.2 * cpu, (flt, cpu)


@needs_smollm2
@needs_llamacpp
def test_llama_cpp_decode_follows_its_own_logits(tmp_path, smol_tokenizer):
    """The decode-speed loop picks each token from the logits of the step before (a loop
    that read a stale row of llama-cpp-python's scores would decode other tokens)."""
    from lmpress.eval.llamacpp import llamacpp_decode_speed, llamacpp_logits

    ckpt, _ = tiny_checkpoint(tmp_path, "w8s", smol_tokenizer)
    out = tmp_path / "m.gguf"
    lmpress.export_model(ckpt, "gguf", out, progress=False)
    prompt = torch.randint(0, 500, (16,), generator=torch.Generator().manual_seed(3)).tolist()
    ids = llamacpp_decode_speed(out, prompt, 6, threads=1)["ids"]
    forced = llamacpp_logits(out, prompt + ids, threads=1).argmax(-1)
    assert ids == forced[len(prompt) - 1 : -1].tolist()
