"""Fused projections for the lean decoder, and exact forms of a float output head.

:class:`Proj` runs several linear layers that read one input as one product: the
Q/K/V projections of a block, or its gate and up projections. Rows of modules with
one scheme are concatenated into one packed weight, so one kernel call reads them
all. :func:`exact_int8` and :func:`is_bfloat16` find float heads that fewer bytes
hold exactly.
"""

import torch
import torch.nn.functional as F
from torch import nn

from lmpress.errors import LmpressError
from lmpress.formats.scheme import parse_scheme
from lmpress.kernels import cpu as cpu_kernels
from lmpress.kernels import decode_ops, select_kernel
from lmpress.kernels.grid import GridState, grid_dequantize, grid_gemm
from lmpress.methods.rtn import rtn
from lmpress.nn.qlinear import QLinear
from lmpress.packing.packed import PackedWeight, concat_rows

# ggml's Q8_0 grid: 8-bit symmetric codes in groups of 32 with fp16 scales.
EXACT_HEAD_SCHEME = "w8g32s"


def exact_int8(w: torch.Tensor) -> PackedWeight | None:
    """``w [N, K]`` float32 as 8-bit symmetric codes in groups of 32 with fp16 scales, when
    those reproduce it bit for bit, else ``None``.

    A head or embedding that a GGUF stored as Q8_0 (the default model's is) comes back
    from dequantization as exactly such a grid: its amax is ``127 d``, so round to
    nearest finds ``d`` and every code again. Decoding then reads 8.5 bits per weight of
    the head instead of 32 and computes the same logits up to float summation order.
    """
    scheme = parse_scheme(EXACT_HEAD_SCHEME)

    def pack(rows: torch.Tensor) -> PackedWeight | None:
        res = rtn(rows, scheme)
        packed = res.packed(scheme)
        return packed if torch.equal(packed.dequantize(), rows) else None

    # A few rows first: most float heads are not such a grid, and the whole check of a
    # large head costs seconds and a few copies of it in memory.
    if w.shape[0] > 64 and pack(w[:64]) is None:
        return None
    return pack(w)


def is_bfloat16(w: torch.Tensor) -> bool:
    """Whether float32 ``w`` holds bfloat16 values only (a bf16 checkpoint's weight)."""
    return torch.equal(w.to(torch.bfloat16).float(), w)


class Proj:
    """Several linear layers reading one input, as one product (rows concatenated).

    ``__call__(x [M, K], residual=None) -> [M, sum(out)]`` float32; for one row the
    residual (``[sum(out)]``) is added inside the C kernel, as if it were the bias.
    Modules that are all quantized with one (non per-tensor) scheme that the C kernel
    supports run from their packed codes (integer codes, or a grid format's through its
    table-lookup kernel); any other mix runs from the concatenated float32 weight.
    """

    def __init__(self, mods: list[nn.Module]) -> None:
        self.out = sum(m.out_features for m in mods)
        biases = [m.bias for m in mods]
        self.bias = (
            None
            if all(b is None for b in biases)
            else torch.cat(
                [
                    (b if b is not None else torch.zeros(m.out_features)).detach().float()
                    for b, m in zip(biases, mods, strict=True)
                ]
            ).contiguous()
        )
        schemes = {m.scheme for m in mods if isinstance(m, QLinear)}
        self.state = None
        self.weight = None
        s0 = next(iter(schemes)) if len(schemes) == 1 else None
        stacked = None
        if all(isinstance(m, QLinear) for m in mods) and s0 and s0.granularity != "tensor":
            try:
                stacked = concat_rows([m.packed() for m in mods])
            except LmpressError:  # components that cannot share rows: the float path
                stacked = None
        kernel = None
        if stacked is not None:
            kernel, _ = select_kernel("auto", stacked, torch.device("cpu"))
        if kernel is not None and kernel.name == "cpu":
            self.state = kernel.prepare(stacked)
            grid = isinstance(self.state, GridState)
            # grid formats have a table-lookup kernel of their own (lmpress.kernels.grid)
            self._gemm = grid_gemm if grid else cpu_kernels.cpu_gemm
            self._dequantize = grid_dequantize if grid else cpu_kernels.cpu_dequantize
        else:
            ws = [
                m.dequantized_weight() if isinstance(m, QLinear) else m.weight.detach().float()
                for m in mods
            ]
            self.weight = torch.cat(ws).contiguous()

    def decode_linear(self) -> decode_ops.DecodeLinear:
        """This projection for the C decode step (lookup tables, packed codes or float)."""
        st = self.state
        if st is None:
            return decode_ops.dense_linear(self.weight, self.bias)
        if isinstance(st, GridState):
            return decode_ops.grid_linear(st, self.bias)
        if st.gemv_path is None:  # one product decides the GEMV path (and builds its layout)
            cpu_kernels.cpu_gemm(torch.zeros(1, st.in_features), st, None)
        if st.lut is not None:
            return decode_ops.lut_linear(st.lut, self.bias)
        return decode_ops.packed_linear(st, self.bias)

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.state is not None and x.shape[0] <= cpu_kernels.GEMM_MAX_ROWS:
            if residual is not None and x.shape[0] == 1:
                b = residual if self.bias is None else residual + self.bias
                return self._gemm(x, self.state, b.reshape(-1).contiguous())
            y = self._gemm(x, self.state, self.bias)
        elif self.state is not None:
            y = F.linear(x, self._dequantize(self.state), self.bias)
        else:
            y = F.linear(x, self.weight, self.bias)
        return y if residual is None else y + residual
