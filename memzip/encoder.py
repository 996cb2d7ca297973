"""Coding windows on the exact engine, all at once: what the compressor stores.

Every window is one row (memzip/rows.py) evaluated with all its positions at once, in batches of rows;
at each position the engine's integer token distribution gives the token its interval
(``Engine.intervals``), and the window's intervals are arithmetic-coded into its token stream
(memzip/format/tokencoder.py). The decompressor (memzip/decoder.py) regenerates the same windows one
token at a time; the engine's logits are the same bits either way, in any batch of rows, with any
thread count, on any machine (memzip.engine), so the distributions coded with are exactly those
decoded with.
"""

from __future__ import annotations

import math

import torch

from . import rows
from .format import tokencoder


def evaluate_windows(lm, windows, vectors, on_progress, per_batch, context=(), start=None, before=None):
    """Evaluate whole windows all at once, in batches; ``per_batch(batch, hidden, positions, targets)``
    gets, for the windows ``batch``, the flat positions predicting each of their tokens (in order) and
    those tokens. Every window but the first is evaluated after the ``context`` tokens (the file's
    shared context: rows.context_of), or window i after ``before[i]`` when given; with a dictionary
    (``start``), every row begins with it, evaluated once and forked. ``on_progress(tokens_done)``
    follows each batch. Returns the windows as lists."""
    windows = [list(w) for w in windows]
    rows.check_vectors(lm, vectors, len(windows))
    if any(not w for w in windows):
        raise ValueError("windows hold at least one token")
    if start is not None and vectors is not None:
        raise ValueError("a dictionary and memory vectors do not go together")
    engine = lm.engine
    offset = start.positions if start is not None else rows.positions_before(vectors)
    if before is None:
        before = [list(context) if i else [] for i in range(len(windows))]
    done = 0
    for batch in rows.prefill_batches([len(w) + offset + len(c) for w, c in zip(windows, before)]):
        inputs = [before[i] + windows[i][:-1] for i in batch]  # every token but the last is an input
        feed = torch.zeros((len(batch), max(len(t) for t in inputs)), dtype=torch.long)
        for r, t in enumerate(inputs):  # shorter rows padded
            feed[r, : len(t)] = torch.tensor(t, dtype=torch.long)
        if start is None:
            x = torch.cat([rows.row_starts(lm, vectors, batch), engine.embed(feed)], 1)
            cache = engine.new_cache(len(batch), x.shape[1])
            first_at = offset - 1  # x's position predicting the row's first token (after its context)
        else:  # the dictionary's cache, forked; x begins with its last position
            base, last = start.prepared()
            x = torch.cat([last.expand(len(batch), 1, -1), engine.embed(feed)], 1)
            cache = engine.fork_cache(base, 0, len(batch), base.length + x.shape[1])
            first_at = 0
        hidden = engine.forward(x, cache)
        positions, targets = [], []
        for r, i in enumerate(batch):
            first = r * x.shape[1] + first_at + len(before[i])
            positions += range(first, first + len(windows[i]))
            targets += windows[i]
        per_batch(batch, hidden, torch.tensor(positions), torch.tensor(targets))
        done += sum(len(windows[i]) for i in batch)
        if on_progress is not None:
            on_progress(done)
    return windows


def code_windows(lm, windows, vectors=None, on_progress=None, context=(), start=None, before=None):
    """Every window's token stream and its size in bits (-log2 of each token's probability, summed):
    the model's distribution at each position, from one all-at-once evaluation per batch of windows;
    every window but the first is coded after the ``context`` tokens (or window i after ``before[i]``),
    every row after the dictionary ``start`` when given. Returns (streams, bits), one per window."""
    intervals: dict[int, list] = {}
    bits: dict[int, float] = {}
    engine = lm.engine

    def per_batch(batch, hidden, positions, targets):
        found = engine.intervals(hidden, positions, targets)
        pos = 0
        for i in batch:
            n = len(windows[i])
            intervals[i] = found[pos : pos + n]
            bits[i] = sum(math.log2(t / (h - lo)) for lo, h, t in intervals[i])
            pos += n

    windows = evaluate_windows(lm, windows, vectors, on_progress, per_batch, context, start, before)
    return [tokencoder.encode(intervals[i]) for i in range(len(windows))], [bits[i] for i in range(len(windows))]
