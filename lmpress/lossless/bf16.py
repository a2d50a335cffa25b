"""bf16 weights stored losslessly in fewer bits (DFloat11; Zhang et al., 2025).

A bf16 value is a sign bit, 8 exponent bits and 7 mantissa bits. Trained weights use
few exponents (their magnitudes span a narrow range), so the exponent byte carries far
less than 8 bits of information, while sign and mantissa are close to uniform. The
exponents are entropy-coded (:mod:`lmpress.lossless.ans`) and sign and mantissa kept
as one raw byte per value; decoding reassembles the same 16 bits.
"""

from dataclasses import dataclass

import numpy as np
import torch

from lmpress.lossless.ans import CHUNK, EntropyCoded, decode, encode


@dataclass
class CompressedBF16:
    """A bf16 tensor of ``shape``: ``sign_mantissa`` uint8 ``[n]`` (sign in bit 7,
    mantissa in bits 0-6) and its entropy-coded exponent bytes."""

    shape: tuple[int, ...]
    sign_mantissa: np.ndarray
    exponents: EntropyCoded

    def nbytes(self) -> int:
        """Bytes stored, everything counted."""
        return int(self.sign_mantissa.nbytes + self.exponents.nbytes() + 8 * len(self.shape))


def split_bf16(t: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """bf16 tensor -> (exponent uint8 ``[n]``, sign/mantissa uint8 ``[n]``)."""
    if t.dtype != torch.bfloat16:
        raise ValueError(f"expected a bfloat16 tensor, got {t.dtype}")
    bits = t.detach().cpu().contiguous().reshape(-1).view(torch.int16).numpy().view(np.uint16)
    exponent = ((bits >> 7) & 0xFF).astype(np.uint8)
    sign_mantissa = (((bits >> 8) & 0x80) | (bits & 0x7F)).astype(np.uint8)
    return exponent, sign_mantissa


def join_bf16(exponent: np.ndarray, sign_mantissa: np.ndarray) -> torch.Tensor:
    """Inverse of :func:`split_bf16`: a 1-D bf16 tensor."""
    if exponent.shape != sign_mantissa.shape:
        raise ValueError("exponent and sign/mantissa arrays differ in length")
    e = exponent.astype(np.uint16)
    sm = sign_mantissa.astype(np.uint16)
    bits = ((sm & 0x80) << 8) | (e << 7) | (sm & 0x7F)
    return torch.from_numpy(bits.view(np.int16).copy()).view(torch.bfloat16)


def compress_bf16(t: torch.Tensor, chunk: int = CHUNK) -> CompressedBF16:
    """Losslessly compress a bf16 tensor."""
    exponent, sign_mantissa = split_bf16(t)
    return CompressedBF16(tuple(t.shape), sign_mantissa, encode(exponent, 256, chunk))


def decompress_bf16(c: CompressedBF16) -> torch.Tensor:
    """The bf16 tensor :func:`compress_bf16` was given, bit for bit."""
    return join_bf16(decode(c.exponents), c.sign_mantissa).reshape(c.shape)
