"""compressed-tensors export and import of the float formats (FP8, NVFP4, MX).

Each export is read back by the ``compressed-tensors`` package itself (its compressors'
``decompress``) and by transformers; each import is of a checkpoint that
compressed-tensors wrote (its ``ModelCompressor``), never lmpress's exporter.
"""

import importlib.util
import json
import shutil
import warnings

import pytest
import torch
from conftest import tiny_model

import lmpress
from lmpress.checkpoint import save_checkpoint
from lmpress.errors import LmpressError
from lmpress.models.load import load_model
from lmpress.nn.qlinear import QLinear
from lmpress.pipeline import quantize_model
from lmpress.recipe import Recipe

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("compressed_tensors") is None, reason="compressed-tensors missing"
)

# lmpress scheme -> the compressed-tensors format its export is written in
CT_CASES = {
    "fp8": "float-quantized",
    "fp8gt": "float-quantized",
    "fp8b128": "float-quantized",
    "nvfp4": "nvfp4-pack-quantized",
    "mxfp4": "mxfp4-pack-quantized",
    "mxfp6": "mxfp6-pack-quantized",
    "mxfp8": "mxfp8-quantized",
}
IDS = torch.randint(0, 500, (4, 16), generator=torch.Generator().manual_seed(0))


def quantized_tiny(recipe: "str | Recipe") -> torch.nn.Module:
    """The tiny random Llama (vocab 512) quantized with RTN under ``recipe``."""
    model = tiny_model("llama", vocab=512)
    r = recipe if isinstance(recipe, Recipe) else Recipe(method="rtn", scheme=recipe)
    quantize_model(model, r, IDS, progress=False)
    return model


def qlinears(model) -> dict[str, QLinear]:
    """The model's QLinear modules, each set to lmpress's reference path (the stored
    weight dequantized, then a float32 matmul), which the comparisons are about."""
    mods = {n: m for n, m in model.named_modules() if isinstance(m, QLinear)}
    for m in mods.values():
        m.set_kernel("torch")
    return mods


def export(tmp_path, scheme: str, **options):
    """``scheme``'s tiny model saved as an lmpress checkpoint and exported to
    compressed-tensors: ``(export dir, quantized model, summary)``."""
    model = quantized_tiny(scheme)
    ckpt = save_checkpoint(model, None, tmp_path / f"ckpt-{scheme}")
    out = tmp_path / f"ct-{scheme}"
    summary = lmpress.export_model(ckpt, "compressed-tensors", out, progress=False, **options)
    return out, model, summary


def ct_decompress(out) -> dict[str, torch.Tensor]:
    """Every quantized module's weight as compressed-tensors decompresses it: the config
    parsed by its ``QuantizationConfig``, each group's compressor (by the group's
    ``format``) run on that module's tensors. In the compressor's own output dtype."""
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationConfig
    from compressed_tensors.utils.match import match_name
    from safetensors.torch import load_file

    qc = QuantizationConfig.model_validate(
        json.loads((out / "config.json").read_text())["quantization_config"]
    )
    state = load_file(str(out / "model.safetensors"))
    got = {}
    for scheme in qc.config_groups.values():
        compressor = BaseCompressor.get_value_from_registry(scheme.format or qc.format)
        names = compressor.compression_param_names(scheme)
        prefix = "." + names[1]  # every layout stores weight_scale
        for key in [k for k in state if k.endswith(prefix)]:
            module = key.removesuffix(prefix)
            if scheme.targets != ["Linear"] and not any(
                match_name(module, t) for t in scheme.targets
            ):
                continue
            local = {n: state[f"{module}.{n}"] for n in names}
            got[module] = compressor.decompress(local, scheme)["weight"]
    return got


def nvfp4_float32(out, module: str) -> torch.Tensor:
    """An NVFP4 module decoded by compressed-tensors' own unpacking and ``dequantize``
    run in float32 (its compressor casts the result to bfloat16 at the end)."""
    from compressed_tensors.compressors.nvfp4.helpers import unpack_fp4_from_uint8
    from compressed_tensors.quantization import QuantizationConfig
    from compressed_tensors.quantization.lifecycle.forward import dequantize
    from safetensors.torch import load_file

    qc = QuantizationConfig.model_validate(
        json.loads((out / "config.json").read_text())["quantization_config"]
    )
    args = next(iter(qc.config_groups.values())).weights
    st = load_file(str(out / "model.safetensors"))
    packed = st[f"{module}.weight_packed"]
    x = unpack_fp4_from_uint8(packed, packed.shape[0], packed.shape[1] * 2, dtype=torch.float32)
    return dequantize(
        x,
        st[f"{module}.weight_scale"].to(torch.float32),
        args=args,
        global_scale=st[f"{module}.weight_global_scale"],
        dtype=torch.float32,
    )


# lmpress's per-matrix NVFP4 tensor scales warn on export (their own test is below)
quiet_nvfp4 = pytest.mark.filterwarnings("ignore:nvfp4 q/k/v:UserWarning")


@quiet_nvfp4
@pytest.mark.parametrize("scheme", list(CT_CASES))
def test_ct_decompresses_float_formats_bit_exact(tmp_path, scheme):
    """compressed-tensors' decompress gives lmpress's float32 weights bit for bit.

    FP8 decompresses in float32 (its scales' dtype) and is compared as is. The MX and
    NVFP4 compressors return bfloat16: MX values are a float element times a power of
    two, which bfloat16 holds exactly, so the bfloat16 output converted back equals the
    float32 weight; NVFP4's ``e2m1 * (block / global)`` is computed in float32 and then
    rounded, so its compressor output equals lmpress's weight rounded to bfloat16 and the
    same compressed-tensors functions run at float32 equal it bit for bit.
    """
    out, model, summary = export(tmp_path, scheme)
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["format"] == CT_CASES[scheme] == summary["formats"][0]
    assert qc["producer"] == {"name": "lmpress", "version": lmpress.__version__}
    got = ct_decompress(out)
    mods = qlinears(model)
    assert set(got) == set(mods)
    for name, m in mods.items():
        want = m.packed().dequantize()
        w = got[name]
        if w.dtype == torch.float32 or scheme.startswith("mx"):
            assert torch.equal(w.float(), want), name
        else:
            assert torch.equal(w, want.to(w.dtype)), name
            assert torch.equal(nvfp4_float32(out, name), want), name
    # compressed-tensors' model-free dequantizer (its convert entrypoint) agrees
    from compressed_tensors.entrypoints.convert import CompressedTensorsDequantizer
    from safetensors.torch import load_file

    dense = CompressedTensorsDequantizer(out, dtype=torch.float32).process(
        load_file(str(out / "model.safetensors"))
    )
    for name, m in mods.items():
        want = m.packed().dequantize()
        want = want.to(torch.bfloat16).float() if scheme == "nvfp4" else want
        assert torch.equal(dense[name + ".weight"], want), name
    # and lmpress imports its own export byte for byte, as the same scheme
    back = qlinears(load_model(str(out)).model)
    for name, m in mods.items():
        assert back[name].scheme == m.scheme, name
        assert torch.equal(back[name].packed().dequantize(), m.packed().dequantize()), name


@quiet_nvfp4
@pytest.mark.filterwarnings("ignore:You passed `quantization_config`:UserWarning")
@pytest.mark.parametrize("scheme", list(CT_CASES))
def test_ct_float_export_loads_in_transformers(tmp_path, scheme):
    """transformers loads the export (decompressing through compressed-tensors) and its
    logits are lmpress's: exactly where the decompressed weights are lmpress's float32
    weights, and within bfloat16 rounding of the weights for NVFP4."""
    from transformers import AutoModelForCausalLM
    from transformers.utils.quantization_config import CompressedTensorsConfig

    out, model, _ = export(tmp_path, scheme)
    hf = AutoModelForCausalLM.from_pretrained(
        out, dtype=torch.float32, quantization_config=CompressedTensorsConfig(dequantize=True)
    )
    mods = qlinears(model)
    for name, m in mods.items():
        w = hf.get_submodule(name).weight
        want = m.packed().dequantize()
        exact = scheme != "nvfp4"
        assert torch.equal(w, want if exact else want.to(torch.bfloat16).float()), name
    ids = IDS[:1, :12]
    with torch.no_grad():
        got, ref = hf(ids).logits, model(ids).logits
    if scheme == "nvfp4":
        torch.testing.assert_close(got, ref, rtol=1e-2, atol=1e-2)
    else:
        assert torch.equal(got, ref)


@pytest.mark.parametrize(
    ("scheme", "says"),
    [
        ("nf4g64", "NormalFloat"),
        ("fp4g32", "nvfp4 or mxfp4"),
        ("lut4g128", "learned"),
        ("nupes4g64", "power-law"),
        ("mix4g64", "mixed"),
        ("fp8:e5m2", "E4M3 only"),
        ("mxfp6:e3m2", "E2M3"),
    ],
)
def test_ct_refuses_formats_it_cannot_store(tmp_path, scheme, says):
    """A format compressed-tensors has no layout for fails before anything is written,
    in one line naming the module, the scheme and what to use instead."""
    model = quantized_tiny(scheme)
    ckpt = save_checkpoint(model, None, tmp_path / "ckpt")
    out = tmp_path / "ct"
    with pytest.raises(LmpressError) as e:
        lmpress.export_model(ckpt, "compressed-tensors", out, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and scheme in msg and says in msg, msg
    assert "instead" in msg or "use " in msg, msg
    assert not out.exists() and not list(tmp_path.glob(".ct.tmp-*"))


def test_ct_mixed_formats_write_one_group_per_format(tmp_path):
    """Modules of different formats: top-level ``mixed-precision``, each group carrying its
    own format and targets, and compressed-tensors decompresses all of them exactly.
    (transformers 5.25 decodes every dense module with the first group: the export
    warns, and this test does not load it there.)"""
    recipe = Recipe.from_dict(
        {
            "method": "rtn",
            "scheme": "fp8",
            "overrides": [
                {"pattern": "mlp", "scheme": "mxfp4"},
                {"pattern": "o_proj", "scheme": "w4g32"},
            ],
        }
    )
    model = quantized_tiny(recipe)
    ckpt = save_checkpoint(model, None, tmp_path / "ckpt")
    out = tmp_path / "ct"
    with pytest.warns(UserWarning, match="first group's scheme"):
        lmpress.export_model(ckpt, "compressed-tensors", out, scale_dtype="float32", progress=False)
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["format"] == "mixed-precision"
    formats = {g["format"] for g in qc["config_groups"].values()}
    assert formats == {"float-quantized", "mxfp4-pack-quantized", "pack-quantized"}
    got = ct_decompress(out)
    for name, m in qlinears(model).items():
        assert torch.equal(got[name].float(), m.packed().dequantize()), name


def test_nvfp4_export_reports_unshared_tensor_scales(tmp_path):
    """lmpress's NVFP4 has one tensor scale per matrix; vLLM fuses q/k/v and gate/up
    with one, so the export says which fused groups differ."""
    model = quantized_tiny("nvfp4")
    ckpt = save_checkpoint(model, None, tmp_path / "ckpt")
    with pytest.warns(UserWarning, match="different tensor scales"):
        summary = lmpress.export_model(ckpt, "compressed-tensors", tmp_path / "ct", progress=False)
    assert "model.layers.0.self_attn" in summary["nvfp4_unshared_global_scales"]


# compressed-tensors preset -> the lmpress scheme its checkpoint imports as
CT_PRESETS = {
    "FP8_DYNAMIC": "fp8",  # FP8 per-channel weights, FP8 dynamic per-token inputs
    "FP8_BLOCK": "fp8b128",
    "NVFP4A16": "nvfp4",
    "MXFP4A16": "mxfp4",
    "MXFP8A16": "mxfp8",
}


def ct_checkpoint(tmp_path, preset: str):
    """A tiny Llama quantized and saved by compressed-tensors itself: its preset scheme
    applied, each weight's scales (and NVFP4 tensor scale) computed min-max by its
    ``calculate_qparams`` / ``generate_gparam``, compressed by ``ModelCompressor``."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationConfig,
        apply_quantization_config,
        preset_name_to_scheme,
    )
    from compressed_tensors.quantization.utils import maybe_pad_tensor_for_block_quant
    from compressed_tensors.quantization.utils.helpers import calculate_qparams, generate_gparam

    model = tiny_model("llama", vocab=512)
    scheme = preset_name_to_scheme(preset, ["Linear"])
    apply_quantization_config(
        model, QuantizationConfig(config_groups={"group_0": scheme}, ignore=["lm_head"])
    )
    for mod in model.modules():
        if not hasattr(mod, "quantization_scheme"):
            continue
        args = mod.quantization_scheme.weights
        w = mod.weight.detach()
        gs = None
        if args.strategy == "tensor_group":
            gs = generate_gparam(w.min(), w.max())
            mod.weight_global_scale.data.copy_(gs)
        if args.strategy == "channel":
            lo, hi = w.amin(1, keepdim=True), w.amax(1, keepdim=True)
        elif args.strategy == "block":
            bh, bw = args.block_structure
            p = maybe_pad_tensor_for_block_quant(w, (bh, bw))
            blocks = p.reshape(p.shape[0] // bh, bh, p.shape[1] // bw, bw).transpose(1, 2)
            lo, hi = blocks.amin((-1, -2)), blocks.amax((-1, -2))
        else:  # group, tensor_group
            g = w.unflatten(-1, (-1, args.group_size))
            lo, hi = g.amin(-1), g.amax(-1)
        scale, _ = calculate_qparams(lo, hi, args, global_scale=gs)
        mod.weight_scale.data.copy_(scale.to(mod.weight_scale.dtype))
    d = tmp_path / f"ct-{preset}"
    compressor = ModelCompressor.from_pretrained_model(model)
    compressor.compress_model(model)
    model.save_pretrained(d)
    compressor.update_config(d)
    return d


@pytest.mark.parametrize("preset", list(CT_PRESETS))
def test_imports_checkpoints_compressed_tensors_wrote(tmp_path, preset):
    """lmpress loads a compressed-tensors FP8 / NVFP4 / MX checkpoint into its own
    QLinear of the matching format, decoding to what compressed-tensors decompresses
    (FP8 in float32; NVFP4 and MX as compared in the export test above)."""
    d = ct_checkpoint(tmp_path, preset)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_model(str(d)).model
    act = [w for w in caught if "quantize their inputs" in str(w.message)]
    assert bool(act) == (preset.startswith("FP8")), [str(w.message) for w in caught]
    mods = qlinears(loaded)
    got = ct_decompress(d)
    assert set(mods) == set(got) and len(mods) == 14
    for name, m in mods.items():
        assert m.scheme.name == CT_PRESETS[preset], name
        mine, w = m.packed().dequantize(), got[name]
        if w.dtype == torch.float32 or preset.startswith("MX"):
            assert torch.equal(mine, w.float()), name
        else:
            assert torch.equal(mine.to(w.dtype), w), name
            assert torch.equal(mine, nvfp4_float32(d, name)), name
    qc = loaded.config.quantization_config
    assert qc["imported_from"] == "compressed-tensors" and qc["format_version"] == 3
    # lmpress re-exports what it imported as the same bytes
    out = tmp_path / "again"
    shutil.rmtree(out, ignore_errors=True)
    ckpt = save_checkpoint(loaded, None, tmp_path / "imported")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nvfp4's per-matrix tensor scales, reported above
        lmpress.export_model(ckpt, "compressed-tensors", out, progress=False)
    again = ct_decompress(out)
    for name in mods:
        assert torch.equal(again[name], got[name]), name
