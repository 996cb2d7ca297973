"""Dictionaries: text, chosen from sample files, that every row of a file starts after (``memzip train``,
``memzip -D``): what zstd's trained dictionaries are to zstd, for many small files of one kind.

A row made with a dictionary is ``[prefix token, dictionary tokens, the row's tokens]`` (or, with memory
vectors in the dictionary, those vectors before or after the text). The engine evaluates the dictionary
once per command (``Dictionary.prepared``: its KV cache, forked for every batch of rows; memzip.engine
``fork_cache``), so each file costs only its own tokens. Files record the dictionary's ID and are refused
without it.

Training picks the text the way zstd's COVER algorithm picks segments: samples are cut into segments of
SEGMENT tokens, each segment is worth the number of samples its token n-grams occur in (an n-gram counted
once), and segments are taken greedily, most valuable first, each taking the value of its n-grams with it,
until the token budget is spent; the most valuable segments end up nearest the files.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import __version__
from .engine import ENGINE_VERSION
from .errors import MemzipError
from .format import dictionary as dictfile
from .format.dictionary import DictionaryFile

SEGMENT = 64  # tokens per candidate segment
NGRAM = 4  # tokens per n-gram a segment is valued by
DEFAULT_MAX_TOKENS = 1024


class DictionaryMismatch(MemzipError):
    """The dictionary was made for another model, or is not the one a file needs."""


@dataclass
class Dictionary:
    """A dictionary file bound to the model it was made for."""

    file: DictionaryFile
    lm: object
    _prepared: dict = field(default_factory=dict, repr=False)

    @property
    def id(self) -> str:
        return self.file.id

    @property
    def tokens(self) -> list[int]:
        return self.file.tokens

    @property
    def positions(self) -> int:
        """Positions a row spends on the dictionary: the prefix token, its tokens and vectors."""
        return 1 + len(self.file.tokens) + self.file.vector_count

    def embeddings(self) -> torch.Tensor:
        """float64 [positions, hidden]: what every row starts with."""
        engine, lm = self.lm.engine, self.lm
        parts = [engine.embed(torch.tensor([lm.prefix_id]))]
        text = engine.embed(torch.tensor(self.file.tokens, dtype=torch.long)) if self.file.tokens else None
        vectors = None
        if self.file.vector_count:
            raw = torch.frombuffer(bytearray(self.file.vectors), dtype=torch.float32)
            vectors = raw.reshape(self.file.vector_count, -1).to(engine.device, torch.float64)
        order = (text, vectors) if self.file.header["placement"] == "after" else (vectors, text)
        parts += [p for p in order if p is not None]
        return torch.cat(parts)

    def prepared(self):
        """(a one-row cache holding every dictionary position but the last, that last position's
        embedding [1, 1, hidden]): forked by every batch of rows, whose first input is that embedding."""
        engine = self.lm.engine
        key = id(engine)
        if key not in self._prepared:
            x = self.embeddings()
            cache = engine.new_cache(1, x.shape[0] - 1 if x.shape[0] > 1 else 1)
            if x.shape[0] > 1:
                engine.forward(x[None, :-1], cache)
            self._prepared[key] = (cache, x[None, -1:])
        return self._prepared[key]


def bind(file: DictionaryFile, lm) -> Dictionary:
    """``file`` for model ``lm``, or DictionaryMismatch saying which model it was made for."""
    h = file.header
    if h["model_fingerprint"] != lm.fingerprint or h["engine"] != ENGINE_VERSION:
        raise DictionaryMismatch(f"dictionary {file.id} was made for model '{h['model_id']}' (fingerprint "
                                 f"{h['model_fingerprint'][:16]}, engine {h['engine']}), not for '{lm.model_id}'")
    if h["hidden_size"] != lm.hidden_size or any(not 0 <= t < lm.vocab_size for t in file.tokens):
        raise DictionaryMismatch(f"dictionary {file.id} does not fit model '{lm.model_id}'")
    return Dictionary(file, lm)


def load(path: str | os.PathLike, lm) -> Dictionary:
    """The dictionary file at ``path``, for model ``lm``."""
    return bind(dictfile.read(Path(path).read_bytes()), lm)


# ---- training ---------------------------------------------------------------------------------------


def _ngrams(tokens: list[int]) -> set[tuple[int, ...]]:
    return {tuple(tokens[i : i + NGRAM]) for i in range(len(tokens) - NGRAM + 1)}


def select_text(samples: list[list[int]], max_tokens: int) -> list[list[int]]:
    """The segments (token lists) the dictionary holds, least valuable first: COVER's greedy choice
    over segments of SEGMENT tokens valued by the samples their n-grams occur in."""
    frequency: Counter = Counter()
    for tokens in samples:
        frequency.update(_ngrams(tokens))
    segments = []
    for tokens in samples:
        for start in range(0, max(1, len(tokens) - SEGMENT // 2), SEGMENT // 2):
            piece = tokens[start : start + SEGMENT]
            if len(piece) >= NGRAM:
                segments.append(piece)
    grams = [_ngrams(piece) for piece in segments]
    chosen: list[list[int]] = []
    used = 0
    while used < max_tokens and segments:
        scores = [sum(frequency[g] for g in gs) for gs in grams]
        best = max(range(len(segments)), key=lambda i: (scores[i], -i))
        if scores[best] <= 1:  # nothing left that more than one sample shares
            break
        piece = segments[best][: max_tokens - used]
        chosen.append(piece)
        used += len(piece)
        for g in grams[best]:
            frequency[g] = 0
        del segments[best], grams[best]
    return chosen[::-1]


def train(samples: list[bytes], lm, max_tokens: int = DEFAULT_MAX_TOKENS) -> DictionaryFile:
    """A text dictionary for files like ``samples`` (memzip train)."""
    if not samples:
        raise MemzipError("train needs sample files")
    tokenized = [lm.tokenizer(s.decode("utf-8", "replace"), add_special_tokens=False)["input_ids"] for s in samples]
    tokens = [t for piece in select_text(tokenized, max_tokens) for t in piece]
    header = {"memzip_version": __version__, "model_id": lm.model_id, "model_fingerprint": lm.fingerprint,
              "engine": ENGINE_VERSION, "hidden_size": lm.hidden_size, "tokens": len(tokens), "vectors": 0,
              "placement": "after", "samples": {"files": len(samples), "bytes": sum(map(len, samples))}}
    file = DictionaryFile(header, tokens)
    dictfile.write(file)  # sets the ID
    return file
