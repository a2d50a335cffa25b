"""The ``cpu`` kernel for grid formats: products by table lookup from packed codes (``grid.c``).

A grid format's codes index tables of values scaled per group
(:meth:`lmpress.formats.grid.GridFormat.kernel_tables`). :func:`prepare_grid_state`
turns a packed weight into what the C code reads, once: the codes in the integer
kernel's layout, the tables as float32 (widened for the vector lookups), per-group
table indices and float32 scales. :func:`grid_gemm` computes up to
:data:`lmpress.kernels.cpu.GEMM_MAX_ROWS` activation rows from it;
:func:`grid_dequantize` writes the float32 weight, bit-identical to
:meth:`PackedWeight.dequantize`, for longer inputs.
"""

from dataclasses import dataclass

import torch

from lmpress.formats.grid import GridFormat
from lmpress.kernels.base import YES, Support
from lmpress.packing.packed import PackedWeight


@dataclass
class GridState:
    """Contiguous CPU tensors the C kernel reads, and the capsule that points at them."""

    codes: torch.Tensor  # uint8, flat codes in the layout of tile_rows, 16 bytes of tail
    row_bytes: int  # bytes of one row's packed codes
    tile_rows: int  # 0 row-major; T rows interleaved in pieces of 128 codes
    bits: int
    tables: torch.Tensor  # float32 [T, tstride] (see widen_tables)
    planes: torch.Tensor | None  # uint8 [T, 4, 16] for 4 bits (see byte_planes), else None
    index: torch.Tensor | None  # int32 [P, G] (None: table 0 everywhere)
    scales: torch.Tensor | None  # float32 [P, G], or None for byte scales
    scale_codes: torch.Tensor | None  # uint8 [P, G] indexing scale_table (see byte_scales)
    scale_table: torch.Tensor | None  # float32 [256]
    scale_rule: int  # what scale_table holds, for the vector paths (see scale_rule)
    scale_div: float
    p_stride: int  # G, or 0 for one parameter row shared by every row (per tensor)
    in_features: int
    out_features: int
    group_len: int
    groups: int
    dense: torch.Tensor | None = None  # float32 weight, made at the first long input
    capsule: object = None  # the C side's parsed arguments (``_cpu.grid_linear``)
    fn: object = None  # ``_cpu.grid_gemm``, bound at prepare: a small layer is bound by the call

    def linear(self, bias: torch.Tensor | None = None) -> object:
        """A ``grid_linear`` capsule over this state's tensors (with ``bias [out]`` float32
        folded in, for the decode step; the caller keeps ``bias`` alive)."""
        from lmpress.kernels.cpu import _cpu

        return _cpu.grid_linear(
            self.codes.data_ptr(), self.row_bytes, self.bits, self.tile_rows,
            self.tables.data_ptr(), self.tables.shape[1],
            0 if self.planes is None else self.planes.data_ptr(),
            self.planes is not None and not bool(self.planes[:, :2].any()),
            0 if self.index is None else self.index.data_ptr(),
            0 if self.scales is None else self.scales.data_ptr(),
            0 if self.scale_codes is None else self.scale_codes.data_ptr(),
            0 if self.scale_table is None else self.scale_table.data_ptr(),
            self.scale_rule, self.scale_div, self.p_stride, self.out_features, self.in_features,
            self.group_len, self.groups, 0 if bias is None else bias.data_ptr(),
        )  # fmt: skip


def grid_supports(packed: PackedWeight) -> Support:
    """Whether the table path runs ``packed`` (its format and components), and why not."""
    scheme = packed.scheme
    if not isinstance(scheme.fmt, GridFormat):
        return Support(False, f"reads integer or grid codes, not {scheme.name}")
    if not 1 <= scheme.bits <= 8:
        return Support(False, f"reads grid codes of 1-8 bits, not {scheme.bits}")
    extra = packed.optional_components()
    if extra:
        return Support(False, f"does not decode the {', '.join(extra)} component(s)")
    return YES


def widen_tables(tables: torch.Tensor, bits: int) -> torch.Tensor:
    """``tables [T, 2**bits]`` float32 as the C lookups read them: up to 3 bits, 8 entries,
    entry ``i`` holding value ``i mod 2**bits`` (one 8-lane permute reads 3 bits of a
    lane, the bits above a narrower code being the next codes'); otherwise as they are."""
    v = 1 << bits
    if tables.shape[1] != v:
        raise ValueError(f"a {bits}-bit grid needs tables of {v} values, got {tables.shape[1]}")
    if bits <= 3:
        tables = tables[:, torch.arange(8) % v]
    return tables.to(torch.float32).contiguous()


def byte_planes(tables: torch.Tensor) -> torch.Tensor:
    """16-entry ``tables [T, 16]`` float32 as uint8 ``[T, 4, 16]``: plane ``b`` holds byte
    ``b`` (little-endian) of every entry, one table of a byte shuffle (``lookup_bytes`` in
    grid.c)."""
    t = tables.to(torch.float32).contiguous()
    return t.view(torch.uint8).reshape(t.shape[0], 16, 4).transpose(1, 2).contiguous()


def byte_scales(
    stored: torch.Tensor | None, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(codes uint8 [P, G], table float32 [256])`` with ``table[codes]`` bit for bit
    ``scale [P, G]`` float32, where the format stores its scales as one byte each
    (``stored``, e.g. E8M0 or E4M3) and each byte always means one value; else None.
    The kernel then reads a byte per group instead of four."""
    if stored is None or stored.element_size() != 1 or tuple(stored.shape) != tuple(scale.shape):
        return None
    codes = stored.contiguous().view(torch.uint8)
    bits = scale.contiguous().view(torch.int32).reshape(-1)
    table = torch.zeros(256, dtype=torch.int32)
    table[codes.reshape(-1).long()] = bits  # any occurrence; checked below
    if not torch.equal(table[codes.reshape(-1).long()], bits):
        return None
    return codes.contiguous(), table.view(torch.float32)


def scale_rule(codes: torch.Tensor, table: torch.Tensor) -> tuple[int, float]:
    """``(rule, divisor)`` naming what ``table [256]`` float32 holds for the codes in use
    (``codes`` uint8): 1 E8M0, ``2^(c - 127)``; 2 positive E4M3 over one float32
    divisor, ``float32(e4m3(c)) / divisor`` (NVFP4's block scales); 0 neither (the
    kernel then looks each code up). Checked bit for bit on the codes in use."""
    used = torch.unique(codes.reshape(-1)).long()
    want = table[used]
    c = used.to(torch.float32)
    e8m0 = torch.where(used == 0, torch.tensor(2.0**-127), torch.exp2(c - 127))
    if bool((used < 255).all()) and torch.equal(e8m0.view(torch.int32), want.view(torch.int32)):
        return 1, 1.0
    e4m3 = used.to(torch.uint8).view(torch.float8_e4m3fn).to(torch.float32)
    ok = (want > 0) & (e4m3 > 0)
    if bool((used < 0x7F).all()) and bool(ok.any()):
        # divisor candidates from the codes themselves and their float32 neighbours (the
        # quotient that recovers it may round by an ulp)
        d = torch.unique(e4m3[ok] / want[ok])[:4]
        inf = torch.full_like(d, float("inf"))
        for c in torch.cat([d, torch.nextafter(d, inf), torch.nextafter(d, -inf)]):
            if torch.equal((e4m3 / c).view(torch.int32), want.view(torch.int32)):
                return 2, float(c)
    return 0, 1.0


def prepare_grid_state(packed: PackedWeight, tile_rows: int) -> GridState:
    """The C kernel's view of ``packed`` (a grid format, CPU) with codes tiled by
    ``tile_rows`` (:func:`lmpress.kernels.cpu.tile_codes`)."""
    from lmpress.kernels.cpu import tile_codes

    scheme = packed.scheme
    n, k = packed.out_features, packed.in_features
    tensors = {name: t.cpu() for name, t in packed.tensors.items()}
    tables, index, scale = scheme.fmt.kernel_tables(tensors)
    if scheme.block_rows:
        # square blocks (fp8b128): a block's scale serves each of its rows as a group
        b = scheme.block_rows
        scale = scale.repeat_interleave(b, 0)[:n]
        index = None if index is None else index.repeat_interleave(b, 0)[:n]
    p, g = scale.shape
    if p not in (1, n) or (index is not None and tuple(index.shape) != (p, g)):
        raise ValueError(f"kernel tables of {scheme.name}: parameters {list(scale.shape)}")
    qw = tensors["qweight"].contiguous()
    # fp8b128's block scales were expanded to rows above: no longer the stored bytes
    packed_scales = None if scheme.block_rows else byte_scales(tensors.get("scales"), scale)
    rule, div = scale_rule(*packed_scales) if packed_scales else (0, 1.0)
    st = GridState(
        codes=tile_codes(qw, scheme.bits, tile_rows),
        row_bytes=qw.shape[1],
        tile_rows=tile_rows,
        bits=scheme.bits,
        tables=widen_tables(tables, scheme.bits),
        planes=byte_planes(tables) if scheme.bits == 4 else None,
        index=None if index is None else index.to(torch.int32).contiguous(),
        scales=None if packed_scales else scale.to(torch.float32).contiguous(),
        scale_codes=packed_scales[0] if packed_scales else None,
        scale_table=packed_scales[1] if packed_scales else None,
        scale_rule=rule,
        scale_div=div,
        p_stride=0 if p == 1 and n > 1 else g,
        in_features=k,
        out_features=n,
        group_len=scheme.group_len(k),
        groups=g,
    )
    from lmpress.kernels.cpu import _cpu

    st.capsule = st.linear()
    st.fn = _cpu.grid_gemm
    return st


def grid_gemm(x: torch.Tensor, st: GridState, bias: torch.Tensor | None) -> torch.Tensor:
    """``x [M, K]`` float32 contiguous (M <= 64) -> ``[M, N]`` float32 from packed codes;
    ``bias [N]`` float32 contiguous or None."""
    m = x.shape[0]
    y = torch.empty(m, st.out_features, dtype=torch.float32)
    b = 0 if bias is None else bias.data_ptr()
    st.fn(st.capsule, x.data_ptr(), y.data_ptr(), m, b, torch.get_num_threads())
    return y


def grid_dequantize(st: GridState) -> torch.Tensor:
    """Float32 ``[N, K]``, bit-identical to :meth:`PackedWeight.dequantize`."""
    from lmpress.kernels.cpu import _cpu

    w = torch.empty(st.out_features, st.in_features, dtype=torch.float32)
    _cpu.grid_dequant(st.capsule, w.data_ptr(), torch.get_num_threads())
    return w
