"""The C kernels against the dequantize-then-matmul reference, on every vector path."""

import itertools
import warnings

import pytest
import torch

from lmpress.formats.affine import expand_to_columns, minmax_qparams, quantize_codes
from lmpress.formats.scheme import parse_scheme
from lmpress.kernels import cpu as K
from lmpress.kernels import select_kernel
from lmpress.nn.qlinear import QLinear
from lmpress.packing.packed import PackedWeight

built = pytest.mark.skipif(K._cpu is None, reason="lmpress C kernels not built here")


def packed_random(name: str, n: int, k: int, seed: int = 0) -> PackedWeight:
    torch.manual_seed(seed)
    s = parse_scheme(name)
    w = torch.randn(n, k)
    sc, z = minmax_qparams(w, s)
    q = quantize_codes(w, expand_to_columns(sc, k, s), expand_to_columns(z, k, s), s.fmt.qmax)
    return PackedWeight.from_codes(q, {"scale": sc, "zero": z}, s)


@pytest.fixture(params=[2, 1, 0], ids=["avx512", "avx2", "scalar"])
def simd(request):
    """Run a test once per vector path (a path the CPU lacks falls back to the next)."""
    K._cpu.set_simd(request.param)
    yield request.param
    K._cpu.set_simd(2)


def assert_close_to_reference(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, b=None):
    """Float32 accumulation tolerance: relative to sum |w||x| of each output."""
    ref = x @ w.T + (0 if b is None else b)
    bound = (x.abs() @ w.abs().T) * 2e-6 + 1e-6
    assert ((y - ref).abs() <= bound).all(), ((y - ref).abs() / bound).max()


SCHEMES = [
    f"w{b}{g}{sym}"
    for b in (2, 3, 4, 5, 6, 8)
    for g in ("g128", "g64", "g32", "g48", "g20", "", "gt")
    for sym in ("a", "s")
] + ["w4g128:bf16", "w4g64:fz", "w3g32:fz", "w2g64s:bf16"]


def states_and_weights(name: str, shapes: list[tuple[int, int]]):
    """(kernel state, dequantized weight) of a random weight of scheme ``name`` for each
    ``[N, K]`` its group size fits, with dequantization checked bit-exact on the way."""
    s = parse_scheme(name)
    for n, k in shapes:
        if s.granularity == "group" and s.group_size > k:
            continue
        pw = packed_random(name, n, k)
        st = K.prepare_cpu_state(pw)
        w = pw.dequantize()
        assert torch.equal(K.cpu_dequantize(st), w)
        yield st, w


@built
@pytest.mark.parametrize("name", SCHEMES)
def test_gemm_and_dequant_match_reference(simd, monkeypatch, name):
    # The unpack path at every batch size: at batch 1 the race could otherwise pick the
    # lookup path, whose error bound is another (test_table_lookup_gemv_matches_reference).
    monkeypatch.setenv("LMPRESS_GEMV", "fma")
    for st, w in states_and_weights(name, [(37, 576), (16, 100), (8, 64)]):
        n, k = w.shape
        for m in (1, 2, 3, 5, 8):
            x = torch.randn(m, k)
            b = torch.randn(n)
            assert_close_to_reference(K.cpu_gemm(x, st, b), x, w, b)
            assert_close_to_reference(K.cpu_gemm(x, st, None), x, w)


def test_tiled_code_layout_interleaves_pieces_of_128_codes():
    # 3 bits: a piece is 48 bytes; rows of 1000 codes (375 bytes) are 7 whole pieces
    # and a last piece of 39 bytes, which the tile packs without padding.
    qw = torch.randint(0, 256, (7, 375), dtype=torch.uint8)
    flat = K.tile_codes(qw, 3, 4)
    assert flat.numel() == 2 * 4 * 375  # 2 tiles of 4 rows (one row of padding)
    assert flat.untyped_storage().nbytes() >= flat.numel() + 16  # the vector loads' tail
    t = flat.view(2, 4 * 375)
    head = t[:, : 4 * 7 * 48].reshape(2, 7, 4, 48)  # tile, piece, row in tile, byte
    tail = t[:, 4 * 7 * 48 :].reshape(2, 4, 39)  # tile, row in tile, byte
    for n in range(7):
        for c in range(7):
            assert torch.equal(head[n // 4, c, n % 4], qw[n, 48 * c : 48 * (c + 1)])
        assert torch.equal(tail[n // 4, n % 4], qw[n, 7 * 48 :])
    assert (head[1, :, 3] == 0).all() and (tail[1, 3] == 0).all()  # the padding row
    assert torch.equal(K.tile_codes(qw, 3, 0), qw.reshape(-1))


@built
@pytest.mark.parametrize("tile_rows", [0, 1, 3, 4, 8])
@pytest.mark.parametrize("name", ["w4g128", "w2g64a", "w3g128", "w8", "w4g64:fz", "w5g48"])
def test_every_code_layout_gives_the_same_products(simd, monkeypatch, tile_rows, name):
    monkeypatch.setenv("LMPRESS_TILE_ROWS", str(tile_rows))
    for st, w in states_and_weights(name, [(37, 576), (21, 1000), (5, 300)]):
        assert st.tile_rows == tile_rows
        for m in (1, 2, 3):
            x = torch.randn(m, w.shape[1])
            assert_close_to_reference(K.cpu_gemm(x, st, None), x, w)


@built
@pytest.mark.parametrize(
    "name, k",
    [
        ("w4g128", 4736),  # 37 groups: the word-plane tile (AVX-512), a 5-group second chunk
        ("w4g128:bf16", 4736),
        ("w4g128:fz", 4736),
        ("w2g32", 1120),  # 35 groups
        ("w3g32:fz", 2080),  # 65 groups: three chunks, the last of one group
        ("w8g32s", 1056),  # 33 groups, symmetric (a constant zero point)
        ("w4g32", 1100),  # 35 groups, the last of 12 codes
    ],
)
def test_rows_with_more_groups_than_a_tile_converts_at_once(simd, name, k):
    """The vector tiles convert scales and zero points 32 groups at a time (LMP_GC)."""
    for st, w in states_and_weights(name, [(19, k)]):
        for m in (1, 2):
            x = torch.randn(m, k)
            assert_close_to_reference(K.cpu_gemm(x, st, None), x, w)


@built
def test_partial_last_group_of_the_default_model():
    """576 = 4 x 128 + 64: the last group of every row is partial."""
    pw = packed_random("w4g128", 64, 576)
    assert pw.scales.shape[1] == 5
    st = K.prepare_cpu_state(pw)
    x = torch.randn(1, 576)
    assert_close_to_reference(K.cpu_gemm(x, st, None), x, pw.dequantize())


@built
@pytest.mark.parametrize("name", ["w4g128", "w4g256s", "w4", "w4g128:fz", "w4g128:bf16"])
def test_word_plane_path_matches_reference_and_differs_from_byte_planes(monkeypatch, name):
    """4 bits on AVX-512: whole 64-byte pieces (128 codes) per load, a partial last piece
    (576 = 4 x 128 + 64, 700 = 5 x 128 + 60, 100 < 128) through the byte planes."""
    if not K._cpu.info()["avx512"]:
        pytest.skip("the word-plane path is AVX-512 only")
    if not K.kernel_tile_rows():
        pytest.skip("the word-plane path reads tiled codes (LMPRESS_TILE_ROWS=0 here)")
    monkeypatch.setenv("LMPRESS_GEMV", "fma")
    differs = False
    for st, w in states_and_weights(name, [(37, 576), (19, 700), (16, 100), (24, 1024)]):
        for m in (1, 2, 3, 5):
            x = torch.randn(m, w.shape[1])
            y_words = K.cpu_gemm(x, st, None)
            K._cpu.set_word_planes(False)
            try:
                y_bytes = K.cpu_gemm(x, st, None)
            finally:
                K._cpu.set_word_planes(True)
            assert_close_to_reference(y_words, x, w)
            assert_close_to_reference(y_bytes, x, w)
            differs |= not torch.equal(y_words, y_bytes)  # another summation order
    assert differs, "the word-plane path was not taken"


@built
def test_threads_do_not_change_results():
    pw = packed_random("w4g64", 1024, 512)
    st = K.prepare_cpu_state(pw)
    x = torch.randn(3, 512)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        y1 = K.cpu_gemm(x, st, None)
        torch.set_num_threads(2)
        y2 = K.cpu_gemm(x, st, None)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(y1, y2)  # rows are split between threads, never a row's sum


@built
@pytest.mark.parametrize("name", ["w4g128", "w3g64", "w8", "w2g32"])
def test_prefetching_does_not_change_results(simd, monkeypatch, name):
    # 1040 rows of 4096 codes span many prefetch distances and tiles, and hold enough
    # codes (>= 1 MiB at 2 bits) for the far (L2) requests.
    monkeypatch.setenv("LMPRESS_GEMV", "fma")
    st, _ = next(states_and_weights(name, [(1040, 4096)]))
    x = torch.randn(2, 4096)
    default = K._cpu.set_prefetch(0, 0)
    try:
        off = [K.cpu_gemm(x[:m], st, None) for m in (1, 2)]
        K._cpu.set_prefetch(2048, 16384)  # the far requests on, whatever the CPU
        on = [K.cpu_gemm(x[:m], st, None) for m in (1, 2)]
    finally:
        K._cpu.set_prefetch(*default)
    assert default[0] > 0
    assert all(torch.equal(a, b) for a, b in zip(on, off, strict=True))


@built
def test_qlinear_auto_uses_cpu_kernel_and_matches_torch():
    pw = packed_random("w3g64", 48, 192)
    m = QLinear.from_packed(pw, torch.randn(48))
    assert m.kernel()[0].name == "cpu"
    ref = QLinear.from_packed(pw, m.bias)
    ref.set_kernel("torch")
    for shape in [(1, 192), (2, 3, 192), (40, 192)]:  # GEMV, small batch, large (dequant + BLAS)
        x = torch.randn(*shape)
        y, yr = m(x), ref(x)
        assert y.shape == yr.shape
        assert torch.allclose(y, yr, rtol=1e-5, atol=1e-5)
    x = torch.randn(40, 192)
    assert torch.equal(m(x), ref(x))  # the large-batch path is the reference's own matmul


def test_unbuilt_extension_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(K, "_cpu", None)
    monkeypatch.setattr(K, "_IMPORT_ERROR", "not built")
    monkeypatch.setattr(K, "_warned", False)
    packed = packed_random("w4g128", 8, 256)
    with pytest.warns(UserWarning, match="not built"):
        k, reason = select_kernel("auto", packed, torch.device("cpu"))
    assert k.name == "torch" and reason == "cpu: not available"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_kernel("auto", packed, torch.device("cpu"))[0].name == "torch"


def test_cuda_tensors_use_the_reference_kernel():
    packed = packed_random("w4g128", 8, 256)
    k, reason = select_kernel("auto", packed, torch.device("cuda"))
    assert k.name == "torch" and "CPU" in reason


def test_a_named_kernel_that_cannot_run_a_weight_falls_back_with_a_warning():
    packed = packed_random("w4g128", 8, 256)
    with pytest.warns(UserWarning, match="cannot run w4g128"):
        k, reason = select_kernel("cpu", packed, torch.device("cuda"))
    assert k.name == "torch" and reason.startswith("cpu: ")


def test_unknown_kernel_is_a_clear_error():
    from lmpress.errors import LmpressError

    m = QLinear.from_packed(packed_random("w4g32", 8, 64), None)
    with pytest.raises(LmpressError, match="unknown kernel 'fast'; known: cpu, torch"):
        m.set_kernel("fast")


@built
@pytest.mark.parametrize("bits,group", list(itertools.product([2, 3, 4, 8], [32, 128])))
def test_large_odd_shapes(bits, group):
    pw = packed_random(f"w{bits}g{group}", 75, 1000)  # 1000 = 7 x 128 + 104 (partial)
    st = K.prepare_cpu_state(pw)
    x = torch.randn(1, 1000)
    assert_close_to_reference(K.cpu_gemm(x, st, None), x, pw.dequantize())


lut_ok = pytest.mark.skipif(
    K._cpu is None or not K.lut_available(), reason="table-lookup path needs AVX-512"
)


@lut_ok
@pytest.mark.parametrize(
    "name",
    [
        "w4g128",
        "w4g32s",
        "w3g64",
        "w3g48",
        "w2g64",
        "w2g32s",
        "w4",
        "w2gts",
        "w4g64:fz",
        "w3g128:bf16",
    ],
)
def test_table_lookup_gemv_matches_reference(name):
    """T-MAC-style lookup: the zero point enters through group sums of x, so the error
    bound is float32 accumulation over sum (|q| + |z|) |x| s."""
    from lmpress.formats.affine import expand_to_columns
    from lmpress.kernels.lut import lut_gemv, lut_layout

    for n, k in [(37, 576), (16, 100), (64, 64)]:
        pw = packed_random(name, n, k)
        x = torch.randn(1, k)
        b = torch.randn(n)
        y = lut_gemv(x, lut_layout(pw), b)
        w = pw.dequantize()
        s = expand_to_columns(pw.scales.float(), k, pw.scheme)
        z = expand_to_columns(pw.zeros(), k, pw.scheme)
        mag = x.abs() @ ((pw.codes().float() + z.abs()) * s).T
        assert ((y - (x @ w.T + b)).abs() <= mag * 4e-6 + 1e-6).all(), name


@lut_ok
def test_gemv_path_is_chosen_by_measurement(monkeypatch):
    pw = packed_random("w2g64", 256, 512)
    K._GEMV_CHOICE.clear()
    x = torch.randn(1, 512)
    st = K.CpuKernel().prepare(pw)
    assert st.lut is None and st.gemv_path is None  # nothing decided before a GEMV
    K.cpu_gemm(torch.randn(3, 512), st, None)
    assert st.gemv_path is None  # batch 3 uses the unpack path and decides nothing
    K.cpu_gemm(x, st, None)
    key = (256, 512, 2, 64, torch.get_num_threads())
    assert K._GEMV_CHOICE[key] == st.gemv_path
    assert (st.lut is not None) == (st.gemv_path == "lut")
    monkeypatch.setenv("LMPRESS_GEMV", "fma")
    st = K.CpuKernel().prepare(pw)
    K.cpu_gemm(x, st, None)
    assert st.lut is None
    monkeypatch.setenv("LMPRESS_GEMV", "lut")
    st = K.CpuKernel().prepare(pw)
    K.cpu_gemm(x, st, None)
    assert st.lut is not None
    assert torch.allclose(K.cpu_gemm(x, st, None), x @ pw.dequantize().T, rtol=1e-4, atol=1e-4)


@built
def test_bound_linear_equals_the_full_argument_call_and_follows_new_tensors():
    st, _ = next(states_and_weights("w4g64", [(40, 192)]))
    x, b = torch.randn(3, 192), torch.randn(40)
    y = torch.empty(3, 40)
    K._cpu.gemm(*st.args(x.data_ptr(), y.data_ptr(), 3, b.data_ptr()))
    assert torch.equal(K.cpu_gemm(x, st, b), y)
    first = st.linear()
    assert st.linear() is first  # parsed once
    st.scales = st.scales.clone()
    st.weight_args = None  # what a copy of the state with new tensors does
    assert st.linear() is not first
    with pytest.raises(ValueError, match="max_m"):
        K._cpu.linear_gemm(first, x.data_ptr(), y.data_ptr(), 10_000, 0, 1)


def test_race_runs_its_setup_untimed_before_every_timed_call():
    log = []
    fns = {"a": lambda: log.append("a"), "b": lambda: log.append("b")}
    won = K.race(fns, rounds=3, reps=2, before=lambda: log.append("evict"))
    assert won in fns
    timed = log[2:]  # after one untimed warm-up call of each
    assert timed[0::2] == ["evict"] * 12 and sorted(set(timed[1::2])) == ["a", "b"]


@built
def test_evicting_weights_keeps_their_values():
    t = torch.randn(100_000)
    before = t.clone()
    K.evict([t, None, t[:7]])
    assert torch.equal(t, before)


def test_concat_rows_decodes_to_the_stacked_weights():
    from lmpress.packing.packed import concat_rows

    for name in ("w4g32", "w3g64s", "w4g64:fz", "w8"):
        parts = [packed_random(name, n, 128, seed=n) for n in (16, 8, 24)]
        cat = concat_rows(parts)
        assert torch.equal(cat.dequantize(), torch.cat([p.dequantize() for p in parts]))
    with pytest.raises(ValueError):
        concat_rows([packed_random("w4gt", 8, 64), packed_random("w4gt", 8, 64)])


@pytest.mark.skipif(K._cpu is None, reason="C kernels not built")
@pytest.mark.parametrize("n,k", [(1, 1), (7, 5), (33, 17), (130, 576), (2049, 64)])
def test_dense_gemv_matches_torch(simd, n, k):
    w, x = torch.randn(n, k), torch.randn(1, k)
    for threads in (1, 2):
        y = torch.full((1, n), float("nan"))
        K._cpu.dense_gemv(w.data_ptr(), x.data_ptr(), y.data_ptr(), n, k, threads)
        assert_close_to_reference(y, x, w)
    assert_close_to_reference(K.dense_gemv(x, w), x, w)
    assert K.dense_gemv_faster(w) in (True, False) and (n, k, torch.get_num_threads()) in (
        K._DENSE_CHOICE
    )


@pytest.mark.skipif(K._cpu is None, reason="C kernels not built")
@pytest.mark.parametrize("n,k", [(1, 1), (7, 5), (33, 17), (130, 576), (2049, 64)])
def test_bfloat16_dense_gemv_matches_its_float_values(simd, n, k):
    w16, x = torch.randn(n, k).to(torch.bfloat16), torch.randn(1, k)
    for threads in (1, 2):
        y = torch.full((1, n), float("nan"))
        K._cpu.dense_gemv(w16.data_ptr(), x.data_ptr(), y.data_ptr(), n, k, threads, 1)
        assert_close_to_reference(y, x, w16.float())
    assert_close_to_reference(K.dense_gemv(x, w16), x, w16.float())


@pytest.mark.skipif(K._cpu is None, reason="C kernels not built")
@pytest.mark.parametrize("hd,t", [(64, 1), (64, 7), (64, 100), (48, 19), (12, 9), (128, 33)])
def test_decode_attention_and_silu_match_torch(simd, hd, t):
    """The decode step's attention (grouped KV heads) and SiLU gate, each vector path."""
    n_head, n_kv, stride = 6, 2, t + 5
    g = torch.Generator().manual_seed(hd + t)
    q = torch.randn(n_head, hd, generator=g)
    k, v = torch.randn(2, n_kv, stride, hd, generator=g)
    out = torch.full((n_head, hd), float("nan"))
    ptrs = (q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr())
    K._cpu.attend(*ptrs, n_head, n_kv, hd, t, stride, hd**-0.5)
    kk = k[:, :t].repeat_interleave(n_head // n_kv, 0)
    vv = v[:, :t].repeat_interleave(n_head // n_kv, 0)
    ref = torch.softmax((kk @ q[:, :, None])[..., 0] * hd**-0.5, -1)[:, None, :] @ vv
    assert torch.allclose(out, ref[:, 0], rtol=1e-5, atol=1e-6)
    gu = torch.randn(2 * hd * t, generator=g) * 8
    act = torch.full((hd * t,), float("nan"))
    K._cpu.silu_mul(gu.data_ptr(), act.data_ptr(), hd * t)
    gate, up = gu.chunk(2)
    assert torch.allclose(act, torch.nn.functional.silu(gate) * up, rtol=1e-6, atol=1e-6)
