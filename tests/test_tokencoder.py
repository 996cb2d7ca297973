"""The arithmetic coder behind the token streams."""

import math
import random

import pytest

from memzip.format import tokencoder


def _intervals(seed: int, n: int, total_bits: int = 24):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        total = rng.randrange(2, 1 << total_bits)
        lo = rng.randrange(total)
        hi = rng.randrange(lo + 1, min(total, lo + 1 + rng.choice([1, 10, total])) + 1)
        out.append((lo, hi, total))
    return out


def _decode(data: bytes, intervals):
    dec = tokencoder.Decoder(data)
    for lo, hi, total in intervals:
        target = dec.target(total)
        assert lo <= target < hi
        dec.narrow(lo, hi, total)


@pytest.mark.parametrize("seed", range(5))
def test_every_interval_is_decoded_back(seed):
    intervals = _intervals(seed, 400)
    _decode(tokencoder.encode(intervals), intervals)


def test_stream_size_follows_the_information():
    """Coding costs -log2(p) per symbol, plus at most a couple of bytes."""
    intervals = _intervals(7, 1000)
    information = sum(math.log2(t / (h - lo)) for lo, h, t in intervals)
    size = len(tokencoder.encode(intervals)) * 8
    assert information <= size <= information + 16 + 0.01 * information
    assert len(tokencoder.encode([(0, 1 << 24, 1 << 24)] * 50)) == 1  # certain symbols cost nothing but the end


def test_intervals_outside_the_coder_are_refused():
    for bad in ((0, 0, 10), (5, 4, 10), (0, 11, 10), (0, 1, (1 << 24) + 1), (-1, 1, 10)):
        with pytest.raises(ValueError):
            tokencoder.encode([bad])


def test_a_flipped_bit_moves_the_decoded_symbols():
    intervals = [(i % 7, i % 7 + 1, 7) for i in range(200)]
    data = tokencoder.encode(intervals)
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x08
        dec = tokencoder.Decoder(bytes(bad))
        got = []
        for _lo, _hi, total in intervals:
            t = dec.target(total)
            got.append((t, t + 1, total))
            dec.narrow(t, t + 1, total)
        assert got != intervals or tokencoder.encode(got) != bytes(bad)
