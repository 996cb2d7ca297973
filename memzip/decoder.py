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


def decode_windows(lm, lengths: list[int], streams=None, vectors=None, on_step=None, context: int = 0,
                   start=None) -> list[list[int]]:
    """Regenerate windows of ``lengths[i]`` tokens from their token ``streams`` (one per window; None:
    greedy decoding, the top token at every step) and memory ``vectors`` (None: none), one token per
    step. With a shared ``context`` (tokens), every window but the first is decoded after the first
    window's first ``context`` tokens: the first window decodes those alone, then its cache becomes every
    row's start (Engine.fork_cache). With a dictionary (``start``), every row begins with it (its cache
    evaluated once, forked). ``on_step(tokens_done)`` follows each step. A stream that is not exactly
    what the encoder writes for the tokens it decodes to raises ValueError."""
    lengths = list(lengths)
    if streams is not None and len(streams) != len(lengths):
        raise ValueError("one token stream per window is required")
    if any(n < 1 for n in lengths):
        raise ValueError("windows hold at least one token")
    if context and (vectors is not None or not lengths or context > lengths[0]):
        raise ValueError("a shared context is the start of the first window, without memory vectors")
    if start is not None and vectors is not None:
        raise ValueError("a dictionary and memory vectors do not go together")
    rows.check_vectors(lm, vectors, len(lengths))
    engine, offset = lm.engine, rows.positions_before(vectors)
    coders = [tokencoder.Decoder(s) for s in streams] if streams is not None else None
    intervals: list[list] = [[] for _ in lengths]
    decoded: list[list[int]] = [[] for _ in lengths]
    done = 0

    def step(batch: list[int], live: list[int], hidden, last: torch.Tensor) -> list[int]:
        """Decode one token for each row ``r`` in ``live`` (positions ``last[r]``); returns batch-wide
        next tokens (0 where a row is done)."""
        nonlocal done
        nxt = [0] * len(batch)
        if coders is None:
            top = engine.greedy(hidden, last[live]).tolist()
            for r, token in zip(live, top):
                decoded[batch[r]].append(token)
                nxt[r] = token
        else:
            dist = engine.distributions(hidden, last[live])
            totals = [dist.total(k) for k in range(len(live))]
            found = dist.find_many([coders[batch[r]].target(total) for r, total in zip(live, totals)])
            for r, total, (token, lo, hi) in zip(live, totals, found):
                coders[batch[r]].narrow(lo, hi, total)
                intervals[batch[r]].append((lo, hi, total))
                decoded[batch[r]].append(token)
                nxt[r] = token
        done += len(live)
        if on_step is not None:
            on_step(done)
        return nxt

    # what every row begins with: the dictionary's cache (all its positions but the last) and that last
    # position's embedding, or no cache and the prefix token
    if start is not None:
        base, base_last = start.prepared()
    else:
        base, base_last = None, rows.row_starts(lm, None, [0])
    base_len = base.length if base is not None else 0

    def fork(count: int, capacity: int):
        return engine.fork_cache(base, 0, count, capacity) if base is not None else engine.new_cache(count, capacity)

    for batch in rows.decoding_batches([n + context + base_len for n in lengths]):
        if context:
            # one row holding [start, context[:-1]]; its last context token is every row's next input
            shared = fork(1, base_len + context)
            if batch[0] == 0:  # the first window decodes the context itself
                x = base_last
                for _ in range(context):
                    token = step([0], [0], engine.forward(x, shared), torch.tensor([0]))[0]
                    x = engine.embed(torch.tensor([[token]]))
                shared_last = x
            else:
                ctx = decoded[0][:context]
                engine.forward(torch.cat([base_last, engine.embed(torch.tensor([ctx[:-1]]))], 1), shared)
                shared_last = engine.embed(torch.tensor([[ctx[-1]]]))
        remaining = [lengths[i] - (len(decoded[i]) if i == 0 else 0) for i in batch]
        steps = max(remaining)
        if context:
            cache = engine.fork_cache(shared, 0, len(batch), base_len + context + steps)
            x = shared_last.expand(len(batch), 1, -1).contiguous()
        elif vectors is not None:
            cache = engine.new_cache(len(batch), offset + steps - 1)
            x = rows.row_starts(lm, vectors, batch)
        else:
            cache = fork(len(batch), base_len + steps)
            x = base_last.expand(len(batch), 1, -1).contiguous()
        for k in range(steps):
            hidden = engine.forward(x, cache)
            last = torch.arange(len(batch)) * x.shape[1] + x.shape[1] - 1
            live = [r for r in range(len(batch)) if k < remaining[r]]
            nxt = step(batch, live, hidden, last)
            if k + 1 < steps:
                x = engine.embed(torch.tensor(nxt).reshape(-1, 1))
    for i in range(len(lengths)):
        if coders is not None and tokencoder.encode(intervals[i]) != streams[i]:
            raise ValueError(f"token stream of window {i} is not what the encoder writes for what it decodes to (corrupt)")
    return decoded
