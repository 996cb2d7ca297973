"""Splitting input bytes into segments: token windows (stored by the model) and raw spans (fallback).

The segments partition the input exactly: concatenating every segment's ``data`` gives the input
back. A span becomes a window only if its tokens' bytes (the model's detokenizer table, which the
decoder uses) give back exactly its bytes, so any byte sequence round-trips: invalid UTF-8 runs and
spans the tokenizer cannot reproduce are raw.
"""

from __future__ import annotations

import re
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


def _text_windows(text: str, tokenizer, token_bytes: list[bytes], window: int) -> list[Segment]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    raw = text.encode("utf-8")
    if not ids:
        return [Segment(raw)]
    starts = [0] + [offsets[i][0] for i in range(window, len(ids), window)] + [len(text)]
    if any(b < a for a, b in zip(starts, starts[1:])):
        return [Segment(raw)]  # offsets the tokenizer reports are unusable: keep the run raw
    segments = []
    for k, (a, b) in enumerate(zip(starts, starts[1:])):
        span = text[a:b].encode("utf-8")
        tokens = tuple(ids[k * window : (k + 1) * window])
        # a token stands for at least one byte (the reader bounds the work of decoding by it)
        if span and len(tokens) <= len(span) and detokenize(token_bytes, tokens) == span:
            segments.append(Segment(span, tokens))
        elif span:
            segments.append(Segment(span))
    return segments


def segment(data: bytes, tokenizer, token_bytes: list[bytes], window: int) -> list[Segment]:
    """Partition ``data`` into windows of at most ``window`` tokens (``tokenizer`` splits the text,
    ``token_bytes`` must give every window's bytes back) and raw spans (adjacent raws merged)."""
    if window < 1:
        raise ValueError("window must be at least 1 token")
    out: list[Segment] = []
    for is_text, run in split_utf8(data):
        pieces = _text_windows(run.decode("utf-8"), tokenizer, token_bytes, window) if is_text else [Segment(run)]
        for piece in pieces:
            if not piece.is_window and out and not out[-1].is_window:
                out[-1] = Segment(out[-1].data + piece.data)
            else:
                out.append(piece)
    if b"".join(s.data for s in out) != data:
        raise RuntimeError("internal error: segments do not partition the input")
    return out
