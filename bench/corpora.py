"""Benchmark corpora: the paper's text (from ../shared when present), a CPython documentation sample,
fresh prose in English and Spanish (bench/texts/, written for memzip in November 2026, so no model has
seen it), and any files named on the command line."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAPER = Path(os.environ.get("MEMZIP_CORPORA", REPO.parent / "shared" / "corpora")) / "memory_tokens_paper.txt"


@dataclass(frozen=True)
class Corpus:
    name: str
    data: bytes


def _prefix(data: bytes, max_bytes: int | None) -> bytes:
    """The first ``max_bytes`` bytes, cut back to a character boundary."""
    if max_bytes is None or len(data) <= max_bytes:
        return data
    return data[:max_bytes].decode("utf-8", "ignore").encode("utf-8")


def paper(max_bytes: int | None = None) -> Corpus | None:
    if not PAPER.is_file():
        return None
    data = PAPER.read_bytes()
    suffix = "" if max_bytes is None or len(data) <= max_bytes else f"[:{max_bytes}]"
    return Corpus(f"memory_tokens_paper.txt{suffix}", _prefix(data, max_bytes))


def pydoc_sample(max_bytes: int) -> Corpus:
    """Python documentation topics shipped with CPython (pydoc_data), in sorted topic order."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[key] for key in sorted(topics))
    return Corpus(f"pydoc_data.topics[:{max_bytes}]", _prefix(text.encode("utf-8"), max_bytes))


TEXTS = Path(__file__).resolve().parent / "texts"


def fresh_prose(max_bytes: int | None = None) -> list[Corpus]:
    """Unseen prose written for the bench: English and Spanish, about 1.3 KB and 3.2 KB each."""
    names = ("fresh_en.txt", "fresh_es.txt", "fresh_en_4k.txt", "fresh_es_4k.txt")
    return [from_file(str(TEXTS / name), max_bytes) for name in names]


def other_kinds(max_bytes: int | None = None) -> list[Corpus]:
    """Real files of 2025-2026 that are not prose: a markdown changelog, Python code, a package log
    (bench/texts/SOURCES.md names their sources)."""
    return [from_file(str(TEXTS / name), max_bytes) for name in ("changelog.md", "code.py", "dpkg.log")]


def from_file(path: str, max_bytes: int | None = None) -> Corpus:
    data = Path(path).read_bytes()
    return Corpus(os.path.basename(path), _prefix(data, max_bytes))


QUICK_TEXT = (
    "The lighthouse keeper wrote the weather into a notebook every evening: wind, swell, and the colour "
    "of the sky at six. El farero anotaba el tiempo cada tarde. \u00bfLlover\u00e1 ma\u00f1ana?\r\n"
).encode()


def quick() -> list[Corpus]:
    """A few hundred bytes: English, Spanish, CRLF and a non-UTF-8 byte, for the test suite."""
    return [Corpus("quick-sample", QUICK_TEXT + b"\xff\x00end")]
