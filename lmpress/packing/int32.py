"""Codes packed into int32 words as one little-endian bit stream per row.

The layout of compressed-tensors' ``pack-quantized`` (codes along the input
dimension, zero points along the output dimension) and of GPTQ's ``qweight`` /
``qzeros`` (the same stream, on transposed axes).
"""

import numpy as np
import torch


def pack_int32_rows(u: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack ``u [R, C]`` (integers in ``[0, 2**bits)``) into int32 ``[R, ceil(C*bits/32)]``.

    Element ``i`` of a row occupies bits ``[i*bits, (i+1)*bits)`` of the row's
    little-endian stream; word ``k`` holds stream bits ``[32k, 32k + 32)``.
    """
    rows, cols = u.shape
    nw = -(-cols * bits // 32)
    b = ((u.to(torch.int64).unsqueeze(-1) >> torch.arange(bits)) & 1).reshape(rows, cols * bits)
    b = torch.nn.functional.pad(b, (0, nw * 32 - cols * bits))
    words = (b.reshape(rows, nw, 32) << torch.arange(32)).sum(-1)
    return torch.from_numpy(words.numpy().astype(np.uint32).view(np.int32).copy())


def unpack_int32_rows(p: torch.Tensor, bits: int, cols: int) -> torch.Tensor:
    """Inverse of :func:`pack_int32_rows`: int32 ``[R, W]`` -> int64 ``[R, cols]``."""
    rows = p.shape[0]
    words = torch.from_numpy(p.numpy().view(np.uint32).astype(np.int64))
    b = ((words.unsqueeze(-1) >> torch.arange(32)) & 1).reshape(rows, -1)[:, : cols * bits]
    return (b.reshape(rows, cols, bits) << torch.arange(bits)).sum(-1)
