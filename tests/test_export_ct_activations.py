"""compressed-tensors export of quantized activations (W8A8 int8, FP8 dynamic and
static): read back by the compressed-tensors package and by transformers."""

import importlib.util
import json
import warnings

import pytest
import torch
from test_export_ct_formats import IDS, ct_decompress, export, qlinears

import lmpress
from lmpress.checkpoint import save_checkpoint
from lmpress.errors import LmpressError
from lmpress.pipeline import quantize_model
from lmpress.recipe import Recipe

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("compressed_tensors") is None, reason="compressed-tensors missing"
)
CASES = {
    "w8sa8": ("int-quantized", "int", "token"),
    "w8sa8s": ("int-quantized", "int", "tensor"),
    "fp8a8": ("float-quantized", "float", "token"),
    "fp8a8s": ("float-quantized", "float", "tensor"),
}


@pytest.mark.parametrize("scheme", list(CASES))
def test_decompresses_bit_exact_with_its_activation_args(tmp_path, scheme):
    out, model, summary = export(tmp_path, scheme, scale_dtype="float32")
    fmt, typ, strategy = CASES[scheme]
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["format"] == fmt
    inputs = qc["config_groups"]["group_0"]["input_activations"]
    assert (inputs["type"], inputs["strategy"], inputs["num_bits"]) == (typ, strategy, 8)
    assert inputs["dynamic"] is (strategy == "token")
    got = ct_decompress(out)
    mods = qlinears(model)
    assert set(got) == set(mods)
    from safetensors.torch import load_file

    state = load_file(str(out / "model.safetensors"))
    for name, m in mods.items():
        assert torch.equal(got[name].float(), m.packed().dequantize()), name
        if strategy == "tensor":
            assert torch.equal(state[name + ".input_scale"], m.input_scale.float()), name
        else:
            assert name + ".input_scale" not in state


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("scheme", list(CASES))
def test_transformers_runs_the_export_like_lmpress(tmp_path, scheme):
    """transformers (through compressed-tensors) quantizes the inputs as the config says:
    the logits are lmpress's exactly, except for dynamic int8, whose per-token scale
    compressed-tensors divides by 127.5 where lmpress (and vLLM) divide by 127."""
    from transformers import AutoModelForCausalLM

    out, model, _ = export(tmp_path, scheme, scale_dtype="float32")
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    ids = IDS[:1, :12]
    with torch.no_grad():
        got, ref = hf(ids).logits, model(ids).logits
    if scheme == "w8sa8":
        torch.testing.assert_close(got, ref, rtol=0.05, atol=0.02)
    else:
        assert torch.equal(got, ref)


@pytest.mark.parametrize(
    ("scheme", "says"),
    [
        ("w4g128a8", "symmetric per-channel int8"),
        ("w8sa4", "int8 or fp8"),
        ("nvfp4a4", "int8 or fp8"),
        ("fp8b128a8", "per channel or tensor"),
        ("w8sa8:fp8", "fp8 activations go with E4M3"),
    ],
)
def test_pairs_without_a_layout_are_refused(tmp_path, scheme, says):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(LmpressError, match=says):
            export(tmp_path, scheme)
    assert not (tmp_path / f"ct-{scheme}").exists()


def test_kv_cache_and_online_rotations_are_refused(tmp_path):
    from conftest import tiny_model

    for i, recipe in enumerate(
        (
            Recipe(method="rtn", scheme="w8sa8", kv_cache="kv8"),
            Recipe(method="rtn", scheme="w8sa8", transforms=["hadamard"]),
        )
    ):
        m = tiny_model("llama")
        quantize_model(m, recipe, None, progress=False)
        ck = save_checkpoint(m, None, tmp_path / f"ck{i}")
        with pytest.raises(LmpressError, match="kv cache|online"):
            lmpress.export_model(ck, "compressed-tensors", tmp_path / f"ct{i}", progress=False)
