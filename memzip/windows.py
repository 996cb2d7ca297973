"""Splitting input bytes into segments: token windows (stored by the model) and raw spans (fallback).

The segments partition the input exactly: concatenating every segment's ``data`` gives the input
back. A span becomes a window only if its tokens' bytes (the model's detokenizer table, which the
decoder uses) give back exactly its bytes, so any byte sequence round-trips: invalid UTF-8 runs and
spans the tokenizer cannot reproduce are raw.

The input is tokenized once (``tokenize``): its runs of valid UTF-8, each with its tokens and their
offsets, from which segments of any window length are cut without tokenizing again
(``Tokenized.segments``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .engine.tokens import detokenize


@dataclass(frozen=True)
class Segment:
    data: bytes  # the original bytes of this span
    tokens: tuple[int, ...] | None = None  # set for windows, None for raw spans

    @property
    def is_window(self) -> bool:
        return self.tokens is not None


_ESCAPED = re.compile("[\udc80-\udcff]+")  # where surrogateescape put bytes that are not UTF-8


def split_utf8(data: bytes) -> list[tuple[bool, bytes]]:
    """Maximal runs of valid UTF-8 (True, bytes) and of bytes that are not (False, bytes), in order."""
    text = data.decode("utf-8", "surrogateescape")
    runs: list[tuple[bool, bytes]] = []
    pos = 0
    for bad in _ESCAPED.finditer(text):
        if bad.start() > pos:
            runs.append((True, text[pos : bad.start()].encode("utf-8")))
        runs.append((False, bad.group().encode("utf-8", "surrogateescape")))
        pos = bad.end()
    if pos < len(text):
        runs.append((True, text[pos:].encode("utf-8")))
    return runs


@dataclass(frozen=True)
class Run:
    """A maximal run of the input: valid UTF-8 text with its tokens and their character offsets, or
    bytes that are not UTF-8 (``text`` None, no tokens)."""

    data: bytes
    text: str | None = None
    ids: Sequence[int] = ()  # as the tokenizer returns them (not copied: an input may have millions)
    offsets: Sequence[tuple[int, int]] = ()


@dataclass(frozen=True)
class Tokenized:
    """An input split into runs, every text run tokenized (once)."""

    data: bytes
    runs: tuple[Run, ...]

    @property
    def is_utf8(self) -> bool:
        """Is the whole input valid UTF-8 (one text run, or empty)?"""
        return all(r.text is not None for r in self.runs)

    @property
    def tokens(self) -> int:
        """How many tokens the text runs have."""
        return sum(len(r.ids) for r in self.runs)

    def segments(self, token_bytes: list[bytes], window: int, later: int | None = None) -> list[Segment]:
        """Partition the input into windows (``token_bytes`` must give every window's bytes back) and raw
        spans (adjacent raws merged): the first window of ``window`` tokens, every later one of ``later``
        (default: ``window``), each at most that."""
        later = window if later is None else later
        if window < 1 or not 1 <= later <= window:
            raise ValueError("windows hold at least one token, later ones no more than the first")
        out: list[Segment] = []
        first = window
        for run in self.runs:
            pieces = _text_windows(run, token_bytes, first, later) if run.text is not None else [Segment(run.data)]
            if run.ids:
                first = later  # the first window is cut from the first run with tokens
            for piece in pieces:
                if not piece.is_window and out and not out[-1].is_window:
                    out[-1] = Segment(out[-1].data + piece.data)
                else:
                    out.append(piece)
        if b"".join(s.data for s in out) != self.data:
            raise RuntimeError("internal error: segments do not partition the input")
        return out


def tokenize(data: bytes, tokenizer) -> Tokenized:
    """``data``'s runs of valid UTF-8, each tokenized by ``tokenizer`` with offsets, and of other bytes."""
    runs = []
    for is_text, run in split_utf8(data):
        if not is_text:
            runs.append(Run(run))
            continue
        text = run.decode("utf-8")
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        runs.append(Run(run, text, enc["input_ids"], enc["offset_mapping"]))
    return Tokenized(data, tuple(runs))


def _text_windows(run: Run, token_bytes: list[bytes], first: int, later: int) -> list[Segment]:
    text, ids, offsets = run.text, run.ids, run.offsets
    raw = run.data
    if not ids:
        return [Segment(raw)]
    cuts = [0, *range(first, len(ids), later)]  # token index where each window starts
    starts = [offsets[i][0] for i in cuts[1:]]
    starts = [0] + starts + [len(text)]
    if any(b < a for a, b in zip(starts, starts[1:])):
        return [Segment(raw)]  # offsets the tokenizer reports are unusable: keep the run raw
    segments = []
    for k, (a, b) in enumerate(zip(starts, starts[1:])):
        span = text[a:b].encode("utf-8")
        tokens = tuple(ids[cuts[k] : cuts[k + 1] if k + 1 < len(cuts) else len(ids)])
        # a token stands for at least one byte (the reader bounds the work of decoding by it)
        if span and len(tokens) <= len(span) and detokenize(token_bytes, tokens) == span:
            segments.append(Segment(span, tokens))
        elif span:
            segments.append(Segment(span))
    return segments


def segment(data: bytes, tokenizer, token_bytes: list[bytes], window: int, later: int | None = None) -> list[Segment]:
    """Partition ``data`` into windows (``tokenizer`` splits the text, ``token_bytes`` must give every
    window's bytes back; the first of ``window`` tokens, later ones of ``later``) and raw spans."""
    return tokenize(data, tokenizer).segments(token_bytes, window, later)
