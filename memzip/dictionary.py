"""Dictionaries: text, chosen from sample files, that every row of a file starts after (``memzip train``,
``memzip -D``): what zstd's trained dictionaries are to zstd, for many small files of one kind.

A row made with a dictionary is ``[prefix token, dictionary tokens, the row's tokens]`` (or, with memory
vectors in the dictionary, those vectors before or after the text). The engine evaluates the dictionary
once per command (``Dictionary.prepared``: its KV cache, forked for every batch of rows; memzip.engine
``fork_cache``), so each file costs only its own tokens. Files record the dictionary's ID and are refused
without it.

Training (``train``) tries two ways of picking the text and a few token budgets, and keeps what makes
held-out samples smallest: segments picked the way zstd's COVER algorithm picks them (samples cut into
segments of SEGMENT tokens, each worth the number of samples its token n-grams occur in, taken greedily,
each taking the value of its n-grams with it, the most valuable nearest the files), or whole samples.
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
MAX_SAMPLE_TOKENS = 8192  # tokens of one sample looked at


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


def whole_samples(samples: list[list[int]], max_tokens: int) -> list[list[int]]:
    """Whole samples, as many as fit in ``max_tokens`` (the alternative to COVER's segments: a few
    complete files show the model a kind's whole structure)."""
    chosen, used = [], 0
    for tokens in samples:
        if used + len(tokens) > max_tokens:
            continue
        chosen.append(tokens)
        used += len(tokens)
    return chosen


BUDGETS = (1024, 2048, 4096)  # token budgets tried by train, up to its max_tokens
CLOSE = 1.02  # a smaller dictionary within this factor of the best is preferred (cheaper decoding steps)


def _file(lm, tokens: list[int], samples: list[bytes], how: str) -> DictionaryFile:
    header = {"memzip_version": __version__, "model_id": lm.model_id, "model_fingerprint": lm.fingerprint,
              "engine": ENGINE_VERSION, "hidden_size": lm.hidden_size, "tokens": len(tokens), "vectors": 0,
              "placement": "after", "samples": {"files": len(samples), "bytes": sum(map(len, samples)), "text": how}}
    file = DictionaryFile(header, tokens)
    dictfile.write(file)  # sets the ID
    return file


def held_out_bits(lm, file: DictionaryFile, held_out: list[list[int]]) -> float:
    """Bits the held-out samples' streams take after the dictionary (each one row, as small files are)."""
    from .encoder import code_windows

    return sum(code_windows(lm, held_out, start=bind(file, lm))[1])


def train(samples: list[bytes], lm, max_tokens: int = BUDGETS[-1], progress=None) -> DictionaryFile:
    """A text dictionary for files like ``samples`` (memzip train). Candidates (COVER's segments and
    whole samples, at each budget up to ``max_tokens``) are built from all but every eighth sample and
    judged by the bits those held-out samples take after them; the winner (the smallest within CLOSE of
    the best) is built again from every sample."""
    if not samples:
        raise MemzipError("train needs sample files")
    say = progress or (lambda _text: None)
    tokenized = [lm.tokenizer(s.decode("utf-8", "replace"), add_special_tokens=False)["input_ids"] for s in samples]
    tokenized = [t[: MAX_SAMPLE_TOKENS] for t in tokenized if t]
    if not tokenized:
        raise MemzipError("train needs sample files with text")
    budgets = [b for b in BUDGETS if b < max_tokens] + [min(max_tokens, dictfile.MAX_TOKENS)]
    methods = {"segments": select_text, "samples": whole_samples}
    held_out = set(list(range(7, len(tokenized), 8))[:16])  # every eighth sample, at most 16
    held = [tokenized[i] for i in sorted(held_out)]
    rest = [t for i, t in enumerate(tokenized) if i not in held_out]
    choice = ("segments", budgets[-1])
    if held:
        scored = []
        for how, pick in methods.items():
            for budget in budgets:
                tokens = [t for piece in pick(rest, budget) for t in piece]
                if tokens:
                    bits = held_out_bits(lm, _file(lm, tokens, samples, how), held)
                    scored.append((bits, budget, how))
                    say(f"train: {how}, {budget} tokens: held-out samples {bits / 8:,.0f} bytes")
        best = min(bits for bits, _, _ in scored)
        budget, _, how = min((b, bits, h) for bits, b, h in scored if bits <= CLOSE * best)
        choice = (how, budget)
    tokens = [t for piece in methods[choice[0]](tokenized, choice[1]) for t in piece]
    if not tokens:
        raise MemzipError("the samples share nothing a dictionary could hold")
    return _file(lm, tokens, samples, choice[0])


def with_vectors(file: DictionaryFile, vectors: bytes, count: int) -> DictionaryFile:
    """``file`` with ``count`` memory vectors (float32 bytes, memzip.vectors.dictionary_vectors) after its text."""
    out = DictionaryFile({**file.header, "vectors": count, "placement": "after"}, list(file.tokens), vectors)
    dictfile.write(out)  # sets the ID
    return out
