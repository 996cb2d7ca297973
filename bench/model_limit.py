"""The arithmetic-coding limit of the model itself: the corpus's total cross-entropy under the model.

An ideal arithmetic coder driven by the same model would need this many bits. The model is evaluated
by memzip's exact engine (what every replay runs; ``engine=True``) or by the transformers float model it
was converted from (``engine=False``): the two figures side by side are the engine's quality cost.
Two contexts:

* ``window``: each memzip window scored on its own after the same prefix token memzip uses, i.e. the
  context memzip's windows see;
* ``long``: the whole token stream with up to ``context`` tokens of history (sliding, stride context/2).

Spans memzip keeps raw (invalid UTF-8, untokenizable) are counted at 8 bits per byte.
"""

from __future__ import annotations

import math

import torch

from memzip.windows import segment


@torch.no_grad()
def _bits(lm, rows: list[list[int]], scored_from: list[int], engine: bool = True) -> float:
    """Sum over rows of -log2 p(token) for tokens[scored_from:], each row preceded by the prefix token."""
    if engine:
        return _engine_bits(lm, rows, scored_from)
    device = lm.device
    total = 0.0
    for start in range(0, len(rows), 16):
        batch, first = rows[start:start + 16], scored_from[start:start + 16]
        longest = max(len(r) for r in batch)
        ids = torch.zeros((len(batch), longest + 1), dtype=torch.long, device=device)
        mask = torch.zeros((len(batch), longest), dtype=torch.bool, device=device)
        ids[:, 0] = lm.prefix_id
        for i, (r, f) in enumerate(zip(batch, first)):
            ids[i, 1:len(r) + 1] = torch.tensor(r)
            mask[i, f:len(r)] = True
        logits = lm.float_model(input_ids=ids[:, :-1]).logits.float()
        logp = torch.log_softmax(logits, dim=-1).gather(2, ids[:, 1:].unsqueeze(2)).squeeze(2)
        total += -(logp * mask).sum().item() / math.log(2)
    return total


def _engine_bits(lm, rows: list[list[int]], scored_from: list[int]) -> float:
    engine, total = lm.engine, 0.0
    for r, first in zip(rows, scored_from):
        ids = torch.tensor([[lm.prefix_id] + r[:-1]])
        hidden = engine.forward(engine.embed(ids), engine.new_cache(1, ids.shape[1]))
        for start in range(first, len(r), engine.HEAD_ROWS):
            positions = torch.arange(start, min(start + engine.HEAD_ROWS, len(r)))
            logp = torch.log_softmax(engine.logits(hidden, positions), dim=-1)
            total += -logp.gather(1, torch.tensor(r)[positions].unsqueeze(1)).sum().item() / math.log(2)
    return total


def _tokens_and_raw(lm, data: bytes, window: int):
    segs = segment(data, lm.tokenizer, lm.token_bytes, window)
    return [list(s.tokens) for s in segs if s.is_window], sum(len(s.data) for s in segs if not s.is_window)


def window_context_bits(lm, data: bytes, window: int, engine: bool = True) -> float:
    windows, raw = _tokens_and_raw(lm, data, window)
    return (_bits(lm, windows, [0] * len(windows), engine) if windows else 0.0) + 8.0 * raw


def long_context_bits(lm, data: bytes, context: int = 512, engine: bool = True) -> float:
    windows, raw = _tokens_and_raw(lm, data, context)
    stream = [t for w in windows for t in w]
    stride = context // 2
    rows, first = [], []
    for begin in range(0, max(len(stream) - stride, 1), stride):
        rows.append(stream[begin:begin + context])
        first.append(0 if begin == 0 else context - stride)
    bits = _bits(lm, rows, first, engine) if stream else 0.0
    return bits + 8.0 * raw
