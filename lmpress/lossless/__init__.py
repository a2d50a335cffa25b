"""Lossless coding of what a checkpoint stores: bf16 weights split into an
entropy-coded exponent stream and raw sign/mantissa bytes (DFloat11; Zhang et al.,
2025), and quantized codes entropy-coded by their own histogram."""

from lmpress.lossless.ans import EntropyCoded, decode, encode
from lmpress.lossless.bf16 import CompressedBF16, compress_bf16, decompress_bf16

__all__ = ["CompressedBF16", "EntropyCoded", "compress_bf16", "decode", "decompress_bf16", "encode"]
