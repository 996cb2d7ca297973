"""Greedy replay of memory vectors: the one decode path used by the decompressor *and* by the
compressor's verification, so that a window counts as stored only if this exact code regenerates it.

Input of each row: ``[embed(prefix_id), vector]``; then greedy decoding with a KV cache, one token per
step for every row in lockstep (rows never need padding). Each row is decoded for its own length and no
EOS is involved: the container stores every window's token count.
"""

from __future__ import annotations

import torch

STORED_DTYPE = torch.bfloat16


def as_stored(vectors: torch.Tensor) -> torch.Tensor:
    """Round vectors to what the container stores (bf16)."""
    return vectors.detach().to(STORED_DTYPE)


@torch.no_grad()
def greedy_decode(
    lm, vectors: torch.Tensor, lengths: list[int], batch_size: int, prefix_id: int, on_batch=None
) -> list[list[int]]:
    """Token ids regenerated from stored (bf16) ``vectors`` [n, d], ``lengths[i]`` tokens each.

    Rows are decoded in consecutive batches of ``batch_size``; ``on_batch(rows_done)`` follows each.
    """
    if vectors.dtype != STORED_DTYPE:
        raise TypeError(f"greedy_decode takes vectors as stored ({STORED_DTYPE}), got {vectors.dtype}")
    if len(lengths) != vectors.shape[0]:
        raise ValueError("one length per vector is required")
    out: list[list[int]] = []
    for start in range(0, len(lengths), batch_size):
        batch = slice(start, start + batch_size)
        out.extend(_decode_batch(lm, vectors[batch], lengths[batch], prefix_id))
        if on_batch is not None:
            on_batch(len(out))
    return out


def _decode_batch(lm, vectors: torch.Tensor, lengths: list[int], prefix_id: int) -> list[list[int]]:
    n = len(lengths)
    if n == 0:
        return []
    steps = max(lengths)
    device = lm.device
    dtype = lm.model.get_input_embeddings().weight.dtype
    prefix = lm.embed(torch.full((n, 1), prefix_id, dtype=torch.long, device=device))
    embeds = torch.cat([prefix, vectors.to(device=device, dtype=dtype).unsqueeze(1)], dim=1)
    generated = torch.empty((n, steps), dtype=torch.long, device=device)
    past = None
    for i in range(steps):
        result = lm.model(inputs_embeds=embeds, past_key_values=past, use_cache=True, logits_to_keep=1)
        past = result.past_key_values
        token = result.logits[:, -1, :].argmax(dim=-1)
        generated[:, i] = token
        if i + 1 < steps:
            embeds = lm.embed(token.unsqueeze(1))
    rows = generated.tolist()
    return [row[:length] for row, length in zip(rows, lengths)]
