"""Stored form of quantized weights."""

from lmpress.packing.bits import pack_codes, packed_row_bytes, unpack_codes
from lmpress.packing.packed import PACKED_FORMAT_VERSION, PackedWeight

__all__ = [
    "PACKED_FORMAT_VERSION",
    "PackedWeight",
    "pack_codes",
    "packed_row_bytes",
    "unpack_codes",
]
