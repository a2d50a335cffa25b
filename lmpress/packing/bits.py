"""Bit packing of integer codes, one routine for every width from 1 to 8 bits.

Eight ``b``-bit codes make exactly ``b`` bytes: code ``i`` of a run of eight
occupies bits ``[b*i, b*i + b)`` of that little-endian ``b``-byte word. For 4
bits this is the usual two-codes-per-byte (low nibble first) layout; for 8 bits
it is one byte per code. Rows are padded to a multiple of eight codes.
"""

import torch


def packed_row_bytes(n_codes: int, bits: int) -> int:
    """Bytes one packed row of ``n_codes`` codes takes."""
    return (n_codes + 7) // 8 * bits


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack ``codes [R, C]`` (integers in ``[0, 2**bits)``) into ``uint8 [R, packed_row_bytes]``."""
    rows, cols = codes.shape
    pad = (-cols) % 8
    c = codes.to(torch.int64)
    if pad:
        c = torch.nn.functional.pad(c, (0, pad))
    c = c.reshape(rows, -1, 8)
    shifts = torch.arange(8, dtype=torch.int64, device=c.device) * bits
    word = (c << shifts).sum(dim=-1, keepdim=True)  # [R, C/8, 1], at most 64 bits
    byte_shifts = torch.arange(bits, dtype=torch.int64, device=c.device) * 8
    out = (word >> byte_shifts) & 0xFF  # [R, C/8, bits]
    return out.reshape(rows, -1).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, cols: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: ``uint8 [R, B]`` -> ``uint8 [R, cols]``."""
    rows = packed.shape[0]
    p = packed.to(torch.int64).reshape(rows, -1, bits)
    byte_shifts = torch.arange(bits, dtype=torch.int64, device=p.device) * 8
    word = (p << byte_shifts).sum(dim=-1, keepdim=True)
    shifts = torch.arange(8, dtype=torch.int64, device=p.device) * bits
    codes = (word >> shifts) & ((1 << bits) - 1)
    return codes.reshape(rows, -1)[:, :cols].to(torch.uint8)
