"""The CPU kernel's table-lookup path for grid formats (lmpress.kernels.grid, grid.c)
against the dequantize-then-matmul reference, on every vector path."""

import pytest
import torch
from runtime_models import assert_decoder_matches, assert_projection_matches, quantized_tiny
from test_kernels import assert_close_to_reference

from lmpress.formats.scheme import parse_scheme
from lmpress.kernels import cpu as K
from lmpress.kernels import decode_ops, select_kernel
from lmpress.kernels.grid import (
    GridState,
    byte_planes,
    grid_dequantize,
    grid_gemm,
    widen_tables,
)
from lmpress.methods.rtn import rtn
from lmpress.nn.qlinear import QLinear
from lmpress.packing.packed import PackedWeight

built = pytest.mark.skipif(K._cpu is None, reason="lmpress C kernels not built here")

# every grid format spelling of the issue
SPECS = [
    "fp8",
    "fp8:e5m2",
    "fp8gt",
    "nvfp4",
    "mxfp4",
    "mxfp6",
    "mxfp6:e3m2",
    "mxfp8",
    "fp4g32",
    "nf4g64",
    "lut4",
    "lut3",
    "lut4g128",
    "nupes4g64",
    "mix4g64",
]
# Spellings that reach the kernel's other code paths: groups of 16 with one table (two
# groups a lookup) or a table per group, groups not made of whole steps of 32 or 64,
# groups of whole runs of 8 only (the permute lookups), groups of neither (the scalar
# path), 2- and 1-bit tables, bf16 scales.
PATHS = [
    "fp4g16",
    "lut4g16",
    "fp4g48",
    "nf4g96",
    "fp4g8",
    "nf4g24",
    "fp4g20",
    "lut2",
    "lut1",
    "nupes4g64:bf16",
    "fp8b128",
]
# out x in: partial last groups (200), in not a multiple of 8 (203), several pieces of
# 128 codes and a partial one (1000), a single tile row
SHAPES = [(37, 200), (19, 203), (21, 1000), (1, 64)]


def packed_grid(spec: str, n: int, k: int, seed: int = 0) -> PackedWeight:
    g = torch.Generator().manual_seed(seed)
    scheme = parse_scheme(spec)
    return rtn(torch.randn(n, k, generator=g), scheme).packed(scheme)


def fits(spec: str, k: int) -> bool:
    s = parse_scheme(spec)
    return s.granularity != "group" or s.group_size <= k


@pytest.fixture(params=[2, 1, 0], ids=["avx512", "avx2", "scalar"])
def simd(request):
    """Run a test once per path (a CPU without one falls back to the next)."""
    K._cpu.set_simd(request.param)
    yield request.param
    K._cpu.set_simd(2)


@built
@pytest.mark.parametrize("spec", SPECS + PATHS)
def test_gemm_and_dequant_match_reference(simd, spec):
    for n, k in SHAPES:
        if not fits(spec, k):
            continue
        pw = packed_grid(spec, n, k)
        st = K.CpuKernel().prepare(pw)
        assert isinstance(st, GridState)
        w = pw.dequantize()
        assert torch.equal(grid_dequantize(st), w), (spec, n, k)
        g = torch.Generator().manual_seed(n + k)
        for m in (1, 3, 8):
            x = torch.randn(m, k, generator=g)
            b = torch.randn(n, generator=g)
            assert_close_to_reference(grid_gemm(x, st, b), x, w, b)
            assert_close_to_reference(grid_gemm(x, st, None), x, w)


def differing_from(level: int, specs: tuple[str, ...]) -> set[str]:
    """The specs whose products at the highest SIMD level differ (in rounding: the sums
    are taken in another order) from those at ``level``: the specs that took a path of
    their own above it."""
    differs = set()
    for spec in specs:
        st = K.CpuKernel().prepare(packed_grid(spec, 37, 1000))
        x = torch.randn(2, 1000, generator=torch.Generator().manual_seed(1))
        y_top = grid_gemm(x, st, None)
        K._cpu.set_simd(level)
        try:
            y_low = grid_gemm(x, st, None)
        finally:
            K._cpu.set_simd(2)
        if not torch.equal(y_top, y_low):
            differs.add(spec)
    return differs


@built
def test_vector_and_scalar_paths_differ_only_in_rounding():
    """The vector path was taken (its sums are in another order than the scalar one's)."""
    specs = ("nvfp4", "mxfp4", "nf4g64", "lut4", "lut3", "fp8", "mxfp6")
    differs = differing_from(0, specs)
    if K._cpu.info()["avx2"]:
        assert differs == set(specs)


@built
@pytest.mark.skipif(not (K._cpu.info()["avx512"] if K._cpu else False), reason="no AVX-512")
def test_avx512_path_is_taken_for_16_value_tables():
    """On AVX-512 the 16-value formats take their own path (other sums than AVX2's);
    the 8-, 64- and 256-value ones and per-group grid choices (mix) stay on AVX2's."""
    specs = ("nvfp4", "mxfp4", "nf4g64", "lut4", "lut4g128", "fp4g32", "lut3", "fp8", "mix4g64")
    assert differing_from(1, specs) == {"nvfp4", "mxfp4", "nf4g64", "lut4", "lut4g128", "fp4g32"}


@built
def test_block_scales_serve_each_row_of_their_block():
    """fp8b128: [ceil(out/128), ceil(in/128)] scales, expanded to rows for the kernel."""
    pw = packed_grid("fp8b128", 300, 200)
    assert tuple(pw.scales.shape) == (3, 2)
    st = K.CpuKernel().prepare(pw)
    assert tuple(st.scales.shape) == (300, 2)
    w = pw.dequantize()
    assert torch.equal(grid_dequantize(st), w)
    x = torch.randn(3, 200)
    assert_close_to_reference(grid_gemm(x, st, None), x, w)


@built
@pytest.mark.parametrize("tile_rows", [0, 1, 3, 4, 8])
@pytest.mark.parametrize("spec", ["nvfp4", "mxfp4", "nf4g64", "lut4g128", "lut3", "mxfp6", "fp8"])
def test_every_code_layout_gives_the_same_products(monkeypatch, tile_rows, spec):
    monkeypatch.setenv("LMPRESS_TILE_ROWS", str(tile_rows))
    for n, k in [(37, 576), (21, 1000), (5, 300)]:
        pw = packed_grid(spec, n, k)
        st = K.CpuKernel().prepare(pw)
        assert st.tile_rows == tile_rows
        w = pw.dequantize()
        assert torch.equal(grid_dequantize(st), w)
        for m in (1, 2, 3):
            x = torch.randn(m, k)
            assert_close_to_reference(grid_gemm(x, st, None), x, w)


@built
def test_byte_scales_are_read_as_stored_and_wider_ones_as_float32():
    for spec, byte in [("nvfp4", True), ("mxfp4", True), ("mxfp8", True), ("nf4g64", False)]:
        st = K.CpuKernel().prepare(packed_grid(spec, 8, 128))
        assert (st.scale_codes is not None) == byte and (st.scales is None) == byte
        if byte:
            assert st.scale_codes.dtype == torch.uint8 and st.scale_table.shape == (256,)


@built
def test_threads_do_not_change_results():
    st = K.CpuKernel().prepare(packed_grid("nf4g64", 1024, 512))
    x = torch.randn(3, 512)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        y1 = grid_gemm(x, st, None)
        torch.set_num_threads(2)
        y2 = grid_gemm(x, st, None)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(y1, y2)  # rows are split between threads, never a row's sum


@built
@pytest.mark.parametrize("spec", ["nvfp4", "lut4", "fp8gt"])
def test_qlinear_auto_runs_grid_formats_on_the_cpu_kernel(spec):
    pw = packed_grid(spec, 48, 192)
    bias = torch.randn(48)
    m = QLinear.from_packed(pw, bias)
    assert m.kernel()[0].name == "cpu" and m.kernel_reason == ""
    ref = QLinear.from_packed(pw, bias)
    ref.set_kernel("torch")
    for shape in [(1, 192), (2, 3, 192), (40, 192)]:  # GEMV, small batch, long input
        x = torch.randn(*shape)
        with torch.no_grad():
            y, yr = m(x), ref(x)
        assert y.shape == yr.shape
        assert torch.allclose(y, yr, rtol=1e-5, atol=1e-5)
    x = torch.randn(40, 192)
    with torch.no_grad():
        assert torch.equal(m(x), ref(x))  # long inputs: the reference's own matmul
        x16 = torch.randn(2, 192).to(torch.bfloat16)
        assert m(x16).dtype == torch.bfloat16


def test_supports_every_grid_format_and_says_why_not_elsewhere():
    kernel = K.CpuKernel()
    for spec in SPECS + PATHS:
        n, k = 8, 128
        assert kernel.supports(packed_grid(spec, n, k), torch.device("cpu")), spec
    pw = packed_grid("nvfp4", 8, 64)
    no = kernel.supports(pw, torch.device("cuda"))
    assert not no and "CPU" in no.reason


def test_tables_widen_for_the_lookups_and_refuse_a_wrong_width():
    t = torch.arange(4, dtype=torch.float32).reshape(1, 4)
    assert widen_tables(t, 2).tolist() == [[0, 1, 2, 3, 0, 1, 2, 3]]  # read by 3 bits
    t16 = torch.randn(3, 16)
    assert torch.equal(widen_tables(t16, 4), t16)
    planes = byte_planes(t16)
    assert planes.shape == (3, 4, 16)
    assert torch.equal(planes.transpose(1, 2).contiguous().view(torch.float32)[..., 0], t16)
    with pytest.raises(ValueError, match="16 values"):
        widen_tables(torch.zeros(1, 8), 4)


@built
def test_grid_capsules_are_checked():
    st = K.CpuKernel().prepare(packed_grid("mxfp4", 16, 64))
    int_state = K.prepare_cpu_state(
        rtn(torch.randn(16, 64), parse_scheme("w4g32")).packed(parse_scheme("w4g32"))
    )
    x, y = torch.randn(1, 64), torch.empty(1, 16)
    with pytest.raises(ValueError, match="grid_linear"):
        K._cpu.grid_gemm(int_state.linear(), x.data_ptr(), y.data_ptr(), 1, 0, 1)
    with pytest.raises(ValueError, match="max_m"):
        K._cpu.grid_gemm(st.capsule, x.data_ptr(), y.data_ptr(), 10_000, 0, 1)
    with pytest.raises(ValueError, match="grid_linear"):  # a table narrower than 16
        K._cpu.grid_linear(
            st.codes.data_ptr(), st.row_bytes, 4, 0, st.tables.data_ptr(), 8, 0, False, 0,
            0, st.scale_codes.data_ptr(), st.scale_table.data_ptr(), 1, 1.0, 2, 16, 64, 32, 2,
            0,
        )  # fmt: skip
    with pytest.raises(ValueError, match="grid_linear"):  # no such scale rule
        K._cpu.grid_linear(
            st.codes.data_ptr(), st.row_bytes, 4, 0, st.tables.data_ptr(), 16, 0, False, 0,
            0, st.scale_codes.data_ptr(), st.scale_table.data_ptr(), 3, 1.0, 2, 16, 64, 32, 2,
            0,
        )  # fmt: skip


def test_scale_rules_name_the_tables_they_reproduce():
    """E8M0 and E4M3-over-a-divisor tables are recognised bit for bit; others are not."""
    from lmpress.kernels.grid import scale_rule

    codes = torch.tensor([[0, 100, 127, 140]], dtype=torch.uint8)
    e8m0 = torch.exp2(torch.arange(256, dtype=torch.float32) - 127)
    e8m0[0] = 2.0**-127
    assert scale_rule(codes, e8m0) == (1, 1.0)
    e4m3 = torch.arange(256).to(torch.uint8).view(torch.float8_e4m3fn).to(torch.float32)
    d = torch.tensor(448 * 6 / 3.7)
    rule, div = scale_rule(torch.tensor([[1, 7, 8, 60, 126]], dtype=torch.uint8), e4m3 / d)
    assert rule == 2 and div == float(d)
    assert scale_rule(codes, torch.rand(256))[0] == 0


def test_unbuilt_extension_falls_back_for_grid_formats_too(monkeypatch):
    monkeypatch.setattr(K, "_cpu", None)
    monkeypatch.setattr(K, "_IMPORT_ERROR", "not built")
    monkeypatch.setattr(K, "_warned", True)
    k, reason = select_kernel("auto", packed_grid("nvfp4", 8, 64), torch.device("cpu"))
    assert k.name == "torch" and reason == "cpu: not available"


# ---------------------------------------------------------------- the lean decoder

dec_built = pytest.mark.skipif(not decode_ops.available(), reason="C decode step not built")


@dec_built
@pytest.mark.parametrize("scheme", ["mxfp4", "nf4g32", "lut4", "nvfp4", "fp8"])
def test_decoder_logits_match_the_model(scheme):
    """Fused projections and the C decode step on grid codes (NVFP4's tensor scales
    differ between q, k and v, which then fuse from float weights; o and down run from
    their codes)."""
    from lmpress.runtime import Decoder

    model = quantized_tiny("llama", scheme)
    dec = Decoder(model, max_len=32)
    assert isinstance(dec.layers[0].down.state, GridState)
    assert_decoder_matches(model, dec, scheme)


@dec_built
def test_fused_grid_projection_equals_its_modules():
    from lmpress.runtime import Proj

    model = quantized_tiny("llama", "nf4g32")
    a = model.model.layers[0].self_attn
    mods = [a.q_proj, a.k_proj, a.v_proj]
    proj = Proj(mods)
    assert isinstance(proj.state, GridState)
    assert_projection_matches(proj, mods)
