"""Replay on the exact engine: ranking windows (the compressor) and decoding them from ranks (the decompressor).

Input of each row: ``[embed(prefix_id)]``, followed by the window's memory vector when the file has
vectors (rebuilt by ``memzip.codes.VectorCode.rebuild``), then the window's tokens. At each position the
model's logits order the vocabulary (decreasing logit, lower token id first on ties); a token's *rank*
is its place in that order (rank 0 = the greedy argmax).

* ``rank_windows`` evaluates whole windows at once (one prefill per batch of windows) and returns the
  rank of every token: what the compressor stores.
* ``decode_windows`` regenerates windows one token per step, taking at each step the token of the
  stored rank and feeding it back: what the decompressor does.

The engine's logits are the same bits whether positions are evaluated all at once or one at a time, in
any batch of rows, with any thread count, on any machine (memzip.engine), so the ranks the compressor
computes are exactly those the decompressor follows: how windows are batched here is a matter of speed,
not part of the file format.
"""

from __future__ import annotations

import os

import torch

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


def rank_windows(lm, windows, vectors=None, on_progress=None, margins: bool = False):
    """The rank of every token of every window (list per window). With ``margins``, also per window the
    smallest lead of the top logit over the runner-up along it (memory-vector checks), as a pair."""
    windows = [list(w) for w in windows]
    _check(lm, vectors, len(windows))
    if any(not w for w in windows):
        raise ValueError("windows hold at least one token")
    engine, offset = lm.engine, _offset(vectors)
    ranks: list = [None] * len(windows)
    gaps: list = [None] * len(windows)
    done = 0
    for batch in _batches([len(w) + offset for w in windows], MAX_ROWS, PREFILL_POSITIONS):
        feed = torch.zeros((len(batch), max(len(windows[i]) for i in batch) - 1), dtype=torch.long)
        for r, i in enumerate(batch):  # every token but the last is an input (shorter rows padded)
            feed[r, : len(windows[i]) - 1] = torch.tensor(windows[i][:-1], dtype=torch.long)
        x = torch.cat([_start(lm, vectors, batch), engine.embed(feed)], 1)
        hidden = engine.forward(x, engine.new_cache(len(batch), x.shape[1]))
        # the logits at position offset - 1 + k predict token k of the row
        positions, targets, owners = [], [], []
        for r, i in enumerate(batch):
            n = len(windows[i])
            positions += range(r * x.shape[1] + offset - 1, r * x.shape[1] + offset - 1 + n)
            targets += windows[i]
            owners += [i] * n
        found = engine.ranks(hidden, torch.tensor(positions), torch.tensor(targets)).tolist()
        lead = _leads(engine, hidden, torch.tensor(positions)) if margins else None
        pos = 0
        for i in batch:
            n = len(windows[i])
            ranks[i] = found[pos : pos + n]
            if margins:
                gaps[i] = min(lead[pos : pos + n])
            pos += n
        done += sum(len(windows[i]) for i in batch)
        if on_progress is not None:
            on_progress(done)
    return (ranks, gaps) if margins else ranks


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


def decode_windows(lm, lengths: list[int], ranks=None, vectors=None, on_step=None) -> list[list[int]]:
    """Regenerate windows of ``lengths[i]`` tokens from their ``ranks`` (one list per window; None: all
    0, i.e. greedy) and memory ``vectors`` (None: none), one token per step. ``on_step(tokens_done)``
    follows each step."""
    lengths = list(lengths)
    if ranks is not None and [len(r) for r in ranks] != lengths:
        raise ValueError("one rank per token of every window is required")
    if any(n < 1 for n in lengths):
        raise ValueError("windows hold at least one token")
    _check(lm, vectors, len(lengths))
    engine, offset = lm.engine, _offset(vectors)
    out: list = [None] * len(lengths)
    done_before = 0
    for batch in _batches(lengths, MAX_ROWS, PREFILL_POSITIONS * 4):
        steps = max(lengths[i] for i in batch)
        given = torch.zeros((len(batch), steps), dtype=torch.long)
        if ranks is not None:
            for r, i in enumerate(batch):
                given[r, : lengths[i]] = torch.tensor(ranks[i], dtype=torch.long)
        cache = engine.new_cache(len(batch), offset + steps - 1)
        x = _start(lm, vectors, batch)
        tokens = torch.empty((len(batch), steps), dtype=torch.long)
        for step in range(steps):
            hidden = engine.forward(x, cache)
            last = torch.arange(len(batch)) * x.shape[1] + x.shape[1] - 1
            tokens[:, step] = engine.select(hidden, last, given[:, step]).cpu()
            if on_step is not None:
                on_step(done_before + sum(min(step + 1, lengths[i]) for i in batch))
            if step + 1 < steps:
                x = engine.embed(tokens[:, step : step + 1])
        for r, i in enumerate(batch):
            out[i] = tokens[r, : lengths[i]].tolist()
        done_before += sum(lengths[i] for i in batch)
    return out


def reproduces(lm, vectors: torch.Tensor, windows, margin: float) -> list[bool]:
    """Per window: does greedy decoding from its memory vector regenerate it exactly (every rank 0),
    with every token's logit ahead of the runner-up by at least ``margin``?"""
    ranks, gaps = rank_windows(lm, windows, vectors, margins=True)
    return [all(r == 0 for r in row) and gap >= margin for row, gap in zip(ranks, gaps)]
