"""Greedy replays on the exact engine: does a memory vector make greedy decoding regenerate its window?

A window is evaluated all at once (memzip/encoder.py ``evaluate_windows``, the rows coding uses); each
token's *rank* is its place in the vocabulary ordered by decreasing logit (lower token id first on
ties), 0 for the greedy choice, and the window's *lead* is the smallest margin of the top logit over
the runner-up along it. A memory vector is accepted (``--objective greedy``, the paper's setting) only
when every rank is 0 with a lead of at least the required margin.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..encoder import evaluate_windows


@dataclass(frozen=True)
class GreedyReplay:
    """One window replayed: every token's rank, and the smallest lead of the top logit over the runner-up."""

    ranks: list[int]
    lead: float

    def reproduces(self, margin: float) -> bool:
        """Does greedy decoding regenerate the window, every token ahead by at least ``margin``?"""
        return all(r == 0 for r in self.ranks) and self.lead >= margin


def replay(lm, windows, vectors=None, on_progress=None) -> list[GreedyReplay]:
    """Every window's ranks and lead, from one all-at-once evaluation per batch of windows."""
    ranks: dict[int, list] = {}
    leads: dict[int, float] = {}
    engine = lm.engine

    def per_batch(batch, hidden, positions, targets):
        found = engine.ranks(hidden, positions, targets).tolist()
        lead = _leads(engine, hidden, positions)
        pos = 0
        for i in batch:
            n = len(windows[i])
            ranks[i], leads[i] = found[pos : pos + n], min(lead[pos : pos + n])
            pos += n

    windows = evaluate_windows(lm, windows, vectors, on_progress, per_batch)
    return [GreedyReplay(ranks[i], leads[i]) for i in range(len(windows))]


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


def reproduces(lm, vectors: torch.Tensor, windows, margin: float) -> list[bool]:
    """Per window: does greedy decoding from its memory vector regenerate it exactly (every rank 0),
    with every token's logit ahead of the runner-up by at least ``margin``?"""
    return [r.reproduces(margin) for r in replay(lm, windows, vectors)]
