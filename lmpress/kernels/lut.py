"""Table-lookup GEMV (T-MAC's idea in float32) for 1-4 bit codes; see ``lut.c``.

:func:`lut_layout` rearranges a packed weight into bit planes, 16 rows by 8
columns per 16-byte unit, with float32 scales and zero points per 16-row tile;
:func:`lut_gemv` computes ``x [K] @ W.T`` from it. AVX-512 only (the 16-entry
tables live in one register); elsewhere the unpack-and-FMA kernels serve.
"""

from dataclasses import dataclass

import torch

from lmpress.packing.packed import PackedWeight


@dataclass
class LutState:
    codes: torch.Tensor  # uint8 [tiles, k8/8, bits, 16]
    scales: torch.Tensor  # float32 [tiles, G, 16]
    zeros: torch.Tensor  # float32 [tiles, G, 16]
    n: int
    k: int
    k8: int
    group_len: int
    groups: int
    bits: int
    args: tuple | None = None
    fn: object = None


def lut_supported(packed: PackedWeight) -> bool:
    s = packed.scheme
    glen = s.group_len(packed.in_features)
    return s.format == "int" and 1 <= s.bits <= 4 and (s.granularity != "group" or glen % 8 == 0)


def lut_layout(packed: PackedWeight) -> LutState:
    """Bit-plane layout of ``packed`` for :func:`lut_gemv` (same bits per weight)."""
    s = packed.scheme
    n, k = packed.out_features, packed.in_features
    b = s.bits
    n16, k8 = -(-n // 16) * 16, -(-k // 8) * 8
    codes = torch.zeros(n16, k8, dtype=torch.uint8)
    codes[:n, :k] = packed.codes()
    planes = torch.stack([(codes >> p) & 1 for p in range(b)]).reshape(b, n16, k8 // 4, 4)
    nib = planes[..., 0] | (planes[..., 1] << 1) | (planes[..., 2] << 2) | (planes[..., 3] << 3)
    byte = nib[..., 0::2] | (nib[..., 1::2] << 4)  # [b, n16, k8/8] uint8
    units = byte.reshape(b, n16 // 16, 16, k8 // 8).permute(1, 3, 0, 2)  # [tiles, C, b, 16]
    g = packed.scales.shape[1]

    def tiled(p: torch.Tensor) -> torch.Tensor:
        p = p.float().expand(n, -1) if p.shape[0] == 1 else p.float()
        full = torch.zeros(n16, g)
        full[:n] = p
        return full.reshape(n16 // 16, 16, g).transpose(1, 2).contiguous()

    glen = k8 if s.granularity != "group" else s.group_size
    return LutState(
        codes=units.to(torch.uint8).contiguous(),
        scales=tiled(packed.scales),
        zeros=tiled(packed.zeros()),
        n=n,
        k=k,
        k8=k8,
        group_len=glen,
        groups=g,
        bits=b,
    )


def lut_gemv(x: torch.Tensor, st: LutState, bias: torch.Tensor | None) -> torch.Tensor:
    """``x [1, K]`` float32 contiguous -> ``[1, N]`` float32."""
    if st.args is None:  # the per-weight part of the call, built once: small layers are
        from lmpress.kernels.cpu import _cpu  # bound by the call, not the arithmetic

        st.args = (
            st.codes.data_ptr(),
            st.scales.data_ptr(),
            st.zeros.data_ptr(),
            st.n,
            st.k,
            st.k8,
            st.group_len,
            st.groups,
            st.bits,
        )
        st.fn = _cpu.lut_gemv
    y = torch.empty(1, st.n, dtype=torch.float32)
    st.fn(x.data_ptr(), y.data_ptr(), 0 if bias is None else bias.data_ptr(), *st.args, _threads())
    return y


_threads = torch.get_num_threads
