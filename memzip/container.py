"""The .mz container: writing and strict reading. The byte layout is specified in docs/FORMAT.md.

Every section is length-prefixed and the whole file ends with a SHA-256 of everything before it, so
corruption is found before any (slow) decoding starts; the original bytes' own SHA-256 is checked
again after decoding.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from .codes import VectorSpec, check_codes, spec_from_header
from .errors import ContainerError
from .rankcoder import decode_ranks, encode_ranks

MAGIC = b"\x89MZP\r\n\x1a\n"
FORMAT_VERSION = 8
# segment kinds: a window of tokens, a span of raw bytes
KIND_WINDOW, KIND_RAW = 0, 1
KINDS = (KIND_WINDOW, KIND_RAW)
ZSTD_LEVEL = 19

# Bounds that keep a hostile file from making the reader allocate or compute without limit. Everything
# the decoder allocates is then bounded by the real size of the file: every window costs a stored
# code, and a zstd frame cannot expand by more than ZSTD_MAX_EXPANSION.
MAX_HEADER_BYTES = 1 << 16  # of JSON, once unpacked; a real header is well under 1 KB
MAX_WINDOW_TOKENS = 1024  # tokens per window (memzip writes tens to hundreds); bounds the KV cache per row
ZSTD_MAX_EXPANSION = 1 << 16  # zstd's real ceiling is ~32,000x (RLE blocks); claims beyond it are lies
MAX_ENGINE_NAME = 64

# zstd raw-content dictionary for the header frame: typical headers, so that field names and common
# values cost almost nothing. Part of the format: docs/FORMAT.md gives its SHA-256.
HEADER_DICTIONARY = (Path(__file__).parent / "header_dictionary.json").read_bytes()
HEADER_DICTIONARY_SHA256 = "19397e1837c802b161767d9281026d62a36ccddc6d5e09a65d0cc1660e756dcf"  # pinned by the format

_PREAMBLE = struct.Struct("<8sHI")  # magic, version, header length
TRAILER_LEN = 8  # first bytes of the SHA-256 of everything before it: finds corruption before decoding
SECTIONS = ("segment table", "vectors", "ranks", "fallback")  # after the header, each length-prefixed

HEADER_KEYS = {
    "memzip_version": str,
    "model_id": str,
    "model_fingerprint": str,
    "prefix_id": int,
    "hidden_size": int,
    "window": int,
    "engine": str,
    "vectors": dict,
    "original_size": int,
    "original_sha256": str,
    "settings": dict,
    "stats": dict,
}


@dataclass
class Container:
    header: dict
    # in file order: (KIND_WINDOW, n_tokens) or (KIND_RAW, n_bytes)
    segments: list[tuple[int, int]]
    codes: bytes  # stored vector codes, one fixed-size record per window, in window order
    fallback: bytes  # raw spans concatenated, uncompressed
    sizes: dict = field(default_factory=dict)  # section sizes in bytes, filled by the reader and writer
    ranks: list[int] | None = None  # the rank of every window token, windows in table order; None: all 0

    @property
    def window_count(self) -> int:
        return sum(1 for kind, _ in self.segments if kind == KIND_WINDOW)

    @property
    def window_lengths(self) -> list[int]:
        return [n for kind, n in self.segments if kind == KIND_WINDOW]

    def window_ranks(self) -> list[list[int]]:
        """``ranks`` split per window."""
        out, pos = [], 0
        for n in self.window_lengths:
            out.append(self.ranks[pos : pos + n] if self.ranks is not None else [0] * n)
            pos += n
        return out

    @property
    def vector_spec(self) -> VectorSpec:
        return spec_from_header(self.header["vectors"], self.header["hidden_size"])


def _validate_header(header: dict) -> None:
    if set(header) != set(HEADER_KEYS):
        missing, extra = set(HEADER_KEYS) - set(header), set(header) - set(HEADER_KEYS)
        raise ContainerError(f"header fields wrong (missing {sorted(missing)}, unknown {sorted(extra)})")
    for key, kind in HEADER_KEYS.items():
        value = header[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ContainerError(f"header field {key!r} has the wrong type")
    for key in ("prefix_id", "original_size"):
        if header[key] < 0:
            raise ContainerError(f"header field {key!r} is negative")
    for key, ceiling in (("hidden_size", 1 << 16), ("window", MAX_WINDOW_TOKENS)):
        if not 1 <= header[key] <= ceiling:
            raise ContainerError(f"header field {key!r} is out of range (1..{ceiling})")
    try:
        spec_from_header(header["vectors"], header["hidden_size"])
    except ValueError as exc:
        raise ContainerError(f"header field 'vectors': {exc}") from None
    engine = header["engine"]
    if not 0 < len(engine) <= MAX_ENGINE_NAME or not all(c.isalnum() or c in "-._" for c in engine):
        raise ContainerError("header field 'engine' is not an engine version name")
    for key in ("model_fingerprint", "original_sha256"):
        value = header[key]
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise ContainerError(f"header field {key!r} is not a SHA-256 hex digest")


def write(container: Container) -> bytes:
    """Serialize; the header is validated so a writer bug cannot produce an unreadable file."""
    _validate_header(container.header)
    try:
        check_codes(container.vector_spec, container.header["hidden_size"], container.codes, container.window_count)
    except ValueError as exc:
        raise ValueError(f"cannot write these vector codes: {exc}") from None
    tokens = sum(container.window_lengths)
    if container.ranks is not None and len(container.ranks) != tokens:
        raise ValueError("one rank per window token is required")
    header = pack_header(container.header)
    table = pack_segments(container.segments)
    codes, fallback = zstd_frame(container.codes), zstd_frame(container.fallback)
    ranks = encode_ranks(container.ranks if container.ranks is not None else [0] * tokens)
    parts = [_PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(header)), header]
    for section in (table, codes, ranks, fallback):
        parts += [varint(len(section)), section]
    body = b"".join(parts)
    container.sizes = {"header": len(header), "segments": len(table), "vectors": len(codes), "ranks": len(ranks),
                       "fallback": len(fallback)}
    return seal(body)


def pack_segments(segments) -> bytes:
    """The segment table: one varint ``length * 2 + kind`` per entry."""
    return b"".join(varint(length * 2 + kind) for kind, length in segments)


def seal(body: bytes) -> bytes:
    """``body`` followed by its trailer."""
    return body + hashlib.sha256(body).digest()[:TRAILER_LEN]


def varint(n: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, least significant first, high bit = more bytes follow."""
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def zstd_frame(data: bytes) -> bytes:
    """How the container compresses a section: one zstd frame (with content size); empty stays empty."""
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data) if data else b""


class _Reader:
    def __init__(self, blob: bytes):
        self.blob, self.pos = blob, 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.blob):
            raise ContainerError(f"truncated file ({what} runs past the end)")
        chunk = self.blob[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def varint(self, what: str) -> int:
        value = 0
        for i in range(10):  # at most 10 bytes: values below 2**64
            (byte,) = self.take(1, what)
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if (byte == 0 and i > 0) or value >= 1 << 64:
                    raise ContainerError(f"{what} is not a canonical length")
                return value
        raise ContainerError(f"{what} is longer than 10 bytes")

    def section(self, what: str) -> bytes:
        return self.take(self.varint(f"{what} length"), what)


def read(blob: bytes) -> Container:
    """Parse and check a container; any inconsistency raises ContainerError."""
    if not blob:
        raise ContainerError("empty file, not a memzip file")
    if len(blob) < len(MAGIC) or blob[: len(MAGIC)] != MAGIC:
        raise ContainerError("not a memzip file (bad magic)")
    if len(blob) < _PREAMBLE.size + TRAILER_LEN:
        raise ContainerError("truncated file")
    _, version, header_len = _PREAMBLE.unpack_from(blob)
    if version != FORMAT_VERSION:
        newer = " (written by a newer memzip; upgrade to read it)" if version > FORMAT_VERSION else ""
        raise ContainerError(
            f"format version {version} is not supported{newer}; this memzip reads version {FORMAT_VERSION}"
        )
    body = blob[:-TRAILER_LEN]
    if seal(body) != blob:
        raise ContainerError("file is corrupted or truncated (container checksum mismatch)")
    r = _Reader(body)
    r.pos = _PREAMBLE.size
    header = unpack_header(r.take(header_len, "header"))
    if not isinstance(header, dict):
        raise ContainerError("header is not a JSON object")
    _validate_header(header)
    table, packed_codes, packed_ranks, packed = (r.section(what) for what in SECTIONS)
    if r.pos != len(body):
        raise ContainerError("unexpected bytes after the last section")
    segments = _parse_segments(table, header["window"])
    window_lengths = [length for kind, length in segments if kind == KIND_WINDOW]
    n_windows, tokens = len(window_lengths), sum(window_lengths)
    raw_total = sum(length for kind, length in segments if kind == KIND_RAW)
    if raw_total > header["original_size"]:
        raise ContainerError("raw spans are larger than the original file")
    if tokens > header["original_size"] - raw_total:  # every window token stands for at least one byte
        raise ContainerError("windows hold more tokens than the original file has bytes")
    codes = _parse_codes(packed_codes, header, n_windows)
    try:
        ranks = decode_ranks(packed_ranks, tokens)
    except ValueError as exc:
        raise ContainerError(f"ranks section: {exc}") from None
    fallback = _unzstd(packed, raw_total, "fallback")
    sizes = {"header": header_len, "segments": len(table), "vectors": len(packed_codes), "ranks": len(packed_ranks),
             "fallback": len(packed)}
    return Container(header, segments, codes, fallback, sizes, ranks)


def pack_header(header: dict) -> bytes:
    """The header section: canonical JSON, one zstd frame against HEADER_DICTIONARY."""
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, dict_data=_header_dictionary()).compress(text)


def _header_dictionary() -> zstandard.ZstdCompressionDict:
    return zstandard.ZstdCompressionDict(HEADER_DICTIONARY, dict_type=zstandard.DICT_TYPE_RAWCONTENT)


def unpack_header(packed: bytes):
    """The JSON value a header section holds: one zstd frame (against HEADER_DICTIONARY) declaring
    1..MAX_HEADER_BYTES bytes of UTF-8 JSON (checked before anything is allocated); ContainerError otherwise."""
    try:
        declared = zstandard.get_frame_parameters(packed).content_size
    except zstandard.ZstdError as exc:
        raise ContainerError(f"header is not a valid zstd frame ({exc})") from None
    if not 0 < declared <= MAX_HEADER_BYTES:  # also rejects frames without a declared size
        raise ContainerError(f"header must declare 1..{MAX_HEADER_BYTES} bytes of JSON")
    try:
        return json.loads(_unzstd(packed, declared, "header", _header_dictionary()).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ContainerError(f"header is not valid JSON ({type(exc).__name__})") from None


def _parse_segments(table: bytes, window: int) -> list[tuple[int, int]]:
    r, segments = _Reader(table), []
    while r.pos < len(table):
        value = r.varint("segment entry")
        kind, length = value & 1, value >> 1
        if length == 0 or (kind == KIND_WINDOW and length > window):
            raise ContainerError(f"segment length {length} is out of range")
        segments.append((kind, length))
    return segments


def _parse_codes(packed: bytes, header: dict, n_windows: int) -> bytes:
    spec, hidden = spec_from_header(header["vectors"], header["hidden_size"]), header["hidden_size"]
    codes = _unzstd(packed, n_windows * spec.code_bytes(hidden), "vectors")
    try:
        check_codes(spec, hidden, codes, n_windows)
    except ValueError as exc:
        raise ContainerError(str(exc)) from None
    return codes


def _unzstd(packed: bytes, size: int, what: str, dictionary=None) -> bytes:
    """A section holding one zstd frame of exactly ``size`` bytes (empty when ``size`` is 0)."""
    if size == 0:
        if packed:
            raise ContainerError(f"{what} section present but nothing is stored in it")
        return b""
    if size > len(packed) * ZSTD_MAX_EXPANSION:
        raise ContainerError(f"the segment table claims more bytes than the {what} section can hold")
    try:
        params = zstandard.get_frame_parameters(packed)
        if params.content_size != size:
            raise ContainerError(f"{what} size does not match the segment table")
        data = zstandard.ZstdDecompressor(dict_data=dictionary).decompress(packed, max_output_size=size)
    except zstandard.ZstdError as exc:
        raise ContainerError(f"{what} section is not a valid zstd frame ({exc})") from None
    if len(data) != size:
        raise ContainerError(f"{what} size does not match the segment table")
    return data
