"""Greedy replay of memory vectors: the one decode path used by the decompressor *and* by the
compressor's verification, so that a window counts as stored only if this exact code regenerates it.
Vectors come from ``memzip.codes.VectorCode.rebuild`` (the stored codes turned into float32 vectors).

Input of each row: ``[embed(prefix_id), vector]``; then greedy decoding with a KV cache, one token per
step for every row in lockstep (rows never need padding). Each row is decoded for its own length and no
EOS is involved: the container stores every window's token count.

``replay`` also reports, at every generated position, the *margin*: the chosen (top) logit minus the
runner-up. A token can only change under small numeric differences (another batch size, thread count
or machine) if they exceed its margin, so the compressor accepts a window only when the smallest
margin along its replay is at least the safety margin it was asked for.
"""

from __future__ import annotations

import torch

def greedy_decode(
    lm, vectors: torch.Tensor, lengths: list[int], batch_size: int, prefix_id: int, on_batch=None
) -> list[list[int]]:
    """Token ids regenerated from rebuilt ``vectors`` [n, d], ``lengths[i]`` tokens each.

    Rows are decoded in consecutive batches of ``batch_size``; ``on_batch(rows_done)`` follows each.
    """
    return replay(lm, vectors, lengths, batch_size, prefix_id, on_batch)[0]


@torch.no_grad()
def replay(
    lm, vectors: torch.Tensor, lengths: list[int], batch_size: int, prefix_id: int, on_batch=None
) -> tuple[list[list[int]], list[list[float]]]:
    """``greedy_decode`` that also returns, per row, the top-1 minus top-2 logit at every position."""
    if not vectors.is_floating_point() or vectors.ndim != 2:
        raise TypeError("greedy_decode takes a float matrix of vectors [n, hidden]")
    if len(lengths) != vectors.shape[0]:
        raise ValueError("one length per vector is required")
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    out: list[list[int]] = []
    margins: list[list[float]] = []
    for start in range(0, len(lengths), batch_size):
        batch = slice(start, start + batch_size)
        tokens, gaps = _decode_batch(lm, vectors[batch], lengths[batch], prefix_id)
        out.extend(tokens)
        margins.extend(gaps)
        if on_batch is not None:
            on_batch(len(out))
    return out, margins


def _decode_batch(lm, vectors: torch.Tensor, lengths: list[int], prefix_id: int):
    n = len(lengths)
    if n == 0:
        return [], []
    steps = max(lengths)
    device = lm.device
    dtype = lm.model.get_input_embeddings().weight.dtype
    prefix = lm.embed(torch.full((n, 1), prefix_id, dtype=torch.long, device=device))
    embeds = torch.cat([prefix, vectors.to(device=device, dtype=dtype).unsqueeze(1)], dim=1)
    generated = torch.empty((n, steps), dtype=torch.long, device=device)
    gap = torch.empty((n, steps), dtype=torch.float32, device=device)
    past = None
    for i in range(steps):
        result = lm.model(inputs_embeds=embeds, past_key_values=past, use_cache=True, logits_to_keep=1)
        past = result.past_key_values
        logits = result.logits[:, -1, :]
        token = logits.argmax(dim=-1)  # first index on ties, as the format specifies
        generated[:, i] = token
        top2 = logits.topk(2, dim=-1).values.float() if logits.shape[-1] > 1 else None
        gap[:, i] = (top2[:, 0] - top2[:, 1]) if top2 is not None else float("inf")
        if i + 1 < steps:
            embeds = lm.embed(token.unsqueeze(1))
    rows, gaps = generated.tolist(), gap.tolist()
    return [r[:k] for r, k in zip(rows, lengths)], [g[:k] for g, k in zip(gaps, lengths)]


def reproduces(lm, vectors: torch.Tensor, windows, margin: float, batch_size: int) -> list[bool]:
    """Per row: does replay regenerate the window exactly, every token ahead by at least ``margin``?"""
    tokens, gaps = replay(lm, vectors, [len(w) for w in windows], batch_size, lm.prefix_id)
    return [t == list(w) and min(g, default=float("inf")) >= margin for t, g, w in zip(tokens, gaps, windows)]
