"""The ``cpu`` kernel: matrix products straight from packed codes (C extension ``_cpu``).

Up to :data:`GEMM_MAX_ROWS` activation rows (decoding, small batches) go through
the C kernel, which reads the packed codes, scales and zero points and never
materialises a float weight: the bytes read per token are the stored bytes.
Larger batches (prefill, perplexity windows) are compute-bound: their weight is
dequantized by the C code into a temporary float32 matrix, bit-identical to the
reference dequantization, and multiplied by torch's BLAS.

Grid formats (codes indexing tables of values: FP8, NVFP4, MX, FP4, NF4, the learned
and searched grids) take the same two routes through a table-lookup kernel of their
own (:mod:`lmpress.kernels.grid`, ``grid.c``); their state is a
:class:`~lmpress.kernels.grid.GridState` where integer formats have a :class:`CpuState`.

The extension is built by the package's own build (``setup.py``); where it could
not be built, :func:`available` is false, ``auto`` picks the torch reference,
and one warning says so.
"""

import hashlib
import os
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from lmpress.kernels.base import KERNELS, YES, Support
from lmpress.kernels.grid import (
    GridState,
    grid_dequantize,
    grid_gemm,
    grid_supports,
    prepare_grid_state,
)
from lmpress.kernels.lut import LutState, lut_gemv, lut_layout, lut_supported
from lmpress.packing.bits import unpack_codes
from lmpress.packing.packed import PackedWeight

try:
    from lmpress.kernels import _cpu  # type: ignore[attr-defined]

    _IMPORT_ERROR: str | None = None
except ImportError as e:  # not built on this machine
    _cpu = None
    _IMPORT_ERROR = str(e)

# Activation rows up to which the packed-code GEMM beats dequantize + BLAS on this
# class of machine (measured by scripts/bench_kernels.py; see BENCHMARKS.md).
GEMM_MAX_ROWS = 8
_warned = False


def source_digest() -> str:
    """12 hex digits of SHA-256 over the C kernel sources (``lmpress/kernels/*.c, *.h``):
    which kernel code a benchmark run measured."""
    here = Path(__file__).parent
    h = hashlib.sha256()
    for f in sorted([*here.glob("*.c"), *here.glob("*.h")]):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:12]


def build_info() -> dict[str, int | str]:
    """What the extension was built with and what this CPU runs (empty when not built)."""
    if _cpu is None:
        return {"built": 0, "error": _IMPORT_ERROR or ""}
    return {"built": 1, **_cpu.info()}


@dataclass
class CpuState:
    """Contiguous tensors the C kernel reads, and how to read them."""

    qweight: torch.Tensor  # uint8 codes in the kernel's layout (see tile_codes), 16 bytes of tail
    row_bytes: int  # bytes of one row's codes (packed.qweight.shape[1])
    tile_rows: int  # 0 row-major; T rows interleaved in pieces of 128 codes
    scales: torch.Tensor  # int16 view of fp16/bf16 [P, G]
    scale_kind: int  # 0 fp16, 1 bf16
    zeros: torch.Tensor | None  # uint8 [P, G] or int16 view of fp16 [P, G]
    zero_kind: int  # 0 the format's midpoint, 1 uint8, 2 fp16
    mid: float
    bits: int
    in_features: int
    out_features: int
    group_len: int
    groups: int
    p_stride: int  # G, or 0 for one parameter row shared by every row
    lut: LutState | None = None  # table-lookup layout, when that path was chosen for GEMV
    packed: PackedWeight | None = None  # kept to build the lookup layout on first use
    gemv_path: str | None = None  # "lut" or "fma", decided at the first batch-1 product
    dense: torch.Tensor | None = None  # float32 weight, made at the first long input

    weight_args: tuple | None = None  # the per-weight part of a kernel call, built once
    bound_args: tuple | None = None  # (weight_args, their packed_linear capsule)

    def args(self, x_ptr: int, y_ptr: int, m: int, bias_ptr: int) -> tuple:
        """The ``_cpu.gemm`` / ``_cpu.dequant`` argument tuple for these pointers."""
        return (x_ptr, y_ptr, m, *self.static_args(), bias_ptr, torch.get_num_threads())

    def static_args(self) -> tuple:
        # Small layers are bound by the call, not the arithmetic: the pointers and
        # sizes are gathered once (a copy of the state with new tensors resets it).
        if self.weight_args is None:
            self.weight_args = (
                self.in_features,
                self.out_features,
                self.qweight.data_ptr(),
                self.row_bytes,
                self.bits,
                self.tile_rows,
                self.scales.data_ptr(),
                self.scale_kind,
                self.p_stride,
                0 if self.zeros is None else self.zeros.data_ptr(),
                self.zero_kind,
                self.mid,
                self.group_len,
                self.groups,
            )
        return self.weight_args

    def linear(self) -> object:
        """The weight arguments parsed once by the C side (a ``packed_linear`` capsule for
        ``_cpu.linear_gemm``); rebuilt whenever ``weight_args`` is, so that a copy of the
        state with new tensors never reads the original's memory."""
        a = self.static_args()
        if self.bound_args is None or self.bound_args[0] is not a:
            self.bound_args = (a, _cpu.packed_linear(0, 0, 0, *a, 0, 1))
        return self.bound_args[1]


def prepare_cpu_state(packed: PackedWeight) -> CpuState:
    """Unpack the zero points once (they are tiny) and view scales as raw 16-bit words."""
    scheme = packed.scheme
    p, g = packed.scales.shape
    scales = packed.scales.contiguous().cpu().view(torch.int16)
    if packed.qzeros is None:
        zeros, zero_kind = None, 0
    elif scheme.float_zero:
        zeros, zero_kind = packed.qzeros.to(torch.float16).contiguous().cpu().view(torch.int16), 2
    else:
        zeros = unpack_codes(packed.qzeros.cpu(), scheme.bits, p * g).reshape(p, g).contiguous()
        zero_kind = 1
    qw = packed.qweight.contiguous().cpu()
    t = kernel_tile_rows()
    return CpuState(
        qweight=tile_codes(qw, scheme.bits, t),
        row_bytes=qw.shape[1],
        tile_rows=t,
        scales=scales,
        scale_kind=1 if scheme.scale_dtype == "bfloat16" else 0,
        zeros=zeros,
        zero_kind=zero_kind,
        mid=float(scheme.fmt.mid),
        bits=scheme.bits,
        in_features=packed.in_features,
        out_features=packed.out_features,
        group_len=scheme.group_len(packed.in_features),
        groups=g,
        p_stride=0 if p == 1 and packed.out_features > 1 else g,
        packed=packed,
    )


def kernel_tile_rows() -> int:
    """Rows the batch-1 kernel works on at once here (8 AVX-512, 4 AVX2, 0 scalar), which
    the code layout interleaves; env ``LMPRESS_TILE_ROWS`` overrides (0: row-major)."""
    forced = os.environ.get("LMPRESS_TILE_ROWS")
    if forced is not None:
        return int(forced)
    return int(_cpu.info().get("tile_rows", 0)) if _cpu is not None else 0


def grid_tile_rows() -> int:
    """Rows the grid kernel's batch-1 tile works on here (8 with AVX-512, 4 with AVX2, 0
    scalar), which its code layout interleaves; env ``LMPRESS_TILE_ROWS`` overrides (0:
    row-major)."""
    forced = os.environ.get("LMPRESS_TILE_ROWS")
    if forced is not None:
        return int(forced)
    if _cpu is None:
        return 0
    info = _cpu.info()
    return 8 if info.get("avx512") else 4 if info.get("avx2") else 0


def tile_codes(qw: torch.Tensor, bits: int, tile_rows: int) -> torch.Tensor:
    """The C kernels' code buffer for ``qw`` (uint8 ``[N, row_bytes]``, row-major packed
    codes of ``bits`` bits): flat uint8 with 16 bytes of zero tail, because the vector
    paths load whole 16-byte words.

    ``tile_rows`` 0 keeps rows in order. ``T > 0`` pads the row count to a multiple of
    ``T`` and cuts rows into pieces of 128 codes (``16 * bits`` bytes, the last one
    ``row_bytes - 16 * bits * (pieces - 1)`` bytes), then stores piece 0 of rows 0..T-1,
    piece 1 of rows 0..T-1, ..., the last pieces of rows 0..T-1 (packed, without
    padding), then the next tile of rows: a kernel tile of T rows streams through memory
    in order, where row-major codes would be read as T strided streams (which memory
    serves more slowly), and a partial last piece (rows of 576 codes) is read
    without padding. A tile takes ``T * row_bytes`` bytes.
    """
    n, rb = qw.shape
    if tile_rows:
        piece = 16 * bits
        full = (rb - 1) // piece  # whole pieces before the last one
        tiles = -(-n // tile_rows)
        pad = torch.zeros(tiles * tile_rows, rb, dtype=torch.uint8)
        pad[:n] = qw
        head = pad[:, : full * piece].reshape(tiles, tile_rows, full, piece).transpose(1, 2)
        tail = pad[:, full * piece :].reshape(tiles, tile_rows * (rb - full * piece))
        qw = torch.cat([head.reshape(tiles, -1), tail], dim=1)
    flat = qw.reshape(-1)
    buf = torch.zeros(flat.numel() + 16, dtype=torch.uint8)
    buf[: flat.numel()] = flat
    return buf[: flat.numel()]


def cpu_gemm(x: torch.Tensor, st: CpuState, bias: torch.Tensor | None) -> torch.Tensor:
    """``x [M, K]`` float32 contiguous (M <= 64) -> ``[M, N]`` float32 from packed codes."""
    # A small layer's product is bound by the call: this wrapper's Python is kept to
    # one shape read, one allocation and no method calls on the common path.
    m = x.shape[0]
    if m == 1:
        if st.gemv_path is None:  # decided (and the lookup layout built) at the first GEMV
            st.gemv_path = choose_gemv_path(st)
            if st.gemv_path == "lut":
                st.lut = lut_layout(st.packed)
        if st.lut is not None:
            return lut_gemv(x, st.lut, bias)
    bound = st.bound_args
    cap = bound[1] if bound is not None and bound[0] is st.weight_args else st.linear()
    y = torch.empty(m, st.out_features, dtype=torch.float32)
    b = 0 if bias is None else bias.data_ptr()
    _cpu.linear_gemm(cap, x.data_ptr(), y.data_ptr(), m, b, torch.get_num_threads())
    return y


def cpu_dequantize(st: CpuState) -> torch.Tensor:
    """Float32 ``[N, K]``, bit-identical to :meth:`PackedWeight.dequantize`."""
    w = torch.empty(st.out_features, st.in_features, dtype=torch.float32)
    _cpu.dequant(*st.args(0, w.data_ptr(), 0, 0))
    return w


# Which GEMV path wins, per (rows, cols, bits, group length, threads): measured once
# per process on the first layer of that shape ("pick per shape by measurement").
_GEMV_CHOICE: dict[tuple, str] = {}


def lut_available() -> bool:
    return _cpu is not None and bool(_cpu.info().get("avx512"))


def choose_gemv_path(st: CpuState) -> str:
    """``lut`` or ``fma`` for batch-1 products of this weight (env LMPRESS_GEMV forces one)."""
    packed = st.packed
    forced = os.environ.get("LMPRESS_GEMV", "auto")
    if forced in ("lut", "fma"):
        return forced if forced == "fma" or (lut_available() and lut_supported(packed)) else "fma"
    if not (lut_available() and lut_supported(packed)):
        return "fma"
    key = (st.out_features, st.in_features, st.bits, st.group_len, torch.get_num_threads())
    if key not in _GEMV_CHOICE:
        lut = lut_layout(packed)
        x = torch.randn(1, st.in_features)
        y = torch.empty(1, st.out_features)
        fma_args = st.args(x.data_ptr(), y.data_ptr(), 1, 0)
        weights = [st.qweight, st.scales, st.zeros, lut.codes, lut.scales, lut.zeros]
        _GEMV_CHOICE[key] = race(
            {"fma": lambda: _cpu.gemm(*fma_args), "lut": lambda: lut_gemv(x, lut, None)},
            before=lambda: evict(weights),
        )
    return _GEMV_CHOICE[key]


def evict(tensors: list[torch.Tensor | None]) -> None:
    """Flush ``tensors``' bytes from the caches (needs the built extension).

    The path race times each call on evicted weights because decoding reads every
    weight from memory, and the winner can differ between a cached weight and one read
    from memory (measured by scripts/bench_kernels.py, BENCHMARKS.md)."""
    for t in tensors:
        if t is not None:
            _cpu.evict(t.data_ptr(), t.numel() * t.element_size())


def race(
    fns: dict[str, Callable[[], object]],
    rounds: int = 7,
    reps: int = 3,
    before: Callable[[], object] | None = None,
) -> str:
    """Name of the fastest of ``fns``: each round times every candidate (best of ``reps``
    calls) in an order that alternates between rounds, and the winner has the lowest
    median over the rounds, so that one stall on a shared machine cannot decide it.
    ``before`` (untimed) runs ahead of every timed call, e.g. to evict the weights."""
    names = list(fns)
    for fn in fns.values():
        fn()
    per: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names if r % 2 == 0 else reversed(names):
            best = float("inf")
            for _ in range(reps):
                if before is not None:
                    before()
                t0 = time.perf_counter()
                fns[n]()
                best = min(best, time.perf_counter() - t0)
            per[n].append(best)
    return min(names, key=lambda n: statistics.median(per[n]))


def dense_gemv(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x [1, K]`` float32 contiguous, ``w [N, K]`` float32 or bfloat16 contiguous ->
    ``[1, N]`` float32, by lmpress's C GEMV (needs the built extension)."""
    y = torch.empty(1, w.shape[0], dtype=torch.float32)
    bf16 = int(w.dtype == torch.bfloat16)
    _cpu.dense_gemv(
        w.data_ptr(),
        x.data_ptr(),
        y.data_ptr(),
        w.shape[0],
        w.shape[1],
        torch.get_num_threads(),
        bf16,
    )
    return y


# Whether the C float GEMV beats torch's, per (rows, cols, threads), measured once.
_DENSE_CHOICE: dict[tuple, bool] = {}


def dense_gemv_faster(w: torch.Tensor) -> bool:
    """Whether :func:`dense_gemv` beats ``F.linear`` on ``w [N, K]`` here (BLAS's single-row
    product runs at a fraction of memory bandwidth on some CPUs, well on others)."""
    if _cpu is None or not hasattr(_cpu, "dense_gemv"):
        return False
    key = (*w.shape, torch.get_num_threads())
    if key not in _DENSE_CHOICE:
        x = torch.randn(1, w.shape[1])
        fns = {"ours": lambda: dense_gemv(x, w), "torch": lambda: F.linear(x, w)}
        _DENSE_CHOICE[key] = race(fns, rounds=5) == "ours"
    return _DENSE_CHOICE[key]


class CpuKernel:
    """Packed-code GEMV/GEMM on the CPU; memory at run time is the stored bytes."""

    name = "cpu"

    def available(self) -> bool:
        global _warned
        if _cpu is None and not _warned:
            _warned = True
            warnings.warn(
                "lmpress CPU kernels are not built here (" + (_IMPORT_ERROR or "") + "); using "
                "the slower torch reference. Reinstall with a C compiler: pip install -e .",
                stacklevel=3,
            )
        return _cpu is not None

    def supports(self, packed: PackedWeight, device: torch.device) -> Support:
        scheme = packed.scheme
        if device.type != "cpu":
            return Support(False, f"runs on the CPU, the weight is on {device.type}")
        if "grid" in scheme.fmt.traits:
            return grid_supports(packed)
        if scheme.format != "int" or not 1 <= scheme.bits <= 8:
            return Support(False, f"reads integer codes of 1-8 bits, not {scheme.name}")
        extra = packed.optional_components()
        if extra:
            return Support(False, f"does not decode the {', '.join(extra)} component(s)")
        return YES

    def prepare(self, packed: PackedWeight) -> CpuState | GridState:
        if "grid" in packed.scheme.fmt.traits:
            return prepare_grid_state(packed, grid_tile_rows())
        # The lookup layout is built lazily at the first batch-1 call: workloads with
        # long inputs only (perplexity, prefill) never pay for it, in time or memory.
        return prepare_cpu_state(packed)

    def __call__(
        self, x: torch.Tensor, st: CpuState | GridState, bias: torch.Tensor | None
    ) -> torch.Tensor:
        # A decode step calls this once per linear layer, each on little arithmetic, so
        # every torch call shows: tensor operations that would be no-ops (a reshape to
        # the same shape, a cast to the same dtype) are skipped.
        # grid formats take the table-lookup kernel; shapes, dtypes and routes are shared
        if st.__class__ is GridState:
            gemm, dequantize = grid_gemm, grid_dequantize
        else:
            gemm, dequantize = cpu_gemm, cpu_dequantize
        x2 = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
        if x2.dtype != torch.float32:
            x2 = x2.to(torch.float32)
        b = bias
        if b is not None and (b.dtype != torch.float32 or not b.is_contiguous()):
            b = b.to(torch.float32).contiguous()
        if x2.shape[0] <= GEMM_MAX_ROWS and not x2.requires_grad:
            y = gemm(x2 if x2.is_contiguous() else x2.contiguous(), st, b)
        else:
            # Long inputs (perplexity windows, prefill) are compute-bound: keep the float
            # weight once one arrives, as the reference kernel does. Decoding alone never
            # materialises it.
            if st.dense is None:
                st.dense = dequantize(st)
            y = F.linear(x2, st.dense, b)
        if x.dim() != 2:
            y = y.view(*x.shape[:-1], st.out_features)
        return y if y.dtype == x.dtype else y.to(x.dtype)


KERNELS.register("cpu")(CpuKernel())
