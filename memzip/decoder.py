"""Replay on the exact engine: coding windows (the compressor) and decoding them (the decompressor).

Input of each row: ``[embed(prefix_id)]``, followed by the window's memory vector when the file has
vectors (rebuilt by ``memzip.codes.VectorCode.rebuild``), then the window's tokens. At each position the
model gives integer frequencies for every token (``Engine.frequencies``) and orders the vocabulary
(decreasing logit, lower token id first on ties; a token's *rank* is its place in that order).

* ``code_windows`` evaluates whole windows at once (one prefill per batch of windows) and codes every
  token with the model's integer distribution at its position (memzip.tokencoder): what the
  compressor stores.
* ``decode_windows`` regenerates windows one token per step, decoding at each step the token whose
  interval holds the stream's value under that step's distribution, and feeding it back: what the
  decompressor does.
* ``rank_windows`` gives every token's rank (0 = the greedy choice): memory vectors are accepted only
  where greedy decoding regenerates their window.

The engine's logits are the same bits whether positions are evaluated all at once or one at a time, in
any batch of rows, with any thread count, on any machine (memzip.engine), so the distributions the
compressor codes with are exactly those the decompressor decodes with: how windows are batched here is
a matter of speed, not part of the file format.
"""

from __future__ import annotations

import math
import os

import torch

from .format import tokencoder

# How many rows are evaluated together: speed and memory only, never a bit of the result. The
# environment variables exist to demonstrate that (bench.portability decodes with other values).
MAX_ROWS = int(os.environ.get("MEMZIP_DECODE_ROWS") or 64)  # decoding rows stepped together
PREFILL_POSITIONS = int(os.environ.get("MEMZIP_PREFILL_POSITIONS") or 4096)  # positions per all-at-once evaluation


def _offset(vectors) -> int:
    """Positions before a window's first token: the prefix, and the memory vector if any."""
    return 1 if vectors is None else 2


def _start(lm, vectors, rows: list[int]) -> torch.Tensor:
    """Inputs [rows, offset, hidden]: the prefix embedding, then each row's vector (float64)."""
    prefix = lm.engine.embed(torch.full((len(rows), 1), lm.prefix_id, dtype=torch.long))
    if vectors is None:
        return prefix
    v = vectors[rows].to(lm.engine.device, torch.float64).unsqueeze(1)
    return torch.cat([prefix, v], dim=1)


def _batches(lengths: list[int], rows: int, positions: int) -> list[list[int]]:
    """Consecutive indices grouped so that no batch exceeds ``rows`` rows or ``positions`` positions."""
    out: list[list[int]] = []
    for i, n in enumerate(lengths):
        if out and len(out[-1]) < rows and (len(out[-1]) + 1) * max(n, max(lengths[j] for j in out[-1])) <= positions:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def _check(lm, vectors, count: int) -> None:
    if vectors is not None and (vectors.ndim != 2 or vectors.shape[0] != count or vectors.shape[1] != lm.hidden_size):
        raise ValueError("one memory vector [hidden] per window is required")


def _evaluate(lm, windows, vectors, on_progress, per_batch):
    """Evaluate whole windows all at once, in batches; ``per_batch(batch, hidden, positions, targets)``
    gets, for the windows ``batch``, the flat positions predicting each of their tokens (in order) and
    those tokens."""
    windows = [list(w) for w in windows]
    _check(lm, vectors, len(windows))
    if any(not w for w in windows):
        raise ValueError("windows hold at least one token")
    engine, offset = lm.engine, _offset(vectors)
    done = 0
    for batch in _batches([len(w) + offset for w in windows], MAX_ROWS, PREFILL_POSITIONS):
        feed = torch.zeros((len(batch), max(len(windows[i]) for i in batch) - 1), dtype=torch.long)
        for r, i in enumerate(batch):  # every token but the last is an input (shorter rows padded)
            feed[r, : len(windows[i]) - 1] = torch.tensor(windows[i][:-1], dtype=torch.long)
        x = torch.cat([_start(lm, vectors, batch), engine.embed(feed)], 1)
        hidden = engine.forward(x, engine.new_cache(len(batch), x.shape[1]))
        # the logits at position offset - 1 + k predict token k of the row
        positions, targets = [], []
        for r, i in enumerate(batch):
            positions += range(r * x.shape[1] + offset - 1, r * x.shape[1] + offset - 1 + len(windows[i]))
            targets += windows[i]
        per_batch(batch, hidden, torch.tensor(positions), torch.tensor(targets))
        done += sum(len(windows[i]) for i in batch)
        if on_progress is not None:
            on_progress(done)
    return windows


def code_windows(lm, windows, vectors=None, on_progress=None):
    """Every window's token stream (memzip.tokencoder) and its size in bits (-log2 of each token's
    probability, summed): the model's distribution at each position, from one all-at-once evaluation
    per batch of windows. Returns (streams, bits), one per window."""
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

    windows = _evaluate(lm, windows, vectors, on_progress, per_batch)
    return [tokencoder.encode(intervals[i]) for i in range(len(windows))], [bits[i] for i in range(len(windows))]


def rank_windows(lm, windows, vectors=None, on_progress=None, margins: bool = False):
    """The rank of every token of every window (list per window). With ``margins``, also per window the
    smallest lead of the top logit over the runner-up along it (memory-vector checks), as a pair."""
    ranks: dict[int, list] = {}
    gaps: dict[int, float] = {}
    engine = lm.engine

    def per_batch(batch, hidden, positions, targets):
        found = engine.ranks(hidden, positions, targets).tolist()
        lead = _leads(engine, hidden, positions) if margins else None
        pos = 0
        for i in batch:
            n = len(windows[i])
            ranks[i] = found[pos : pos + n]
            if margins:
                gaps[i] = min(lead[pos : pos + n])
            pos += n

    windows = _evaluate(lm, windows, vectors, on_progress, per_batch)
    out = [ranks[i] for i in range(len(windows))]
    return (out, [gaps[i] for i in range(len(windows))]) if margins else out


def _leads(engine, hidden, positions: torch.Tensor) -> list[float]:
    """Top logit minus runner-up at each position."""
    out = []
    for start in range(0, positions.shape[0], engine.HEAD_ROWS):
        logits = engine.logits(hidden, positions[start : start + engine.HEAD_ROWS])
        if logits.shape[-1] < 2:
            out += [float("inf")] * logits.shape[0]
            continue
        top = logits.topk(2, dim=-1).values
        out += (top[:, 0] - top[:, 1]).tolist()
    return out


def decode_windows(lm, lengths: list[int], streams=None, vectors=None, on_step=None) -> list[list[int]]:
    """Regenerate windows of ``lengths[i]`` tokens from their token ``streams`` (one per window; None:
    greedy decoding, the top token at every step) and memory ``vectors`` (None: none), one token per
    step. ``on_step(tokens_done)`` follows each step. A stream that is not exactly what the encoder
    writes for the tokens it decodes to raises ValueError."""
    lengths = list(lengths)
    if streams is not None and len(streams) != len(lengths):
        raise ValueError("one token stream per window is required")
    if any(n < 1 for n in lengths):
        raise ValueError("windows hold at least one token")
    _check(lm, vectors, len(lengths))
    engine, offset = lm.engine, _offset(vectors)
    out: list = [None] * len(lengths)
    done_before = 0
    for batch in _batches(lengths, MAX_ROWS, PREFILL_POSITIONS * 4):
        steps = max(lengths[i] for i in batch)
        cache = engine.new_cache(len(batch), offset + steps - 1)
        x = _start(lm, vectors, batch)
        decoders = [tokencoder.Decoder(streams[i]) for i in batch] if streams is not None else None
        intervals: list[list] = [[] for _ in batch]
        tokens = torch.zeros((len(batch), steps), dtype=torch.long)
        for step in range(steps):
            hidden = engine.forward(x, cache)
            last = torch.arange(len(batch)) * x.shape[1] + x.shape[1] - 1
            live = [r for r, i in enumerate(batch) if step < lengths[i]]
            if decoders is None:
                tokens[:, step] = engine.greedy(hidden, last).cpu()
            else:
                dist = engine.distributions(hidden, last[live])
                for k, r in enumerate(live):
                    total = dist.total(k)
                    token, lo, hi = dist.find(k, decoders[r].target(total))
                    decoders[r].narrow(lo, hi, total)
                    intervals[r].append((lo, hi, total))
                    tokens[r, step] = token
            if on_step is not None:
                on_step(done_before + sum(min(step + 1, lengths[i]) for i in batch))
            if step + 1 < steps:
                x = engine.embed(tokens[:, step : step + 1])
        for r, i in enumerate(batch):
            if decoders is not None and tokencoder.encode(intervals[r]) != streams[i]:
                raise ValueError(f"token stream of window {i} is not what the encoder writes for what it decodes to (corrupt)")
            out[i] = tokens[r, : lengths[i]].tolist()
        done_before += sum(lengths[i] for i in batch)
    return out


def reproduces(lm, vectors: torch.Tensor, windows, margin: float) -> list[bool]:
    """Per window: does greedy decoding from its memory vector regenerate it exactly (every rank 0),
    with every token's logit ahead of the runner-up by at least ``margin``?"""
    ranks, gaps = rank_windows(lm, windows, vectors, margins=True)
    return [all(r == 0 for r in row) and gap >= margin for row, gap in zip(ranks, gaps)]
