"""What a match model mixed with the model's distribution would buy (measured; not part of the format).

    python -m bench.mixing [--level N] FILE...

For each file, the windows memzip makes at that level are evaluated once on the exact engine; then the
token streams' information (bits, -log2 of each coded symbol's probability) is computed three ways:

* **model**: every token coded with the model's distribution (format 9);
* **match, in window**: a match model (the token that followed the latest earlier occurrence of the
  window's last ``ORDER`` tokens, followed while its guesses hold) mixed in exactly: where it has a
  guess, a binary flag "token == guess" is coded with a probability learned per cell (match-length
  class x class of the model's own probability of the guess), starting from the model's probability;
  a miss then codes the token with the model's distribution less the guess;
* **match, across windows**: the same, with the match looked up in every window's tokens decoded so
  far, step by step (what rows decoded in parallel can share), not only the window's own.

Everything is a function of the tokens and the engine's exact integer frequencies, so a decoder could
follow it. Results (docs/RESULTS.md): with rows of 2,000-4,000 tokens the model already predicts the
repeats a match model finds, and the flag costs more than it saves.
"""

from __future__ import annotations

import argparse
import math
import sys

import torch

ORDER = 3  # tokens of context that start a match
ONE = 1 << 16  # flag probabilities in 2**-16 units
LIMIT = 255  # a cell's counts are halved when they reach this
PRIOR = 2  # weight of the model's probability in a cell's estimate


def guesses(windows: list[list[int]], across: bool) -> list[list[tuple[int, int]]]:
    """Per window, per position: (guess, match length), guess -1 where there is none. Windows advance
    one token per step together; ``across`` lets a window's match start in any window's tokens so far."""
    out: list[list[tuple[int, int]]] = [[] for _ in windows]
    history: list[list[int]] = [[] for _ in windows]
    tables: list[dict] = [{} for _ in windows] if not across else [{}] * len(windows)
    pointer: list = [None] * len(windows)
    length = [0] * len(windows)
    for step in range(max(map(len, windows), default=0)):
        for r, window in enumerate(windows):
            if step >= len(window):
                continue
            guess = -1
            if pointer[r] is not None:
                row, pos = pointer[r]
                if pos < len(history[row]):
                    guess = history[row][pos]
            out[r].append((guess, length[r]))
            token, h = window[step], history[r]
            if guess == token:
                pointer[r], length[r] = (pointer[r][0], pointer[r][1] + 1), length[r] + 1
            else:
                pointer[r], length[r] = None, 0
            h.append(token)
            if len(h) >= ORDER:
                key = tuple(h[-ORDER:])
                if pointer[r] is None and key in tables[r]:
                    pointer[r], length[r] = tables[r][key], ORDER
                tables[r][key] = (r, len(h))
    return out


def mixed_bits(symbols: list[tuple[int, int, int, int, int, int]]) -> float:
    """Bits of one window's symbols (token, f_token, total, guess, f_guess, match length) with the
    match model's flag mixed in, the cells learned along the window."""
    hits, counts = [0] * 144, [0] * 144
    bits = 0.0
    for token, f, total, guess, f_guess, length in symbols:
        if guess < 0:
            bits -= math.log2(f / total)
            continue
        model = (f_guess << 16) // total
        cell = min(length.bit_length(), 7) * 18 + (ONE - model).bit_length()
        p = min(max((hits[cell] * ONE + PRIOR * model) // (counts[cell] + PRIOR), 1), ONE - 1)
        if token == guess:
            bits -= math.log2(p / ONE)
        else:
            bits -= math.log2((ONE - p) / ONE) + math.log2(f / (total - f_guess))
        hits[cell] += token == guess
        counts[cell] += 1
        if counts[cell] >= LIMIT:
            hits[cell] >>= 1
            counts[cell] >>= 1
    return bits


def measure(lm, windows: list[list[int]]) -> dict[str, float]:
    """Bits of the windows: model alone, match model in window, match model across windows."""
    from memzip.encoder import evaluate_windows

    ways = {"in window": guesses(windows, False), "across windows": guesses(windows, True)}
    flat = {k: torch.tensor([g for w in v for g, _ in w]).clamp(min=0) for k, v in ways.items()}
    found: list = []

    def per_batch(batch, hidden, positions, targets):
        first = sum(len(windows[i]) for i in range(batch[0]))
        for start in range(0, positions.shape[0], lm.engine.HEAD_ROWS):
            part = slice(start, start + lm.engine.HEAD_ROWS)
            where = slice(first + start, first + start + positions[part].shape[0])
            freq = lm.engine.frequencies(hidden, positions[part])
            row = [targets[part].tolist(), freq.gather(1, targets[part].unsqueeze(1)).squeeze(1).tolist(), freq.sum(1).tolist()]
            row += [freq.gather(1, flat[k][where].unsqueeze(1)).squeeze(1).tolist() for k in ways]
            found.extend(zip(*row))

    evaluate_windows(lm, windows, None, None, per_batch)
    out = {"model": sum(-math.log2(f / t) for _, f, t, *_ in found)}
    for k, (name, way) in enumerate(ways.items()):
        pos, total = 0, 0.0
        for w in way:
            total += mixed_bits([(found[pos + j][0], found[pos + j][1], found[pos + j][2], g, found[pos + j][3 + k], n)
                                 for j, (g, n) in enumerate(w)])
            pos += len(w)
        out["match, " + name] = total
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.mixing", description=__doc__.split("\n")[0])
    p.add_argument("files", nargs="+")
    p.add_argument("--level", type=int, default=None, help="memzip level whose windows are used (default: the default level)")
    p.add_argument("--model", help="model (default: packaged SmolLM2-135M-Instruct)")
    args = p.parse_args(argv)

    from memzip.settings import DEFAULT_LEVEL, row_plan
    from memzip.model import load_model
    from memzip.windows import segment

    lm = load_model(args.model)
    level = args.level or DEFAULT_LEVEL
    print(f"level {level}: bits per byte of the token streams' information (ratio = bits / 8 / bytes)")
    print(f"{'file':28s} {'bytes':>7s} {'rows':>4s} {'model':>8s} {'+match in window':>18s} {'+match across':>16s}")
    for name in args.files:
        data = open(name, "rb").read()
        tokens = len(lm.tokenizer(data.decode("utf-8", "replace"), add_special_tokens=False)["input_ids"])
        window, context = row_plan(tokens, level)  # the level's rows (the model alone: no shared context)
        windows = [list(s.tokens) for s in segment(data, lm.tokenizer, lm.token_bytes, window - context) if s.is_window]
        bits = measure(lm, windows)
        base = bits["model"]
        cells = [f"{base / 8 / len(data):8.4f}"] + [f"{b / 8 / len(data):.4f} ({(b - base) / base * 100:+.2f}%)"
                                                    for k, b in bits.items() if k != "model"]
        print(f"{name.split('/')[-1]:28s} {len(data):7d} {len(windows):4d} {cells[0]} {cells[1]:>18s} {cells[2]:>16s}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
