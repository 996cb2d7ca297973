"""Greedy replay: reproducible across batch sizes and threads, and the safety margin it enforces."""

import pytest
import torch

from memzip import CompressSettings, OptimizerSettings, compress, container, decompress
from memzip.codes import VectorSpec
from memzip.codec import stored_vectors
from memzip.decoder import replay, reproduces
from tiny import TRAINING_TEXT

SETTINGS = CompressSettings(window=4, optimizer=OptimizerSettings(steps=80, lr=0.1, batch=8, margin=1.0), store="always", vectors=VectorSpec("compact"))


@pytest.fixture(scope="module")
def stored(lm):
    """A container of the tiny model with several windows stored as vectors."""
    c = container.read(compress(TRAINING_TEXT[:200].encode(), lm, SETTINGS))
    assert c.window_count >= 8
    return c


def _lengths(c):
    return [n for kind, n in c.segments if kind == container.KIND_WINDOW]


def test_replay_is_identical_for_every_batch_size_and_thread_count(lm, stored):
    lengths = _lengths(stored)
    ref_tokens, ref_gaps = replay(lm, stored_vectors(stored, lm), lengths, 64, 0)
    ref = torch.tensor([g for row in ref_gaps for g in row])
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for batch in range(1, len(lengths) + 1):
                tokens, gaps = replay(lm, stored_vectors(stored, lm), lengths, batch, 0)
                assert tokens == ref_tokens, (threads, batch)
                diff = (torch.tensor([g for row in gaps for g in row]) - ref).abs().max().item()
                assert diff < 1e-3, (threads, batch, diff)  # numeric noise, far below the margin
    finally:
        torch.set_num_threads(before)


def test_every_stored_window_clears_the_required_margin(lm, stored):
    _, gaps = replay(lm, stored_vectors(stored, lm), _lengths(stored), 64, 0)
    assert min(min(row) for row in gaps) >= SETTINGS.optimizer.margin


def test_reproduces_rejects_a_window_whose_margin_is_too_small(lm, stored):
    lengths = _lengths(stored)
    tokens, gaps = replay(lm, stored_vectors(stored, lm)[:1], lengths[:1], 1, 0)
    smallest = min(gaps[0])
    assert reproduces(lm, stored_vectors(stored, lm)[:1], tokens, smallest - 1e-3, 1) == [True]
    assert reproduces(lm, stored_vectors(stored, lm)[:1], tokens, smallest + 1e-3, 1) == [False]
    wrong = [tokens[0][:-1] + [(tokens[0][-1] + 1) % 400]]
    assert reproduces(lm, stored_vectors(stored, lm)[:1], wrong, 0.0, 1) == [False]


def test_a_higher_margin_still_round_trips(lm):
    data = TRAINING_TEXT[:80].encode()
    strict = CompressSettings(window=4, optimizer=OptimizerSettings(steps=80, lr=0.1, batch=8, margin=3.0), store="always", vectors=VectorSpec("compact"))
    blob = compress(data, lm, strict)
    c = container.read(blob)
    if c.window_count:
        _, gaps = replay(lm, stored_vectors(c, lm), _lengths(c), 64, 0)
        assert min(min(row) for row in gaps) >= 3.0
    assert decompress(blob, lm) == data


def test_a_rows_logits_do_not_depend_on_what_the_other_rows_hold(lm):
    """What placeholder rows rely on: same batch shape, different contents elsewhere, same bits."""
    gen = torch.Generator().manual_seed(3)
    vocab = lm.model.get_input_embeddings().weight.shape[0]
    ids = torch.randint(0, vocab, (6, 12), generator=gen)
    other = ids.clone()
    other[2] = torch.randint(0, vocab, (12,), generator=gen)
    with torch.no_grad():
        runs = []
        for batch in (ids, other):
            past, logits_per_step = None, []
            for i in range(batch.shape[1]):
                logits, past = lm.next_logits(lm.embed(batch[:, i : i + 1]), past)
                logits_per_step.append(logits)
            runs.append(torch.stack(logits_per_step))
    keep = [0, 1, 3, 4, 5]
    assert torch.equal(runs[0][:, keep], runs[1][:, keep]) and not torch.equal(runs[0][:, 2], runs[1][:, 2])
