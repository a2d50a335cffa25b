import pytest
import torch

from lmpress.packing import pack_codes, packed_row_bytes, unpack_codes


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("cols", [1, 7, 8, 64, 577])
def test_pack_roundtrip(bits, cols):
    g = torch.Generator().manual_seed(bits * 1000 + cols)
    codes = torch.randint(0, 1 << bits, (5, cols), generator=g)
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.shape == (5, packed_row_bytes(cols, bits))
    assert torch.equal(unpack_codes(packed, bits, cols).long(), codes)


def test_4bit_layout_is_low_nibble_first():
    codes = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])
    assert pack_codes(codes, 4).tolist() == [[0x21, 0x43, 0x65, 0x87]]


def test_extreme_codes_8bit():
    codes = torch.full((2, 16), 255)
    assert torch.equal(unpack_codes(pack_codes(codes, 8), 8, 16).long(), codes)
