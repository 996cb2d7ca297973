"""The ``.mzd`` dictionary file: text (and optionally memory vectors) that every row of a file starts
after, made by ``memzip train`` for one model. Writing and strict reading, without torch; the layout is
specified in docs/FORMAT.md (*Dictionaries*).

    4     magic       89 4D 5A 44 ("\\x89MZD")
    var   version     varint = 1
    var   header_len  varint, then that many bytes of canonical JSON (below)
    T     tokens      `tokens` varints: the dictionary text's token ids
    V     vectors     `vectors` x hidden_size little-endian float32, all finite
    4     trailer     the first 4 bytes of the SHA-256 of everything before it: the dictionary's ID

A row starts with the model's prefix token, then the vectors (``placement`` "before") or the tokens first
(``placement`` "after"), then the other. Containers made with a dictionary record its ID.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass, field

from ..errors import ContainerError
from .container import Reader, varint

MAGIC = b"\x89MZD"
VERSION = 1
ID_LEN = 4
MAX_TOKENS = 8192 - 64  # a dictionary leaves room for rows after it (the engine: 8,192 positions per row)
MAX_VECTORS = 64
MAX_HEADER = 1 << 16
PLACEMENTS = ("after", "before")
HEADER_KEYS = {"memzip_version": str, "model_id": str, "model_fingerprint": str, "engine": str, "hidden_size": int,
               "tokens": int, "vectors": int, "placement": str, "samples": dict}


class DictionaryError(ContainerError):
    """The file is not a memzip dictionary, or not one this memzip reads."""


@dataclass
class DictionaryFile:
    header: dict
    tokens: list[int]
    vectors: bytes = b""  # float32 little-endian, vectors x hidden_size
    id: str = field(default="", compare=False)  # 8 hex digits, set by write/read

    @property
    def vector_count(self) -> int:
        return self.header["vectors"]


def _check_header(header) -> None:
    if not isinstance(header, dict) or set(header) != set(HEADER_KEYS):
        raise DictionaryError("dictionary header fields are wrong")
    for key, kind in HEADER_KEYS.items():
        if not isinstance(header[key], kind) or (kind is int and isinstance(header[key], bool)):
            raise DictionaryError(f"dictionary header field {key!r} has the wrong type")
    if not 1 <= header["hidden_size"] <= 1 << 16:
        raise DictionaryError("dictionary hidden_size is out of range")
    if not 0 <= header["tokens"] <= MAX_TOKENS or not 0 <= header["vectors"] <= MAX_VECTORS:
        raise DictionaryError(f"a dictionary holds at most {MAX_TOKENS} tokens and {MAX_VECTORS} vectors")
    if header["tokens"] + header["vectors"] == 0:
        raise DictionaryError("an empty dictionary")
    if header["placement"] not in PLACEMENTS:
        raise DictionaryError(f"dictionary placement must be one of {PLACEMENTS}")
    fp = header["model_fingerprint"]
    if len(fp) != 64 or any(c not in "0123456789abcdef" for c in fp):
        raise DictionaryError("dictionary model_fingerprint is not a SHA-256 hex digest")


def _canonical(header: dict) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def write(d: DictionaryFile) -> bytes:
    """The file's bytes; sets ``d.id``."""
    _check_header(d.header)
    if len(d.tokens) != d.header["tokens"] or any(not 0 <= t < 1 << 32 for t in d.tokens):
        raise ValueError("the dictionary's tokens do not match its header")
    if len(d.vectors) != 4 * d.header["vectors"] * d.header["hidden_size"]:
        raise ValueError("the dictionary's vectors do not match its header")
    head = _canonical(d.header)
    body = MAGIC + varint(VERSION) + varint(len(head)) + head + b"".join(varint(t) for t in d.tokens) + d.vectors
    trailer = hashlib.sha256(body).digest()[:ID_LEN]
    d.id = trailer.hex()
    return body + trailer


def read(blob: bytes) -> DictionaryFile:
    """Parse and check a dictionary file; DictionaryError on anything not exactly as specified."""
    if blob[: len(MAGIC)] != MAGIC:
        raise DictionaryError("not a memzip dictionary (bad magic)")
    if len(blob) < len(MAGIC) + 3 + ID_LEN:
        raise DictionaryError("truncated dictionary")
    body, trailer = blob[:-ID_LEN], blob[-ID_LEN:]
    r = Reader(body)
    r.pos = len(MAGIC)
    try:
        version = r.varint("version")
        if version != VERSION:
            raise DictionaryError(f"dictionary version {version} is not supported; this memzip reads version {VERSION}")
        if hashlib.sha256(body).digest()[:ID_LEN] != trailer:
            raise DictionaryError("dictionary is corrupted or truncated (trailer mismatch)")
        size = r.varint("header length")
        if size > MAX_HEADER:
            raise DictionaryError("dictionary header is too long")
        try:
            header = json.loads(r.take(size, "header").decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise DictionaryError("dictionary header is not JSON") from None
        _check_header(header)
        if _canonical(header) != body[r.pos - size : r.pos]:
            raise DictionaryError("dictionary header is not canonical JSON")
        tokens = [r.varint("token") for _ in range(header["tokens"])]
        vectors = r.take(4 * header["vectors"] * header["hidden_size"], "vectors")
    except ContainerError as exc:
        if isinstance(exc, DictionaryError):
            raise
        raise DictionaryError(f"dictionary: {exc}") from None
    if r.pos != len(body):
        raise DictionaryError("unexpected bytes after the dictionary's vectors")
    if not all(math.isfinite(v) for v in struct.unpack(f"<{len(vectors) // 4}f", vectors)):
        raise DictionaryError("dictionary vectors are not finite")
    return DictionaryFile(header, tokens, vectors, trailer.hex())
