"""Replay on the exact engine: distributions computed all at once are those decoding follows, whatever
the batching; memory vectors are accepted only with the margin asked for."""

import pytest
import torch

import memzip.decoder as decoder
from memzip import CompressSettings, OptimizerSettings, compress, decompress
from memzip.format import container
from memzip.codec import stored_vectors
from memzip.codes import VectorCode, VectorSpec
from memzip.decoder import code_windows, decode_windows, rank_windows, reproduces
from memzip.tiny import TRAINING_TEXT

SETTINGS = CompressSettings(window=4, optimizer=OptimizerSettings(steps=80, lr=0.1, batch=8, margin=1.0), store="always", vectors=VectorSpec("compact"))


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
    for rows, positions in ((64, 4096), (1, 4096), (3, 20)):  # batching is not part of the format
        monkeypatch.setattr(decoder, "MAX_ROWS", rows)
        monkeypatch.setattr(decoder, "PREFILL_POSITIONS", positions)
        assert code_windows(lm, windows, vectors)[0] == streams
        assert decode_windows(lm, [len(w) for w in windows], streams, vectors) == windows


def test_greedy_decoding_is_rank_zero_everywhere_and_costs_little(lm):
    windows = _windows(lm, 6)[:4]
    greedy = decode_windows(lm, [len(w) for w in windows])
    assert rank_windows(lm, greedy) == [[0] * len(w) for w in greedy]
    _, bits = code_windows(lm, greedy)
    _, bits_text = code_windows(lm, windows)
    assert sum(bits) < sum(bits_text)  # the likeliest tokens are the cheapest


def test_decoding_rejects_malformed_requests(lm):
    with pytest.raises(ValueError):
        decode_windows(lm, [2, 3], [b"\x00"])
    with pytest.raises(ValueError):
        rank_windows(lm, [[1, 2], []])
    with pytest.raises(ValueError):
        rank_windows(lm, [[1, 2]], torch.zeros((2, lm.hidden_size)))


@pytest.fixture(scope="module")
def stored(lm):
    """A container of the tiny model with several windows stored as vectors."""
    c = container.read(compress(TRAINING_TEXT[:200].encode(), lm, SETTINGS))
    assert c.window_count >= 8
    return c


def test_every_stored_vector_window_clears_the_required_margin(lm, stored):
    lengths = stored.window_lengths
    tokens = decode_windows(lm, lengths, None, stored_vectors(stored, lm))
    ranks, gaps = rank_windows(lm, tokens, stored_vectors(stored, lm), margins=True)
    assert all(r == 0 for row in ranks for r in row)
    assert min(gaps) >= SETTINGS.optimizer.margin


def test_reproduces_rejects_a_window_whose_margin_is_too_small(lm, stored):
    vectors = stored_vectors(stored, lm)[:1]
    tokens = decode_windows(lm, stored.window_lengths[:1], None, vectors)
    _, gaps = rank_windows(lm, tokens, vectors, margins=True)
    assert reproduces(lm, vectors, tokens, gaps[0] - 1e-3) == [True]
    assert reproduces(lm, vectors, tokens, gaps[0] + 1e-3) == [False]
    wrong = [tokens[0][:-1] + [(tokens[0][-1] + 1) % lm.vocab_size]]
    assert reproduces(lm, vectors, wrong, 0.0) == [False]


def test_a_higher_margin_still_round_trips(lm):
    data = TRAINING_TEXT[:80].encode()
    strict = CompressSettings(window=4, optimizer=OptimizerSettings(steps=80, lr=0.1, batch=8, margin=3.0), store="always", vectors=VectorSpec("compact"))
    blob = compress(data, lm, strict)
    c = container.read(blob)
    if c.window_count:
        tokens = decode_windows(lm, c.window_lengths, None, stored_vectors(c, lm))
        _, gaps = rank_windows(lm, tokens, stored_vectors(c, lm), margins=True)
        assert min(gaps) >= 3.0
    assert decompress(blob, lm) == data
