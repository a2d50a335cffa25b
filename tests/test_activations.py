"""Activation schemes: spellings, the simulated quantized product against an integer
reference, static calibration, checkpoints, and the runtimes that must refuse them."""

import pytest
import torch
from conftest import tiny_model

from lmpress.checkpoint import load_checkpoint, save_checkpoint
from lmpress.errors import LmpressError
from lmpress.export.base import exportable_modules
from lmpress.formats.activation import ActScheme, quantize_activation
from lmpress.formats.scheme import Scheme, parse_scheme
from lmpress.nn.kv_cache import KVScheme, install_kv_quant, kv_scheme_of, parse_kv, quantize_kv
from lmpress.nn.qlinear import QLinear, online_parts
from lmpress.packing.packed import PackedWeight
from lmpress.pipeline import quantize_model
from lmpress.recipe import Recipe


@pytest.mark.parametrize(
    "text, weight, act",
    [
        ("w8a8", "w8", ActScheme("int", 8)),
        ("w4g128a8", "w4g128", ActScheme("int", 8)),
        ("w8a8s", "w8", ActScheme("int", 8, dynamic=False)),
        ("w4a4", "w4", ActScheme("int", 4, clip=0.9)),
        ("fp8a8", "fp8", ActScheme("fp8", 8)),
        ("w4a8:fp8", "w4", ActScheme("fp8", 8)),
        ("nvfp4a4", "nvfp4", ActScheme("nvfp4", 4)),
        ("mxfp4a4", "mxfp4", ActScheme("mxfp4", 4)),
        ("nf4g64a8", "nf4g64", ActScheme("int", 8)),
    ],
)
def test_spellings(text, weight, act):
    s = parse_scheme(text)
    assert s.act == act
    assert s.weight_only == parse_scheme(weight)
    assert s.name == text
    assert Scheme.from_dict(s.to_dict()) == s
    assert parse_scheme(s.name) == s


def test_weight_only_spellings_unchanged():
    assert parse_scheme("w4a16") == parse_scheme("w4")
    assert parse_scheme("w4g128a").act is None  # "a": asymmetric, not activations
    assert "act" not in parse_scheme("w4g128").to_dict()


@pytest.mark.parametrize(
    "text, why",
    [
        ("w4a9", "bits"),
        ("mxfp4a4s", "block scales"),
        ("w4a8:nf4", "unknown"),
        ("fp8a4:fp8", "bits"),
    ],
)
def test_bad_suffixes_are_clear(text, why):
    with pytest.raises(LmpressError, match=why):
        parse_scheme(text)


def test_int8_per_token_matches_integer_reference():
    torch.manual_seed(0)
    x = torch.randn(5, 3, 48) * torch.linspace(0.1, 8, 48)
    act = ActScheme("int", 8)
    y = quantize_activation(x, act)
    s = x.abs().amax(-1, keepdim=True) / 127
    q = y / s
    assert torch.allclose(q, q.round(), atol=1e-4)
    assert float(q.abs().max()) <= 127.0 + 1e-4
    assert torch.allclose(y, torch.round(x / s) * s, atol=1e-6)


def test_w8a8_product_equals_integer_matmul():
    """What a W8A8 runtime computes: int8 x int8 products summed in integers, times the
    token's and the channel's scales."""
    torch.manual_seed(1)
    w = torch.randn(24, 40)
    scheme = parse_scheme("w8sa8")
    fmt = scheme.fmt
    params = fmt.choose_params(w)
    packed = PackedWeight.from_codes(fmt.encode(w, fmt.expand(params, 40)), params, scheme)
    lin = QLinear.from_packed(packed, None)
    lin.set_kernel("torch")
    x = torch.randn(7, 40) * 3
    sx = x.abs().amax(-1, keepdim=True) / 127
    qx = torch.round(x / sx).to(torch.int64)
    codes = packed.codes().to(torch.int64)
    zero = 2 ** (scheme.bits - 1)
    sw = fmt.expand(packed.params(), 40)["scale"][:, 0]
    ref = (qx @ (codes - zero).T).to(torch.float64) * sx.double() * sw.double()
    torch.testing.assert_close(lin(x).double(), ref, rtol=1e-5, atol=1e-5)


def test_fp8_activations_are_e4m3_values():
    torch.manual_seed(2)
    x = torch.randn(4, 64) * 10
    y = quantize_activation(x, ActScheme("fp8", 8))
    s = x.abs().amax(-1, keepdim=True) / 448
    z = (y / s).to(torch.float8_e4m3fn).to(torch.float32)
    torch.testing.assert_close(z * s, y)
    assert float((y - x).abs().max()) > 0


def test_block_activations_follow_the_weight_format():
    torch.manual_seed(3)
    x = torch.randn(2, 3, 64)
    fmt = parse_scheme("nvfp4").fmt
    rows = x.reshape(-1, 64)
    want = fmt.fake_quantize(rows, fmt.choose_params(rows)).reshape(x.shape)
    torch.testing.assert_close(quantize_activation(x, ActScheme("nvfp4", 4)), want)


def test_zero_rows_stay_zero():
    x = torch.zeros(2, 16)
    for act in (ActScheme("int", 8), ActScheme("fp8", 8), ActScheme("int", 4, clip=0.9)):
        assert torch.equal(quantize_activation(x, act), x)


def test_static_scales_are_calibrated():
    m = tiny_model("llama")
    ids = torch.randint(0, 512, (4, 16))
    recipe = Recipe(method="rtn", scheme="w8a8s")
    assert recipe.needs_calibration
    with pytest.raises(LmpressError, match="calibration"):
        quantize_model(tiny_model("llama"), recipe, None, progress=False)
    res = quantize_model(m, recipe, ids, progress=False)
    q = m.model.layers[0].self_attn.q_proj
    assert isinstance(q, QLinear) and q.input_scale is not None
    assert res.input_scales["model.layers.0.self_attn.q_proj"] == pytest.approx(
        float(q.input_scale), rel=1e-6
    )
    # the scale is the largest calibration input over 127
    seen = []
    h = q.register_forward_pre_hook(lambda _m, a: seen.append(a[0].abs().max()))
    q.observed_amax = 0.0  # observe mode: the input passes unquantized
    with torch.no_grad():
        m(ids)
    h.remove()
    q.observed_amax = None
    assert float(q.input_scale) == pytest.approx(float(max(seen)) / 127, rel=1e-5)


def test_activations_change_the_output_and_dynamic_needs_no_data():
    ids = torch.randint(0, 512, (2, 16))
    outs = {}
    for scheme in ("w8", "w8a8", "w8a4"):
        m = tiny_model("llama")
        recipe = Recipe(method="rtn", scheme=scheme)
        assert not recipe.needs_calibration
        quantize_model(m, recipe, None, progress=False)
        with torch.no_grad():
            outs[scheme] = m(ids).logits
    ref = outs["w8"]
    err8 = float((outs["w8a8"] - ref).abs().mean())
    err4 = float((outs["w8a4"] - ref).abs().mean())
    assert 0 < err8 < err4


def test_checkpoint_keeps_activation_schemes(tmp_path):
    m = tiny_model("llama")
    ids = torch.randint(0, 512, (4, 16))
    quantize_model(
        m,
        Recipe.from_dict(
            {"scheme": "w4g32a8s", "overrides": [{"pattern": "down_proj", "scheme": "w8a8"}]}
        ),
        ids,
        progress=False,
    )
    save_checkpoint(m, None, tmp_path / "ck")
    back, _ = load_checkpoint(tmp_path / "ck", with_tokenizer=False)
    assert back.model.layers[1].mlp.down_proj.scheme == parse_scheme("w8a8")
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, m(ids).logits)


def test_runtimes_that_cannot_run_them_refuse(tmp_path):
    from lmpress.api import export_model
    from lmpress.runtime.decoder import Decoder

    m = tiny_model("llama")
    quantize_model(m, Recipe(method="rtn", scheme="w8a8"), None, progress=False)
    assert online_parts(m)
    save_checkpoint(m, None, tmp_path / "ck")
    for fmt in ("compressed-tensors", "gptq"):
        with pytest.raises(LmpressError, match="activations"):
            export_model(tmp_path / "ck", fmt, tmp_path / fmt, progress=False)
        assert not (tmp_path / fmt).exists()
    with pytest.raises(LmpressError, match="activations"):
        exportable_modules(m, "GGUF")
    with pytest.raises(LmpressError, match="activations"):
        Decoder(m)


def test_kv_spellings():
    assert parse_kv("kv8") == KVScheme("int", 8)
    assert parse_kv("kv4h") == KVScheme("int", 4, rotate_keys=True)
    assert parse_kv("kvfp8") == KVScheme("fp8", 8)
    assert parse_kv("kv4h").name == "kv4h"
    for bad in ("kv16", "kvfp4", "k8"):
        with pytest.raises(LmpressError, match="kv"):
            parse_kv(bad)


def test_kv_quantization_is_per_row_and_idempotent():
    torch.manual_seed(4)
    x = torch.randn(2, 3, 10, 16) * 4
    for kv in (KVScheme("int", 4), KVScheme("int", 8), KVScheme("fp8", 8)):
        y = quantize_kv(x, kv)
        torch.testing.assert_close(quantize_kv(y, kv), y, rtol=0, atol=1e-5)
        # the ends of each row's range are kept (integers) and the error is bounded
        if kv.format == "int":
            torch.testing.assert_close(y.amax(-1), x.amax(-1), rtol=0, atol=1e-5)
            step = (x.amax(-1) - x.amin(-1)) / (2**kv.bits - 1)
            assert bool(((y - x).abs() <= step.unsqueeze(-1) / 2 + 1e-5).all())


def test_kv_cache_changes_attention_by_its_bits_and_round_trips(tmp_path):
    ids = torch.randint(0, 512, (2, 24))
    logits, models = {}, {}
    for kv in (None, "kv8", "kv4", "kv4h"):
        m = tiny_model("llama")
        quantize_model(m, Recipe(method="rtn", scheme="w8", kv_cache=kv), None, progress=False)
        with torch.no_grad():
            logits[kv] = m(ids).logits
        models[kv] = m
    ref = logits[None]
    e8, e4 = (float((logits[k] - ref).abs().mean()) for k in ("kv8", "kv4"))
    assert 0 < e8 < e4
    assert online_parts(models["kv4"]) == ["the kv cache (kv4)"]
    save_checkpoint(models["kv4h"], None, tmp_path / "ck")
    config = (tmp_path / "ck" / "config.json").read_text()
    assert "lmpress_kv_" not in config  # transformers alone still loads the directory
    back, _ = load_checkpoint(tmp_path / "ck", with_tokenizer=False)
    assert kv_scheme_of(back) == KVScheme("int", 4, rotate_keys=True)
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, logits["kv4h"])


def test_key_rotation_keeps_scores():
    from lmpress.transforms.hadamard import rotate

    q, k = torch.randn(3, 10, 64, dtype=torch.float64), torch.randn(3, 12, 64, dtype=torch.float64)
    torch.testing.assert_close(rotate(q, 64) @ rotate(k, 64).mT, q @ k.mT)


def test_kv_cache_is_refused_where_it_cannot_hook():
    with pytest.raises(LmpressError, match="k_proj and v_proj"):
        install_kv_quant(tiny_model("gpt2"), KVScheme())
