"""Lossless coding: bit-exact round trips, and fewer bits than stored."""

import numpy as np
import pytest
import torch

from lmpress.lossless import compress_bf16, decode, decompress_bf16, encode
from lmpress.lossless.bf16 import join_bf16, split_bf16


@pytest.mark.parametrize("chunk", [7, 8, 1000, 1 << 20])
def test_symbols_round_trip_across_chunks(chunk):
    rng = np.random.default_rng(0)
    s = rng.choice(16, size=1000, p=np.r_[np.full(8, 0.1), np.full(8, 0.025)])
    c = encode(s, 16, chunk=chunk)
    assert np.array_equal(decode(c), s)
    assert len(c.offsets) == -(-1000 // chunk) + 1


def test_a_skewed_histogram_takes_about_its_entropy():
    rng = np.random.default_rng(1)
    p = np.r_[0.7, 0.2, np.full(14, 0.1 / 14)]
    s = rng.choice(16, size=200_000, p=p)
    c = encode(s, 16)
    entropy = -(p * np.log2(p)).sum()
    assert c.words.nbytes * 8 / s.size < entropy * 1.01
    assert c.words.nbytes * 8 / s.size < 4


@pytest.mark.parametrize("values", [[3], [0, 0, 0], []])
def test_degenerate_streams_round_trip(values):
    s = np.asarray(values, dtype=np.int64)
    assert np.array_equal(decode(encode(s, 256)), s)


def test_symbols_outside_the_alphabet_are_refused():
    with pytest.raises(ValueError, match="must lie in"):
        encode(np.asarray([0, 16]), 16)


def test_bf16_round_trip_is_bit_exact_for_every_bit_pattern():
    every = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    e, sm = split_bf16(every)
    assert torch.equal(join_bf16(e, sm).view(torch.int16), every.view(torch.int16))
    c = compress_bf16(every.reshape(256, 256), chunk=10_000)
    back = decompress_bf16(c)
    assert back.shape == (256, 256)
    assert torch.equal(back.view(torch.int16).reshape(-1), every.view(torch.int16))


def test_trained_like_weights_store_in_about_eleven_bits():
    w = (torch.randn(512, 512, generator=torch.Generator().manual_seed(0)) * 0.02).bfloat16()
    c = compress_bf16(w)
    assert torch.equal(decompress_bf16(c).view(torch.int16), w.view(torch.int16))
    assert c.nbytes() < 0.72 * w.numel() * 2


def test_compress_refuses_other_dtypes():
    with pytest.raises(ValueError, match="bfloat16"):
        compress_bf16(torch.zeros(3))
