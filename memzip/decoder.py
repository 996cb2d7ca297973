"""Replay: the one decode path used by the decompressor *and* by the compressor, so that a window
counts as stored only if this exact code regenerates it.

Input of each row: ``[embed(prefix_id)]``, followed by the window's memory vector when the file has
vectors (rebuilt by ``memzip.codes.VectorCode.rebuild``). Then decoding with a KV cache, one token per
step for every row in lockstep (rows never need padding; a row past its own length keeps taking its
greedy token, which nothing reads; a placeholder row, length 0, is such a row from the start). At
each step a row takes the token of its stored *rank* in that step's logits (rank 0 = the greedy
argmax; order: decreasing logit, lower token id first on ties), or the token whose id is stored
explicitly (a negative entry, see memzip/rankcoder.py).
Memory-vector windows are stored with every rank 0, i.e. plain greedy decoding. No EOS is involved:
the container stores every window's token count.

``rank_tokens`` runs the same steps, computing at each one the rank of the window's own token (what
the compressor stores for a predicted window) and then decoding from that rank as above, so that one
pass both ranks a window and proves that the decoder regenerates it.

Replays run with the CPU thread count the file records (``replay_threads``): on CPU the kernels split
their work by thread count, and the logits move with it (measured with SmolLM2-135M: up to ~6e-4 between
1, 2 and 3 threads; a default file compressed with 2 threads failed its checksum in 3 of 5 bench texts
when decoded with 1 thread). Ranks have no margin for that, so the count is part of the arithmetic.

``replay`` also reports, at every position, the *margin*: the top logit minus the runner-up. A greedy
token can only change under small numeric differences (another batch size, thread count or machine)
if they exceed its margin, so the compressor accepts a memory vector only when the smallest margin
along its replay is at least the safety margin it was asked for.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def replay_threads(threads: int):
    """Run the enclosed replays with ``threads`` CPU threads (torch's intra-op pool), then restore the
    previous count. More threads than cores is allowed: slower, and the same arithmetic."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def greedy_decode(
    lm, vectors: torch.Tensor | None, lengths: list[int], batch_size: int, prefix_id: int, ranks=None, on_step=None
) -> list[list[int]]:
    """Token ids regenerated for windows of ``lengths[i]`` tokens from their ``vectors`` [n, d] (None:
    no memory vectors) and ``ranks`` (one list per window; None: all 0, i.e. greedy). A length of 0 is
    a *placeholder row*: decoded greedily alongside the others, so that each batch has the rows it was
    proven with (a row's logits depend on how many rows its batch has, not on what the others hold),
    and returned as [].

    Rows are decoded in consecutive batches of ``batch_size``; ``on_step(tokens_done)`` follows each step.
    """
    return _run(lm, vectors, lengths, batch_size, prefix_id, ranks, None, on_step)[0]


def replay(lm, vectors, lengths: list[int], batch_size: int, prefix_id: int, ranks=None, on_step=None):
    """``greedy_decode`` that also returns, per row, the top-1 minus top-2 logit at every position."""
    return _run(lm, vectors, lengths, batch_size, prefix_id, ranks, None, on_step, margins=True)


def rank_tokens(lm, vectors, windows, batch_size: int, prefix_id: int, on_step=None, rank_margin: float = 0.0):
    """(entries, decoded) for each window: the entries to store (ranks of the window's own tokens, or
    explicit ids) and the tokens that ``greedy_decode`` regenerates from them, given the same batches.

    Each step computes a row's entry from its true token and then takes the next token exactly as the
    decompressor does, from the entry, and feeds *that*: this pass is the decompressor's replay of the
    entries it produces, so ``decoded == window`` proves the window, without a second replay. (A row
    whose decoded token differs from its own keeps following the decoder; it is not stored.)

    A token whose logit is within ``rank_margin`` of any other token's is given explicitly instead
    (``memzip.rankcoder.explicit(id)``): its rank could change under numeric differences smaller than
    that, the id cannot. With every other token at least ``rank_margin`` away, a replay whose logits
    differ from these by less than half of it anywhere still decodes the same tokens."""
    windows = [list(w) for w in windows]
    return _run(lm, vectors, [len(w) for w in windows], batch_size, prefix_id, None, windows, on_step, rank_margin)


@torch.no_grad()
def _run(lm, vectors, lengths, batch_size, prefix_id, ranks, teacher, on_step, rank_margin=0.0, margins=False):
    if ranks is not None and [len(r) for r in ranks] != list(lengths):
        raise ValueError("one rank per token of every window is required")
    if vectors is not None:
        if not vectors.is_floating_point() or vectors.ndim != 2:
            raise TypeError("vectors must be a float matrix [n, hidden] or None")
        if vectors.shape[0] != len(lengths):
            raise ValueError("one length per vector is required")
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    if any(n < 0 for n in lengths) or (vectors is not None and 0 in lengths):
        raise ValueError("windows hold at least one token (0: a placeholder row, only without vectors)")
    out: list[list[int]] = []
    second: list[list] = []  # margins (decoding; [] per row unless asked for) or decoded tokens (ranking)
    for start in range(0, len(lengths), batch_size):
        rows = slice(start, start + batch_size)
        done_before = sum(lengths[:start])
        step_hook = None if on_step is None else (lambda done: on_step(done_before + done))
        if max(lengths[rows]) == 0:  # placeholder rows only: nothing to regenerate, nothing to prove
            out.extend([] for _ in lengths[rows])
            second.extend([] for _ in lengths[rows])
            continue
        if teacher is not None:
            given = _padded(teacher[rows], lengths[rows], -1)
        else:
            given = _padded(ranks[rows] if ranks is not None else None, lengths[rows], 0)
        produced, gaps, decoded = _decode_batch(
            lm, vectors[rows] if vectors is not None else None, lengths[rows], prefix_id,
            given, teacher is not None, step_hook, rank_margin, margins,
        )
        out.extend(produced)
        second.extend(decoded if teacher is not None else gaps)
    return out, second


def _padded(rows, lengths, fill):
    steps = max(lengths)
    if rows is None:
        return torch.zeros((len(lengths), steps), dtype=torch.long)
    return torch.tensor([list(r) + [fill] * (steps - len(r)) for r in rows], dtype=torch.long)


def _decode_batch(lm, vectors, lengths, prefix_id, given, teacher: bool, on_step, rank_margin=0.0, margins=False):
    """One batch in lockstep. ``given`` [n, steps]: stored entries to follow (decode: ranks, or explicit
    ids as negative numbers) or the true tokens (teacher, -1 past a row's end), from which the entries
    are computed step by step. Either way the token fed to the next step is the one the *entry* selects.
    Returns per row the entries to store (teacher, else the decoded tokens), the margins (only with
    ``margins``, else []: a top-2 per step that only the memory-vector check reads), and the decoded
    tokens."""
    n, steps = given.shape
    device = lm.device
    dtype = lm.model.get_input_embeddings().weight.dtype
    embeds = lm.embed(torch.full((n, 1), prefix_id, dtype=torch.long, device=device))
    if vectors is not None:
        embeds = torch.cat([embeds, vectors.to(device=device, dtype=dtype).unsqueeze(1)], dim=1)
    given = given.to(device)
    entries = torch.empty((n, steps), dtype=torch.long, device=device)
    decoded = torch.empty((n, steps), dtype=torch.long, device=device)
    gap = torch.empty((n, steps), dtype=torch.float32, device=device) if margins else None
    past = None
    for i in range(steps):
        logits, past = lm.next_logits(embeds, past)
        greedy = logits.argmax(dim=-1)  # first index on ties, as the format specifies
        if teacher:
            true = torch.where(given[:, i] >= 0, given[:, i], greedy)
            entry = rank_of(logits, true)
            if rank_margin > 0:
                entry = torch.where(nearest_gap(logits, true) < rank_margin, -1 - true, entry)
        else:
            entry = given[:, i]
        fed = torch.where(entry < 0, -1 - entry, select_rank(logits, entry.clamp_min(0), greedy))
        entries[:, i], decoded[:, i] = entry, fed
        if margins and logits.shape[-1] > 1:
            top2 = logits.topk(2, dim=-1).values.float()
            gap[:, i] = top2[:, 0] - top2[:, 1]
        elif margins:
            gap[:, i] = float("inf")
        if on_step is not None:
            on_step(sum(min(i + 1, k) for k in lengths))
        if i + 1 < steps:
            embeds = lm.embed(fed.unsqueeze(1))
    tokens = decoded.tolist()
    stored = entries.tolist() if teacher else tokens
    cut = lambda table: [r[:k] for r, k in zip(table, lengths)]  # noqa: E731
    return cut(stored), cut(gap.tolist()) if margins else [[] for _ in lengths], cut(tokens)


def rank_of(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Per row, the rank of ``tokens`` in ``logits`` [n, vocab]: how many logits are greater, plus how
    many equal ones have a lower token id."""
    chosen = logits.gather(1, tokens.unsqueeze(1))
    ids = torch.arange(logits.shape[1], device=logits.device).unsqueeze(0)
    return (logits > chosen).sum(1) + ((logits == chosen) & (ids < tokens.unsqueeze(1))).sum(1)


def nearest_gap(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Per row, how close the nearest other logit is to the logit of ``tokens``."""
    chosen = logits.gather(1, tokens.unsqueeze(1))
    gaps = (logits - chosen).abs()
    gaps.scatter_(1, tokens.unsqueeze(1), float("inf"))
    return gaps.amin(dim=1)


def select_rank(logits: torch.Tensor, ranks: torch.Tensor, greedy: torch.Tensor) -> torch.Tensor:
    """Per row, the token at ``ranks`` in ``logits`` ordered by decreasing value, lower id first on ties
    (``greedy`` is the rank-0 token, already known)."""
    out = greedy.clone()
    for row in (ranks > 0).nonzero().flatten().tolist():
        values, r = logits[row], int(ranks[row])
        # the value at position r of the order (a selection, not a sort: 50x cheaper at this vocabulary),
        # then among the tokens holding exactly that value, the one with the right number of lower ids
        value = torch.kthvalue(-values, r + 1).values.neg()
        above = int((values > value).sum())
        out[row] = (values == value).nonzero().flatten()[r - above]
    return out


def reproduces(lm, vectors: torch.Tensor, windows, margin: float, batch_size: int) -> list[bool]:
    """Per row: does greedy replay regenerate the window exactly, every token ahead by at least ``margin``?"""
    tokens, gaps = replay(lm, vectors, [len(w) for w in windows], batch_size, lm.prefix_id)
    return [t == list(w) and min(g, default=float("inf")) >= margin for t, g, w in zip(tokens, gaps, windows)]
