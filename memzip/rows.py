"""Rows on the exact engine, as coding (memzip/encoder.py) and decoding (memzip/decoder.py) lay them out.

Each window is one row: ``[embed(prefix_id)]``, then the window's memory vector when the file has
vectors (rebuilt by ``memzip.vectors.codes.VectorCode.rebuild``), then the window's tokens. Rows are
evaluated in batches; how they are batched is a matter of speed and memory only, never a bit of the
result (the engine gives the same logits in any batch: memzip.engine).
"""

from __future__ import annotations

import os

import torch

# How many rows are evaluated together. The environment variables exist to demonstrate that they
# change nothing but speed (bench.portability decodes with other values).
MAX_ROWS = int(os.environ.get("MEMZIP_DECODE_ROWS") or 64)  # decoding rows stepped together
PREFILL_POSITIONS = int(os.environ.get("MEMZIP_PREFILL_POSITIONS") or 4096)  # positions per all-at-once evaluation


def context_of(windows, length: int) -> list[int]:
    """The shared context: the first ``length`` tokens of the first window, which every later window
    is coded and decoded after (docs/FORMAT.md, *Shared context*)."""
    return list(windows[0][:length]) if windows and length else []


def positions_before(vectors) -> int:
    """Positions before a window's first token: the prefix, and the memory vector if any."""
    return 1 if vectors is None else 2


def row_starts(lm, vectors, rows: list[int]) -> torch.Tensor:
    """Inputs [rows, positions_before, hidden]: the prefix embedding, then each row's vector (float64)."""
    prefix = lm.engine.embed(torch.full((len(rows), 1), lm.prefix_id, dtype=torch.long))
    if vectors is None:
        return prefix
    v = vectors[rows].to(lm.engine.device, torch.float64).unsqueeze(1)
    return torch.cat([prefix, v], dim=1)


def batches(lengths: list[int], rows: int, positions: int) -> list[list[int]]:
    """Consecutive indices grouped so that no batch exceeds ``rows`` rows or ``positions`` positions."""
    out: list[list[int]] = []
    for i, n in enumerate(lengths):
        if out and len(out[-1]) < rows and (len(out[-1]) + 1) * max(n, max(lengths[j] for j in out[-1])) <= positions:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def prefill_batches(lengths: list[int]) -> list[list[int]]:
    """The rows (by index) evaluated all at once together, for rows of ``lengths`` positions."""
    return batches(lengths, MAX_ROWS, PREFILL_POSITIONS)


def decoding_batches(lengths: list[int]) -> list[list[int]]:
    """The windows (by index) that decoding steps together, for windows of ``lengths`` tokens (their
    caches may hold four times the positions of an all-at-once evaluation)."""
    return batches(lengths, MAX_ROWS, 4 * PREFILL_POSITIONS)


def check_vectors(lm, vectors, count: int) -> None:
    """One memory vector [hidden] per window, or None."""
    if vectors is not None and (vectors.ndim != 2 or vectors.shape[0] != count or vectors.shape[1] != lm.hidden_size):
        raise ValueError("one memory vector [hidden] per window is required")
