"""Greedy replays (memory vectors): every token's rank and the lead of the top logit, and memory
vectors accepted only with the margin asked for."""

import pytest
import torch

from memzip import CompressSettings, OptimizerSettings, compress, decompress
from memzip.decoder import decode_windows
from memzip.format import container
from memzip.format.vectors import VectorSpec
from memzip.tiny import TRAINING_TEXT
from memzip.vectors.codes import stored_vectors
from memzip.vectors.greedy import GreedyReplay, replay, reproduces

SETTINGS = CompressSettings(window=4, optimizer=OptimizerSettings(steps=80, lr=0.1, batch=8, margin=1.0), store="always",
                            vectors=VectorSpec("compact"))


def _windows(lm, size=9, text=TRAINING_TEXT[:200]):
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def test_greedy_decoding_is_rank_zero_everywhere(lm):
    windows = _windows(lm, 6)[:4]
    greedy = decode_windows(lm, [len(w) for w in windows])
    replays = replay(lm, greedy)
    assert [r.ranks for r in replays] == [[0] * len(w) for w in greedy]
    assert all(r.lead >= 0 and r.reproduces(0.0) for r in replays)
    text = replay(lm, windows)
    assert any(rank > 0 for r in text for rank in r.ranks)  # the text itself is not all greedy choices
    assert [len(r.ranks) for r in text] == [len(w) for w in windows]


def test_a_replay_reproduces_only_with_every_rank_zero_and_the_margin():
    assert GreedyReplay([0, 0], 1.5).reproduces(1.5) and not GreedyReplay([0, 0], 1.5).reproduces(1.6)
    assert not GreedyReplay([0, 1], 9.0).reproduces(0.0)


def test_replays_reject_malformed_requests(lm):
    with pytest.raises(ValueError):
        replay(lm, [[1, 2], []])
    with pytest.raises(ValueError):
        replay(lm, [[1, 2]], torch.zeros((2, lm.hidden_size)))


@pytest.fixture(scope="module")
def stored(lm):
    """A container of the tiny model with several windows stored as vectors."""
    c = container.read(compress(TRAINING_TEXT[:200].encode(), lm, SETTINGS))
    assert c.window_count >= 8
    return c


def test_every_stored_vector_window_clears_the_required_margin(lm, stored):
    vectors = stored_vectors(stored, lm)
    tokens = decode_windows(lm, stored.window_lengths, None, vectors)
    replays = replay(lm, tokens, vectors)
    assert all(rank == 0 for r in replays for rank in r.ranks)
    assert min(r.lead for r in replays) >= SETTINGS.optimizer.margin


def test_reproduces_rejects_a_window_whose_margin_is_too_small(lm, stored):
    vectors = stored_vectors(stored, lm)[:1]
    tokens = decode_windows(lm, stored.window_lengths[:1], None, vectors)
    (r,) = replay(lm, tokens, vectors)
    assert reproduces(lm, vectors, tokens, r.lead - 1e-3) == [True]
    assert reproduces(lm, vectors, tokens, r.lead + 1e-3) == [False]
    wrong = [tokens[0][:-1] + [(tokens[0][-1] + 1) % lm.vocab_size]]
    assert reproduces(lm, vectors, wrong, 0.0) == [False]


def test_a_higher_margin_still_round_trips(lm):
    data = TRAINING_TEXT[:80].encode()
    strict = CompressSettings(window=4, optimizer=OptimizerSettings(steps=80, lr=0.1, batch=8, margin=3.0),
                              store="always", vectors=VectorSpec("compact"))
    blob = compress(data, lm, strict)
    c = container.read(blob)
    assert c.window_count >= 1  # some windows reach the higher margin on the tiny model
    tokens = decode_windows(lm, c.window_lengths, None, stored_vectors(c, lm))
    assert min(r.lead for r in replay(lm, tokens, stored_vectors(c, lm))) >= 3.0
    assert decompress(blob, lm) == data
