"""What a rank margin costs: for each file, how many tokens the default compressor would store by id
(instead of by rank) at several margins, and the size of the rank stream.

    python -m bench.rank_margin FILE [FILE ...]

One replay per file that feeds the true tokens (memzip's default window and batches), recording each
token's rank and how close the nearest other logit is; the streams are then coded as memzip would.
"""

from __future__ import annotations

import argparse

import torch

from memzip import codec
from memzip.decoder import nearest_gap, rank_of
from memzip.model import load_model
from memzip.rankcoder import encode_ranks, explicit
from memzip.windows import segment

MARGINS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


@torch.no_grad()
def ranks_and_gaps(lm, windows: list[list[int]]) -> list[tuple[int, float, int]]:
    """(rank, nearest other logit's distance, token) for every token, windows replayed in one batch."""
    n, steps = len(windows), max(map(len, windows))
    given = torch.tensor([w + [-1] * (steps - len(w)) for w in windows])
    ranks, gaps = torch.zeros((n, steps), dtype=torch.long), torch.zeros((n, steps))
    embeds, past = lm.embed(torch.full((n, 1), lm.prefix_id)), None
    for i in range(steps):
        logits, past = lm.next_logits(embeds, past)
        fed = torch.where(given[:, i] >= 0, given[:, i], logits.argmax(-1))
        ranks[:, i], gaps[:, i] = rank_of(logits, fed), nearest_gap(logits, fed)
        embeds = lm.embed(fed.unsqueeze(1))
    return [(int(ranks[k, i]), float(gaps[k, i]), w[i]) for k, w in enumerate(windows) for i in range(len(w))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.rank_margin", description=__doc__)
    p.add_argument("files", nargs="+")
    args = p.parse_args(argv)
    lm = load_model(progress=lambda _t: None)
    for path in args.files:
        data = open(path, "rb").read()
        window = codec.resolved_settings(data, lm, codec.CompressSettings()).window
        windows = [list(s.tokens) for s in segment(data, lm.tokenizer, window) if s.is_window]
        entries = ranks_and_gaps(lm, windows)
        base = len(encode_ranks([r for r, _, _ in entries]))
        print(f"{path} ({len(data)} B, {len(entries)} tokens, window {window}): ranks only {base} B")
        for m in MARGINS:
            stream = [explicit(t) if g < m else r for r, g, t in entries]
            size, by_id = len(encode_ranks(stream)), sum(g < m for _, g, _ in entries)
            print(f"  margin {m:g}: {by_id} tokens by id ({by_id / len(entries):.1%}), {size} B (+{(size - base) / base:.1%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
