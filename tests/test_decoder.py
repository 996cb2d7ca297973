"""Coding (all at once) and decoding (token by token) on the exact engine: the distributions computed
all at once are those decoding follows, whatever the batching."""

import pytest
import torch

import memzip.rows as rows
from memzip.decoder import decode_windows
from memzip.encoder import code_windows
from memzip.format.vectors import VectorSpec
from memzip.tiny import TRAINING_TEXT
from memzip.vectors.codes import VectorCode


def _windows(lm, size=9, text=TRAINING_TEXT[:200]):
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    return [ids[i : i + size] for i in range(0, len(ids), size)]


@pytest.mark.parametrize("with_vectors", [False, True])
def test_streams_decode_back_to_the_windows_whatever_the_batches(lm, monkeypatch, with_vectors):
    windows = _windows(lm)
    vectors = None
    if with_vectors:
        code = VectorCode(VectorSpec("full"), lm)
        vectors = code.rebuild(code.quantize(torch.randn(len(windows), lm.hidden_size, generator=torch.Generator().manual_seed(1))))
    streams, bits = code_windows(lm, windows, vectors)
    assert all(8 * len(s) >= b for s, b in zip(streams, bits))  # no stream beats its information
    assert sum(8 * len(s) for s in streams) <= sum(bits) + 16 * len(streams)  # nor costs much more
    for max_rows, positions in ((64, 4096), (1, 4096), (3, 20)):  # batching is not part of the format
        monkeypatch.setattr(rows, "MAX_ROWS", max_rows)
        monkeypatch.setattr(rows, "PREFILL_POSITIONS", positions)
        assert code_windows(lm, windows, vectors)[0] == streams
        assert decode_windows(lm, [len(w) for w in windows], streams, vectors) == windows


def test_batches_hold_at_most_their_rows_and_positions():
    lengths = [5, 9, 2, 7, 7, 1, 30]
    for max_rows, positions in ((64, 4096), (2, 100), (3, 20), (1, 1)):
        found = rows.batches(lengths, max_rows, positions)
        assert [i for b in found for i in b] == list(range(len(lengths)))  # consecutive, every index once
        for b in found:
            assert len(b) == 1 or (len(b) <= max_rows and len(b) * max(lengths[i] for i in b) <= positions)


def test_greedy_decoding_costs_the_fewest_bits(lm):
    windows = _windows(lm, 6)[:4]
    greedy = decode_windows(lm, [len(w) for w in windows])
    _, bits = code_windows(lm, greedy)
    _, bits_text = code_windows(lm, windows)
    assert sum(bits) < sum(bits_text)  # the likeliest tokens are the cheapest


def test_coding_and_decoding_reject_malformed_requests(lm):
    with pytest.raises(ValueError):
        decode_windows(lm, [2, 3], [b"\x00"])
    with pytest.raises(ValueError):
        decode_windows(lm, [2, 0])
    with pytest.raises(ValueError):
        code_windows(lm, [[1, 2], []])
    with pytest.raises(ValueError):
        code_windows(lm, [[1, 2]], torch.zeros((2, lm.hidden_size)))
