import random

import pytest

from memzip.rankcoder import MAX_RANK, decode_ranks, encode_ranks, window_costs

STREAMS = {
    "empty": [],
    "one zero": [0],
    "zeros": [0] * 5000,
    "max": [MAX_RANK, 0, MAX_RANK],
    "geometric": [min(int(random.Random(1).expovariate(0.2)), 5000) for _ in range(3000)],
    "uniform vocab": [random.Random(2).randrange(49152) for _ in range(500)],
}


@pytest.mark.parametrize("name", STREAMS)
def test_ranks_round_trip(name):
    ranks = STREAMS[name]
    data = encode_ranks(ranks)
    assert decode_ranks(data, len(ranks)) == ranks
    assert (data == b"") == (ranks == [])


def test_stream_sizes_follow_how_predictable_the_ranks_are():
    rng = random.Random(3)
    zeros, small, wide = [0] * 1000, [rng.randrange(4) for _ in range(1000)], [rng.randrange(49152) for _ in range(1000)]
    sizes = [len(encode_ranks(r)) for r in (zeros, small, wide)]
    assert sizes[0] < 8 < sizes[1] < sizes[2]
    assert sizes[2] <= 1000 * 17 / 8 * 1.05  # uniform ranks: about 15.6 + bucket bits each, no blow-up


def test_out_of_range_ranks_cannot_be_written():
    for bad in (-1, MAX_RANK + 1):
        with pytest.raises(ValueError):
            encode_ranks([0, bad])


def test_only_the_encoders_exact_output_is_accepted():
    ranks = STREAMS["geometric"][:200]
    data = encode_ranks(ranks)
    for bad, count in ((data + b"\x00", 200), (data[:-1], 200), (data, 199), (data, 201), (b"", 1), (data, 0)):
        try:
            decoded = decode_ranks(bad, count)
        except ValueError:
            continue
        assert encode_ranks(decoded) == bad and len(decoded) == count  # never two streams for the same ranks
    flipped = 0
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x10
        try:
            assert decode_ranks(bytes(bad), 200) != ranks
        except ValueError:
            flipped += 1
    assert flipped > 0


def test_window_costs_estimate_the_coded_size():
    rng = random.Random(4)
    rows = [[min(int(rng.expovariate(0.5)), 300) for _ in range(64)] for _ in range(40)]
    costs = window_costs(rows)
    coded = len(encode_ranks([r for row in rows for r in row]))
    assert abs(sum(costs) - coded) < 0.05 * coded + 8
    assert window_costs([[0] * 64, [9999] * 64])[0] < window_costs([[0] * 64, [9999] * 64])[1]
