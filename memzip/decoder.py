"""Decoding windows on the exact engine, one token per step: what the decompressor does.

Every window is one row (memzip/rows.py), all rows of a batch stepped together with a KV cache; at each
step the engine's integer token distribution at the last position (``Engine.distributions``) decodes the
token whose interval holds the stream's value (memzip/format/tokencoder.py), and that token is fed back.
The streams are those the compressor wrote (memzip/encoder.py): the engine gives the same logits
whether positions are evaluated all at once or one at a time, in any batch, on any machine.
"""

from __future__ import annotations

import torch

from . import rows
from .format import tokencoder


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
    rows.check_vectors(lm, vectors, len(lengths))
    engine, offset = lm.engine, rows.positions_before(vectors)
    out: list = [None] * len(lengths)
    done_before = 0
    for batch in rows.decoding_batches(lengths):
        steps = max(lengths[i] for i in batch)
        cache = engine.new_cache(len(batch), offset + steps - 1)
        x = rows.row_starts(lm, vectors, batch)
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
                totals = [dist.total(k) for k in range(len(live))]
                found = dist.find_many([decoders[r].target(total) for r, total in zip(live, totals)])
                for r, total, (token, lo, hi) in zip(live, totals, found):
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
