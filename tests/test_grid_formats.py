"""The float and non-uniform grid formats: spellings, tables, scales, storage, methods."""

import sys
from pathlib import Path

import pytest
import torch

from lmpress.errors import LmpressError
from lmpress.formats.minifloat import E2M1, E2M3, E3M2, E4M3, E5M2, minifloat_values
from lmpress.formats.mx import spec_exponent
from lmpress.formats.scheme import Scheme, parse_scheme
from lmpress.methods import get_method
from lmpress.methods.gptq import gptq
from lmpress.methods.rtn import rtn
from lmpress.packing.packed import PackedWeight, concat_rows

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny_model  # noqa: E402

GRID_SPECS = [
    "fp8",
    "fp8:e5m2",
    "fp8gt",
    "fp8b128",
    "nvfp4",
    "mxfp4",
    "mxfp6",
    "mxfp6:e3m2",
    "mxfp8",
    "mxfp8:e5m2",
    "fp4g32",
    "fp4g64:bf16",
    "nf4g64",
    "lut4",
    "lut3",
    "lut4g128",
    "nupes4g64",
    "mix4g64",
    "iq4nlg32",
]


def weights(rows: int = 40, cols: int = 200, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * 0.02
    w[3, 7] = 0.4  # an outlier, as real weights have
    return w


@pytest.mark.parametrize("spec", GRID_SPECS)
def test_spelling_round_trips(spec):
    s = parse_scheme(spec)
    assert s.name == spec
    assert Scheme.from_dict(s.to_dict()) == s
    assert parse_scheme(s.name) == s


@pytest.mark.parametrize(
    "bad", ["mxfp5", "mxfp4:e3m2", "nvfp4g32", "fp8:e3m4", "lut5", "nf3g64", "fp4g0"]
)
def test_bad_spellings_say_what_is_expected(bad):
    with pytest.raises(LmpressError):
        parse_scheme(bad)


def test_bad_dicts_are_refused():
    with pytest.raises(LmpressError, match="stores scales"):
        Scheme(
            bits=4,
            format="fp4",
            granularity="group",
            group_size=32,
            symmetric=True,
            scale_dtype="e8m0",
        )
    with pytest.raises(LmpressError, match="have 32 elements"):
        Scheme(
            bits=4,
            format="mx",
            granularity="group",
            group_size=16,
            symmetric=True,
            scale_dtype="e8m0",
        )
    with pytest.raises(LmpressError, match="no zero points"):
        Scheme(bits=4, format="nf4", granularity="group", group_size=64)
    with pytest.raises(LmpressError, match="fp16 or bf16"):
        Scheme(bits=4, granularity="group", group_size=64, scale_dtype="e8m0")


def test_fp8_tables_are_torchs_fp8():
    codes = torch.arange(256, dtype=torch.uint8)
    for fmt, dt in ((E4M3, torch.float8_e4m3fn), (E5M2, torch.float8_e5m2)):
        ours, ref = minifloat_values(fmt), codes.view(dt).float()
        finite = torch.isfinite(ref)
        assert torch.equal(ours[finite], ref[finite])
        assert torch.isnan(ours[~finite]).all()
    assert E4M3.max == 448 and E5M2.max == 57344


def test_small_float_tables():
    assert minifloat_values(E2M1)[:8].tolist() == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    assert E2M3.max == 7.5 and E3M2.max == 28 and E2M1.emax == 2
    assert torch.isfinite(minifloat_values(E2M3)).all()


@pytest.mark.parametrize("spec", GRID_SPECS)
@pytest.mark.parametrize("search", [False, True])
def test_stored_weight_decodes_to_what_was_chosen(spec, search):
    """Scales are rounded to storage before codes are chosen, so the stored tensors
    reproduce the method's weights bit for bit, partial groups included."""
    s = parse_scheme(spec)
    w = weights()
    r = get_method("rtn").fn(w, s, None, mse=search)
    p = r.packed(s)
    fmt = s.fmt
    cols = fmt.expand(r.params, w.shape[1], w.shape[0])
    assert torch.equal(p.dequantize(), fmt.decode(r.codes, cols))
    again = PackedWeight(s, p.out_features, p.in_features, dict(p.tensors))
    assert torch.equal(again.dequantize(), p.dequantize())
    err = float((p.dequantize() - w).norm() / w.norm())
    assert err < (0.25 if s.bits <= 4 else 0.08)


@pytest.mark.parametrize("spec", GRID_SPECS)
def test_search_is_never_worse_than_minmax(spec):
    s = parse_scheme(spec)
    if s.format == "lut":
        pytest.skip("the learned grid has no range to search")
    w = weights(seed=1)
    g, imp = s.fmt.group_view(w)

    def err(search):
        e = s.fmt.group_error(g, s.fmt.choose_params(w, search=search), imp.expand_as(g))
        return e.sum(-1)  # per row: nupes chooses its power for the whole row

    assert bool((err(True) <= err(False) * (1 + 1e-6)).all())


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("nvfp4", 4 + 8 / 16 + 32 / (64 * 256)),
        ("mxfp4", 4 + 8 / 32),
        ("mxfp6", 6 + 8 / 32),
        ("mxfp8", 8 + 8 / 32),
        ("fp4g32", 4 + 16 / 32),
        ("nf4g64", 4 + 16 / 64),
        ("fp8", 8 + 32 / 256),
        ("fp8gt", 8 + 32 / (64 * 256)),
        ("fp8b128", 8 + 32 * 2 / (64 * 256)),
        ("lut4", 4 + 16 * 16 / 256),
        ("lut4g128", 4 + 16 * 2 / 256 + 16 * 16 / 256),
        ("lut3", 3 + 8 * 16 / 256),
        ("nupes4g64", 4 + 16 / 64 + 16 / 256),
        ("mix4g64", 4 + 16 / 64 + 2 / 64),
    ],
)
def test_bits_count_every_stored_tensor(spec, expected):
    s = parse_scheme(spec)
    w = weights(64, 256)
    p = rtn(w, s).packed(s)
    assert p.stored_bits() / w.numel() == pytest.approx(expected)


def test_mx_scale_follows_the_ocp_rule():
    s = parse_scheme("mxfp4")
    w = weights(8, 64)
    scale = s.fmt.choose_params(w)["scale"]
    amax = w.abs().reshape(8, 2, 32).amax(-1)
    for a, sc in zip(amax.flatten().tolist(), scale.flatten().tolist(), strict=True):
        assert sc == 2.0 ** spec_exponent(a, E2M1)
    stored = rtn(w, s).packed(s).tensors["scales"]
    assert stored.dtype == torch.uint8
    assert torch.equal(torch.exp2(stored.float() - 127), scale)


def test_nvfp4_scales_as_compressed_tensors_stores_them():
    s = parse_scheme("nvfp4")
    w = weights(16, 64)
    p = rtn(w, s).packed(s)
    g = p.tensors["global_scale"]
    assert p.tensors["scales"].dtype == torch.float8_e4m3fn
    assert float(g) == pytest.approx(448 * 6 / float(w.abs().max()))
    e2m1 = minifloat_values(E2M1)
    codes = p.codes().long()
    block = p.tensors["scales"].float().repeat_interleave(16, 1)
    assert torch.equal(p.dequantize(), e2m1[codes] * (block / g))


def test_lut_grid_is_a_weighted_fit():
    """The fitted grid is sorted, beats NF4's fixed grid on its own rows, and weighting
    by importance lowers the weighted error."""
    s = parse_scheme("lut4")
    w = weights(32, 512, seed=2)
    params = s.fmt.choose_params(w)
    grid = s.fmt.table(params)
    assert bool((grid[..., 1:] >= grid[..., :-1]).all())
    lut = rtn(w, s).packed(s).dequantize()
    nf4 = rtn(w, parse_scheme("nf4")).packed(parse_scheme("nf4")).dequantize()
    assert (lut - w).square().sum() < (nf4 - w).square().sum()
    imp = torch.rand(512, generator=torch.Generator().manual_seed(3)) ** 4
    plain = rtn(w, s).packed(s).dequantize()
    hessian = torch.diag(imp)
    weighted = get_method("rtn").fn(w, s, hessian, imatrix=True).packed(s).dequantize()
    assert ((weighted - w).square() * imp).sum() < ((plain - w).square() * imp).sum()


def test_lut_is_never_worse_than_nf4_on_gridded_weights():
    """Weights already on a coarse affine grid per 32 (as the default model's Q4_1
    weights are) trap Lloyd's iterations from the quantiles; the NF4 start keeps the
    grouped learned grid at least as good as NF4 with the same scales."""
    g = torch.Generator().manual_seed(6)
    lo = torch.randn(64, 8, 1, generator=g) * 0.02 - 0.03
    step = torch.rand(64, 8, 1, generator=g) * 0.004 + 0.002
    w = (lo + step * torch.randint(0, 16, (64, 8, 32), generator=g)).reshape(64, 256)
    nf4, lut = parse_scheme("nf4g64"), parse_scheme("lut4g64")
    e_nf4 = (rtn(w, nf4).packed(nf4).dequantize() - w).square().sum()
    e_lut = (rtn(w, lut).packed(lut).dequantize() - w).square().sum()
    assert e_lut <= e_nf4


def test_nupes_picks_a_power_per_row():
    s = parse_scheme("nupes4g64")
    w = torch.cat([weights(8, 128), torch.randn(8, 128).sign() * torch.rand(8, 128) * 0.02])
    p = rtn(w, s).packed(s)
    powers = p.tensors["power"].float().flatten()
    assert powers.shape == (16,) and bool((powers >= 1).all())
    assert len(set(powers.tolist())) > 1  # Gaussian and uniform rows want different grids


def test_mix_tags_each_group_with_its_best_grid():
    s = parse_scheme("mix4g64")
    fmt = s.fmt
    w = weights(16, 256)
    p = rtn(w, s).packed(s)
    kinds = p.params()["kind"]
    assert kinds.shape == (16, 4) and set(kinds.unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    g, imp = fmt.group_view(w)
    chosen = fmt.group_error(g, p.params(), imp)
    for k in range(4):
        scale = fmt.scale_candidates(g.abs().amax(-1), False)[0]
        alone = fmt.group_error(g, {"scale": scale, "kind": torch.full_like(scale, k)}, imp)
        assert bool((chosen <= alone + 1e-12).all())


@pytest.mark.parametrize("spec", ["nvfp4", "mxfp4", "nf4g64", "lut4", "lut4g128", "fp8", "mix4g64"])
def test_gptq_beats_rtn_on_the_layer_output(spec):
    s = parse_scheme(spec)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(512, 128, generator=g) @ torch.randn(128, 128, generator=g) * 0.3
    w = torch.randn(48, 128, generator=g) * 0.02
    h = x.T @ x / x.shape[0]

    def out_err(r):
        d = r.packed(s).dequantize() - w
        return float(torch.trace(d @ h @ d.T))

    assert out_err(gptq(w, s, h)) < out_err(rtn(w, s))


def test_methods_that_need_affine_codes_refuse_at_the_edge():
    from lmpress.api import as_recipe
    from lmpress.pipeline import quantize_model

    ids = torch.randint(0, 512, (2, 16))
    for method in ("hqq", "learned-round"):
        with pytest.raises(LmpressError, match="cannot use format"):
            quantize_model(
                tiny_model(), as_recipe({"method": method, "scheme": "nvfp4"}), ids, progress=False
            )
    with pytest.raises(LmpressError, match="act_order=true"):
        gptq(weights(16, 64), parse_scheme("nvfp4"), torch.eye(64), act_order=False)


def test_gptq_refits_grid_groups_as_it_goes():
    s = parse_scheme("mxfp4")
    w = weights(16, 96)
    r = gptq(w, s, torch.eye(96), act_order=False)
    assert r.params["scale"].shape == (16, 3)
    r.packed(s)


def test_rows_stack_where_they_can():
    for spec in ("mxfp4", "nf4g64", "lut4", "lut4g128", "mix4g64", "nupes4g64"):
        s = parse_scheme(spec)
        parts = [rtn(weights(8 + i, 64, seed=i), s).packed(s) for i in range(2)]
        stacked = concat_rows(parts)
        assert torch.equal(stacked.dequantize(), torch.cat([p.dequantize() for p in parts]))
    s = parse_scheme("nvfp4")
    parts = [rtn(weights(8, 64, seed=i) * (i + 1), s).packed(s) for i in range(2)]
    with pytest.raises(LmpressError, match="tensor scales"):
        concat_rows(parts)
    s = parse_scheme("fp8b128")
    with pytest.raises(LmpressError, match="block"):
        concat_rows([rtn(weights(8, 64), s).packed(s)] * 2)


@pytest.mark.parametrize("spec", ["fp8b128", "nvfp4", "mxfp6", "lut3", "nupes4g64", "mix4g64"])
def test_quantize_save_load(tmp_path, spec):
    from lmpress import api
    from lmpress.api import as_recipe
    from lmpress.pipeline import quantize_model

    model = tiny_model()
    ids = torch.randint(0, 512, (4, 32))
    r = quantize_model(model, as_recipe({"method": "gptq", "scheme": spec}), ids, progress=False)
    x = torch.randint(0, 512, (1, 16))
    with torch.no_grad():
        want = r.model(x).logits
    api.save(r, tmp_path / "q")
    loaded = api.load(tmp_path / "q")
    with torch.no_grad():
        got = loaded(x).logits
    assert torch.allclose(got, want, atol=1e-5)
    assert loaded.config.quantization_config["format_version"] == 3


def test_gptq_moves_a_learned_grid_to_its_codes():
    """After GPTQ's codes, the grid's least-squares refit lowers the layer-output error."""
    from lmpress.formats.lut import LutFormat

    s = parse_scheme("lut3")
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1024, 96, generator=g) @ torch.randn(96, 96, generator=g) * 0.3
    w = torch.randn(32, 96, generator=g) * 0.02
    h = x.T @ x / x.shape[0]
    r = gptq(w, s, h)
    cols = s.fmt.expand(r.params, 96, 32)

    def out_err(params):
        d = s.fmt.decode(r.codes, s.fmt.expand(params, 96, 32)) - w
        return float(torch.trace(d @ h @ d.T))

    start = s.fmt.choose_params(w, h.diagonal(), search=True)
    assert out_err(r.params) < out_err(start)
    again = LutFormat.refit_params(s.fmt, w, r.codes, r.params, h)
    assert out_err(again) <= out_err(r.params) * (1 + 1e-5)
    assert cols["v0"].shape == (32, 96)


def test_formats_mix_per_module_by_overrides(tmp_path):
    from lmpress import api
    from lmpress.api import as_recipe
    from lmpress.nn.qlinear import QLinear
    from lmpress.pipeline import quantize_model

    recipe = {
        "method": "gptq",
        "scheme": "nvfp4",
        "overrides": [
            {"pattern": r"mlp\.down_proj", "scheme": "fp8"},
            {"pattern": r"self_attn\.o_proj", "scheme": "w4g32", "method": "rtn"},
        ],
    }
    r = quantize_model(
        tiny_model(), as_recipe(recipe), torch.randint(0, 512, (4, 32)), progress=False
    )
    api.save(r, tmp_path / "q")
    got = {
        (n.rsplit(".", 1)[-1], m.packed().scheme.name)
        for n, m in api.load(tmp_path / "q").named_modules()
        if isinstance(m, QLinear)
    }
    assert ("down_proj", "fp8") in got and ("o_proj", "w4g32") in got
    assert ("q_proj", "nvfp4") in got
