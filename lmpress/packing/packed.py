"""The packed weight: codes, scales and zero points of one matrix, as stored.

Tensors (names are the safetensors suffixes under the module's prefix):

- ``qweight``  uint8 ``[out, packed_row_bytes(in, bits)]``: bit-packed codes.
- ``scales``   float16/bfloat16 ``[P, G]``: per-group scales (``P`` = out, or 1 per tensor).
- ``qzeros``   uint8 ``[1, packed_row_bytes(P * G, bits)]``: bit-packed integer zero
  points, flattened row-major so that per-channel zeros are not padded row by
  row; absent for symmetric schemes (implicit zero ``2**(bits-1)``). With float
  zero points (``scheme.float_zero``, format version 2) it is ``[P, G]`` float16.

Anything else (low-rank factors, sparsity masks, codebooks) goes in ``extras``
and bumps ``PACKED_FORMAT_VERSION`` when it changes how weights decode.
"""

from dataclasses import dataclass, field

import torch

from lmpress.formats.affine import dequantize_codes, expand_to_columns, num_groups
from lmpress.formats.scheme import Scheme
from lmpress.packing.bits import pack_codes, packed_row_bytes, unpack_codes

# 2: float zero points (schemes with zero_format='float'); checkpoints without them
# are written as 1 so that older readers still load them.
PACKED_FORMAT_VERSION = 2


@dataclass
class PackedWeight:
    """One quantized ``[out_features, in_features]`` matrix in stored form."""

    scheme: Scheme
    out_features: int
    in_features: int
    qweight: torch.Tensor
    scales: torch.Tensor
    qzeros: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def from_codes(
        cls, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, scheme: Scheme
    ) -> "PackedWeight":
        """Pack float/int codes ``[out, in]``, scales ``[P, G]`` and zeros ``[P, G]``."""
        out_f, in_f = codes.shape
        bits = scheme.bits
        qweight = pack_codes(codes.to(torch.int64), bits)
        scales = scale.to(scheme.torch_scale_dtype).contiguous()
        if scheme.symmetric:
            qzeros = None
        elif scheme.float_zero:
            qzeros = zero.to(torch.float16).contiguous()
        else:
            qzeros = pack_codes(zero.to(torch.int64).reshape(1, -1), bits)
        return cls(scheme, out_f, in_f, qweight, scales, qzeros)

    def codes(self) -> torch.Tensor:
        """Unpacked codes, uint8 ``[out, in]``."""
        return unpack_codes(self.qweight, self.scheme.bits, self.in_features)

    def zeros(self) -> torch.Tensor:
        """Zero points as float32 ``[P, G]``."""
        if self.qzeros is None:
            return torch.full(self.scales.shape, float(self.scheme.fmt.mid))
        if self.scheme.float_zero:
            return self.qzeros.float()
        p, g = self.scales.shape
        return unpack_codes(self.qzeros, self.scheme.bits, p * g).reshape(p, g).float()

    def dequantize(self) -> torch.Tensor:
        """Float32 weight ``[out, in]`` exactly as the stored tensors define it."""
        s = expand_to_columns(self.scales.float(), self.in_features, self.scheme)
        z = expand_to_columns(self.zeros(), self.in_features, self.scheme)
        return dequantize_codes(self.codes(), s, z)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Stored tensors by suffix name."""
        t = {"qweight": self.qweight, "scales": self.scales}
        if self.qzeros is not None:
            t["qzeros"] = self.qzeros
        t.update(self.extras)
        return t

    def stored_bits(self) -> int:
        """Every bit this weight occupies on disk (codes, scales, zeros, extras, padding)."""
        return sum(t.numel() * t.element_size() * 8 for t in self.tensors().values())

    @staticmethod
    def expected_shapes(
        scheme: Scheme, out_f: int, in_f: int
    ) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Shape and dtype of each stored tensor for a matrix of this size (for empty modules)."""
        rows = 1 if scheme.granularity == "tensor" else out_f
        g = num_groups(in_f, scheme)
        sdt = scheme.torch_scale_dtype
        shapes = {
            "qweight": ((out_f, packed_row_bytes(in_f, scheme.bits)), torch.uint8),
            "scales": ((rows, g), sdt),
        }
        if scheme.float_zero:
            shapes["qzeros"] = ((rows, g), torch.float16)
        elif not scheme.symmetric:
            shapes["qzeros"] = ((1, packed_row_bytes(rows * g, scheme.bits)), torch.uint8)
        return shapes


def concat_rows(parts: list[PackedWeight]) -> PackedWeight:
    """Several packed weights of one scheme (not per-tensor) stacked along their rows.

    The result decodes to ``torch.cat([p.dequantize() for p in parts])``: codes and
    per-row parameters move with their rows; zero points are re-packed because they
    are stored as one flat stream.
    """
    s = parts[0].scheme
    if any(p.scheme != s or p.in_features != parts[0].in_features for p in parts):
        raise ValueError("concat_rows needs one scheme and one input width")
    if s.granularity == "tensor":
        raise ValueError("per-tensor weights have one scale each; they cannot share rows")
    qzeros = None
    if parts[0].qzeros is not None:
        if s.float_zero:
            qzeros = torch.cat([p.qzeros for p in parts])
        else:
            z = torch.cat([p.zeros() for p in parts]).to(torch.int64)
            qzeros = pack_codes(z.reshape(1, -1), s.bits)
    return PackedWeight(
        s,
        sum(p.out_features for p in parts),
        parts[0].in_features,
        torch.cat([p.qweight for p in parts]),
        torch.cat([p.scales for p in parts]),
        qzeros,
    )
