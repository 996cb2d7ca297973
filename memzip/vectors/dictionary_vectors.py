"""Memory vectors for a dictionary: K input vectors placed after a dictionary's text and tuned, with the
model frozen, to make sample files cheapest to code after them (the seed paper's memory tokens, shared
by a whole corpus so that their bytes are paid once, not once per file).

A row is ``[prefix, dictionary text, v_1 .. v_K, file tokens]``; ``v_K`` predicts a file's first token.
Tuning minimizes the float model's code length (bits) of sample files cut to ``cut`` tokens, with Adam;
the text's KV cache is computed once and shared by every step (the vectors sit after the text, so the
text needs no gradient). The vectors are stored as float32 (memzip/format/dictionary.py); the exact
engine evaluates them like any dictionary position, so what is finally kept is judged by exact bits
(memzip.dictionary.train).
"""

from __future__ import annotations

import copy
import math
import random

import torch
import torch.nn.functional as F

from ..format.dictionary import DictionaryFile


def tune(lm, file: DictionaryFile, samples: list[list[int]], count: int = 8, steps: int = 60, lr: float = 0.01,
         cut: int = 192, batch: int = 4, seed: int = 0, progress=None) -> bytes:
    """float32 little-endian bytes of ``count`` vectors tuned after ``file``'s text on ``samples``
    (token lists); initialized from the embeddings of a sample's first tokens."""
    model, embed = lm.float_model, lm.float_embed
    samples = [s[:cut] for s in samples if len(s) >= 2]
    if not samples:
        raise ValueError("no samples to tune vectors on")
    with torch.no_grad():
        head = embed(torch.tensor([[lm.prefix_id] + list(file.tokens)], device=lm.device))
        past = model(inputs_embeds=head, use_cache=True).past_key_values
        first = max(samples, key=len)
        init = embed(torch.tensor(first[:count], device=lm.device)).float()
        if init.shape[0] < count:
            init = torch.cat([init, init[-1:].expand(count - init.shape[0], -1)])
    vectors = init.clone().requires_grad_(True)
    opt = torch.optim.Adam([vectors], lr=lr)
    rng = random.Random(seed)
    for step in range(steps):
        opt.zero_grad()
        total_bits = total_tokens = 0
        for tokens in rng.sample(samples, min(batch, len(samples))):
            ids = torch.tensor(tokens, device=lm.device)
            x = torch.cat([vectors, embed(ids[:-1])])[None]
            logits = model(inputs_embeds=x, past_key_values=copy.deepcopy(past)).logits[0, count - 1:].float()
            bits = F.cross_entropy(logits, ids, reduction="sum") / math.log(2)
            bits.backward()
            total_bits += bits.item()
            total_tokens += len(tokens)
        opt.step()
        if progress is not None:
            progress(f"vectors: step {step + 1}/{steps}, {total_bits / total_tokens:.3f} bits/token")
    return vectors.detach().to(torch.float32).cpu().numpy().astype("<f4").tobytes()
