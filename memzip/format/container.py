"""The .mz container: writing and strict reading. The byte layout is specified in docs/FORMAT.md.

After the header, each of the four sections is length-prefixed (within the tokens section, every
window's stream but the last is length-prefixed too, the last filling the rest); the original's checksum
follows the sections, and the whole file ends with a short SHA-256 trailer of everything before it, so
corruption is found before any (slow) decoding starts and a wrong decode is refused after it. Reading a
container needs neither torch nor the model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from ..errors import ContainerError
from .vectors import VectorSpec, check_codes, spec_from_header

MAGIC = b"\x89MZP"
FORMAT_VERSION = 10
# segment kinds: a window of tokens, a span of raw bytes
KIND_WINDOW, KIND_RAW = 0, 1
ZSTD_LEVEL = 19
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # every zstd frame starts with it; the container stores frames without it

# Bounds that keep a hostile file from making the reader allocate or compute without limit. Everything
# the decoder allocates is then bounded by the real size of the file: every window costs a stored
# stream, and a zstd frame cannot expand by more than ZSTD_MAX_EXPANSION.
MAX_HEADER_BYTES = 1 << 16  # of JSON, once unpacked; a real header is a few hundred bytes
MAX_WINDOW_TOKENS = 8192  # tokens per window (the engine's positions per row); bounds the KV cache per row
ZSTD_MAX_EXPANSION = 1 << 16  # zstd's real ceiling is ~32,000x (RLE blocks); claims beyond it are lies
MAX_ENGINE_NAME = 64

# zstd raw-content dictionary for the header frame: typical headers, so that field names and common
# values cost almost nothing. Part of the format: docs/FORMAT.md gives its SHA-256.
HEADER_DICTIONARY = (Path(__file__).parent / "header_dictionary.json").read_bytes()
HEADER_DICTIONARY_SHA256 = "da43896037e9af3ebe492bc270e049a723e791615d747a898eac1346bda2512d"  # pinned by the format

CHECKSUM_LEN = 4  # first bytes of the SHA-256 of the original file, checked after decoding
TRAILER_LEN = 4  # first bytes of the SHA-256 of everything before it: finds corruption before decoding
SECTIONS = ("segment table", "vectors", "tokens", "fallback")  # after the header, each length-prefixed

# Header profiles: 0, a JSON header (any model and settings); the packaged default model with no memory
# vectors, whose fields are DEFAULT_PROFILE's: 1 (original_size, window and context stored, as varints),
# 3 (the same after a 4-byte dictionary ID); 12 and 48, the same model in a file of one window and nothing
# else (original_size and the window's tokens stored; without, with a dictionary ID), whose body is just
# that window's stream and the original's checksum (no section lengths, no trailer: the checksum and the
# stream's exact re-encoding prove the output). 12 and 48 differ from 0, 1 and 3 in at least two bits, so
# that no single flipped bit turns a file with a trailer into one without.
PROFILE_JSON, PROFILE_DEFAULT, PROFILE_DICT, PROFILE_SINGLE, PROFILE_DICT_SINGLE = 0, 1, 3, 12, 48
SINGLE_PROFILES = (PROFILE_SINGLE, PROFILE_DICT_SINGLE)
DICTIONARY_ID_LEN = 4  # bytes of a dictionary's ID (8 hex digits in a JSON header)
DEFAULT_PROFILE = {
    "memzip_version": "",  # not recorded with this profile
    "model_id": "smollm2-135m-instruct",
    "model_fingerprint": "aaf3e199c718a616e2f32543c199a3621b03c8b84d57258e257e833f2f85492c",
    "engine": "exact-2",
    "prefix_id": 0,
    "hidden_size": 576,
    "vectors": {"code": "none"},
    "settings": {},
}

PROFILE_VALUES = ("original_size", "window", "context")  # what the default profile stores

HEADER_KEYS = {
    "memzip_version": str,
    "model_id": str,
    "model_fingerprint": str,
    "engine": str,
    "prefix_id": int,
    "hidden_size": int,
    "dictionary": str,
    "window": int,
    "context": int,
    "vectors": dict,
    "original_size": int,
    "settings": dict,
}


@dataclass
class Container:
    header: dict
    # in file order: (KIND_WINDOW, n_tokens) or (KIND_RAW, n_bytes)
    segments: list[tuple[int, int]]
    codes: bytes  # stored vector codes, one fixed-size record per window, in window order
    fallback: bytes  # raw spans concatenated, uncompressed
    streams: list[bytes] = field(default_factory=list)  # each window's token stream, in window order
    checksum: bytes = b""  # first CHECKSUM_LEN bytes of the original's SHA-256
    sizes: dict = field(default_factory=dict)  # section sizes in bytes, filled by the reader and writer

    @property
    def window_count(self) -> int:
        return sum(1 for kind, _ in self.segments if kind == KIND_WINDOW)

    @property
    def window_lengths(self) -> list[int]:
        return [n for kind, n in self.segments if kind == KIND_WINDOW]

    @property
    def vector_spec(self) -> VectorSpec:
        return spec_from_header(self.header["vectors"], self.header["hidden_size"])


def original_checksum(data: bytes) -> bytes:
    """What a container records of its original: the first CHECKSUM_LEN bytes of its SHA-256."""
    return hashlib.sha256(data).digest()[:CHECKSUM_LEN]


def _validate_header(header: dict) -> None:
    if set(header) != set(HEADER_KEYS):
        missing, extra = set(HEADER_KEYS) - set(header), set(header) - set(HEADER_KEYS)
        raise ContainerError(f"header fields wrong (missing {sorted(missing)}, unknown {sorted(extra)})")
    for key, kind in HEADER_KEYS.items():
        value = header[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ContainerError(f"header field {key!r} has the wrong type")
    for key in ("prefix_id", "original_size", "context"):
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
    value = header["model_fingerprint"]
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ContainerError("header field 'model_fingerprint' is not a SHA-256 hex digest")
    value = header["dictionary"]
    if value and (len(value) != 2 * DICTIONARY_ID_LEN or any(c not in "0123456789abcdef" for c in value)):
        raise ContainerError("header field 'dictionary' is not a dictionary ID")


def write(container: Container, packed_fallback: bytes | None = None) -> bytes:
    """Serialize; the header is validated so a writer bug cannot produce an unreadable file.
    ``packed_fallback``: the fallback section already compressed, ``zstd_frame(container.fallback)``, for
    a caller that holds it (the pipeline's file that stores its whole input raw)."""
    _validate_header(container.header)
    try:
        check_codes(container.vector_spec, container.header["hidden_size"], container.codes, container.window_count)
    except ValueError as exc:
        raise ValueError(f"cannot write these vector codes: {exc}") from None
    if len(container.streams) != container.window_count or not all(container.streams):
        raise ValueError("one non-empty token stream per window is required")
    if len(container.checksum) != CHECKSUM_LEN:
        raise ValueError(f"the original's checksum must be {CHECKSUM_LEN} bytes")
    if _single(container):
        h = container.header
        head = bytes([PROFILE_DICT_SINGLE if h["dictionary"] else PROFILE_SINGLE]) + _dictionary_id(h) + \
            varint(h["original_size"]) + varint(container.segments[0][1])
        stream = container.streams[0]
        container.sizes = {"header": len(head), "segments": 0, "vectors": 0, "tokens": len(stream), "fallback": 0}
        return MAGIC + varint(FORMAT_VERSION) + head + stream + container.checksum
    header = pack_header(container.header)
    table = pack_segments(container.segments)
    codes = zstd_frame(container.codes)
    fallback = zstd_frame(container.fallback) if packed_fallback is None else packed_fallback
    tokens = pack_streams(container.streams)
    parts = [MAGIC, varint(FORMAT_VERSION), header]
    for section in (table, codes, tokens, fallback):
        parts += [varint(len(section)), section]
    body = b"".join(parts) + container.checksum
    container.sizes = {"header": len(header), "segments": len(table), "vectors": len(codes), "tokens": len(tokens),
                       "fallback": len(fallback)}
    return seal(body)


def _default_like(header: dict) -> bool:
    """Is ``header`` the packaged model's with no memory vectors (DEFAULT_PROFILE's fields)?"""
    rest = {k: v for k, v in header.items() if k not in (*PROFILE_VALUES, "dictionary")}
    return rest == {**DEFAULT_PROFILE, "memzip_version": rest.get("memzip_version")}


def _single(container: Container) -> bool:
    """Does the file hold one window and nothing else, with a default-like header (profiles 12 and 48)?"""
    h = container.header
    return (_default_like(h) and h["context"] == 0 and len(container.segments) == 1
            and container.segments[0] == (KIND_WINDOW, h["window"]))


def _dictionary_id(header: dict) -> bytes:
    return bytes.fromhex(header["dictionary"])


def pack_streams(streams: list[bytes]) -> bytes:
    """The tokens section: every stream but the last length-prefixed, the last filling the rest."""
    return b"".join(varint(len(s)) + s for s in streams[:-1]) + (streams[-1] if streams else b"")


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


def zstd_frame(data: bytes, dictionary=None) -> bytes:
    """How the container compresses a section: one zstd frame with its content size, without the
    frame's 4-byte magic number and without a dictionary ID; empty stays empty."""
    if not data:
        return b""
    frame = zstandard.ZstdCompressor(level=ZSTD_LEVEL, dict_data=dictionary, write_dict_id=False).compress(data)
    if frame[:4] != ZSTD_MAGIC:
        raise RuntimeError("zstd wrote an unexpected frame")
    return frame[4:]


class Reader:
    """Reads a byte string front to back; every step checks that the bytes are there."""

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


def _preamble(blob: bytes) -> tuple[Reader, int]:
    """Magic and version (read before anything else is trusted); returns a reader after the version."""
    if not blob:
        raise ContainerError("empty file, not a memzip file")
    if blob[: len(MAGIC)] != MAGIC[: len(blob)] or len(blob) < len(MAGIC):
        raise ContainerError("not a memzip file (bad magic)")
    r = Reader(blob)
    r.pos = len(MAGIC)
    return r, r.varint("version")


def section_offsets(blob: bytes) -> list[tuple[int, int]]:
    """(offset, size) of the varint length fields of the sections after the header, as many as parse:
    where a fuzzer can aim at a container's structure."""
    try:
        r, _ = _preamble(blob)
        _read_header(r)
    except ContainerError:
        return []
    offsets: list[tuple[int, int]] = []
    while r.pos < len(blob) and len(offsets) < len(SECTIONS):
        at = r.pos
        try:
            length = r.varint("length")
        except ContainerError:
            break
        offsets.append((at, r.pos - at))
        r.pos += length
    return offsets


def read(blob: bytes) -> Container:
    """Parse and check a container; any inconsistency raises ContainerError."""
    r, version = _preamble(blob)
    if version != FORMAT_VERSION:
        newer = " (written by a newer memzip; upgrade to read it)" if version > FORMAT_VERSION else ""
        raise ContainerError(
            f"format version {version} is not supported{newer}; this memzip reads version {FORMAT_VERSION}"
        )
    if r.pos < len(blob) and blob[r.pos] in SINGLE_PROFILES:
        return _read_single(blob, r)
    if len(blob) < r.pos + TRAILER_LEN + CHECKSUM_LEN:
        raise ContainerError("truncated file")
    body = blob[:-TRAILER_LEN]
    if seal(body) != blob:
        raise ContainerError("file is corrupted or truncated (container checksum mismatch)")
    start, r = r.pos, Reader(body[:-CHECKSUM_LEN])
    r.pos = start
    header = _read_header(r)
    header_size = r.pos - start
    _validate_header(header)
    table, packed_codes, packed_tokens, packed = (r.section(what) for what in SECTIONS)
    if r.pos != len(r.blob):
        raise ContainerError("unexpected bytes after the last section")
    segments = _parse_segments(table, header["window"])
    window_lengths = [length for kind, length in segments if kind == KIND_WINDOW]
    if header["context"] > (window_lengths[0] if window_lengths else 0):
        raise ContainerError("the shared context is longer than the first window")
    if header["context"] and header["vectors"] != {"code": "none"}:
        raise ContainerError("a shared context with memory vectors")
    n_windows, tokens = len(window_lengths), sum(window_lengths)
    raw_total = sum(length for kind, length in segments if kind == KIND_RAW)
    if raw_total > header["original_size"]:
        raise ContainerError("raw spans are larger than the original file")
    if tokens > header["original_size"] - raw_total:  # every window token stands for at least one byte
        raise ContainerError("windows hold more tokens than the original file has bytes")
    codes = _parse_codes(packed_codes, header, n_windows)
    streams = _parse_streams(packed_tokens, n_windows)
    fallback = _unzstd(packed, raw_total, "fallback")
    sizes = {"header": header_size, "segments": len(table), "vectors": len(packed_codes),
             "tokens": len(packed_tokens), "fallback": len(packed)}
    c = Container(header, segments, codes, fallback, streams, body[-CHECKSUM_LEN:], sizes)
    if _single(c):
        raise ContainerError("a file that the single-window profile would hold (not canonical)")
    return c


def pack_header(header: dict) -> bytes:
    """The header: the default profile's byte (3 with a dictionary, then its 4-byte ID) and three
    varints (original_size, window, context) when the header is that profile's, else the JSON profile's
    byte, a varint length and canonical JSON as one zstd frame against HEADER_DICTIONARY."""
    if _default_like(header):
        profile = PROFILE_DICT if header["dictionary"] else PROFILE_DEFAULT
        return bytes([profile]) + _dictionary_id(header) + b"".join(varint(header[k]) for k in PROFILE_VALUES)
    frame = pack_json(header)
    return bytes([PROFILE_JSON]) + varint(len(frame)) + frame


def pack_json(header: dict) -> bytes:
    """A JSON header as one zstd frame (without its magic) against HEADER_DICTIONARY."""
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return zstd_frame(text, _header_dictionary())


def _implied(dictionary: bytes, values: dict) -> dict:
    return {**DEFAULT_PROFILE, "vectors": dict(DEFAULT_PROFILE["vectors"]), "settings": {},
            "dictionary": dictionary.hex(), **values}


def _read_header(r: Reader) -> dict:
    (profile,) = r.take(1, "header profile")
    if profile in (PROFILE_DEFAULT, PROFILE_DICT):
        dictionary = r.take(DICTIONARY_ID_LEN, "dictionary ID") if profile == PROFILE_DICT else b""
        return _implied(dictionary, {k: r.varint(k.replace("_", " ")) for k in PROFILE_VALUES})
    if profile != PROFILE_JSON:
        raise ContainerError(f"header profile {profile} is unknown")
    header = unpack_header(r.section("header"))
    if not isinstance(header, dict):
        raise ContainerError("header is not a JSON object")
    if set(header) == set(HEADER_KEYS) and _default_like(header):
        raise ContainerError("a JSON header that the default profile would hold (not canonical)")
    return header


def _read_single(blob: bytes, r: Reader) -> Container:
    """Profiles 12 and 48: one window, its stream, the original's checksum."""
    if len(blob) <= r.pos + 1 + CHECKSUM_LEN:
        raise ContainerError("truncated file")
    body = Reader(blob[:-CHECKSUM_LEN])
    body.pos = r.pos
    (profile,) = body.take(1, "header profile")
    dictionary = body.take(DICTIONARY_ID_LEN, "dictionary ID") if profile == PROFILE_DICT_SINGLE else b""
    size, tokens = body.varint("original size"), body.varint("window")
    header = _implied(dictionary, {"original_size": size, "window": tokens, "context": 0})
    header_size = body.pos - r.pos
    _validate_header(header)
    if tokens > size:  # every window token stands for at least one byte
        raise ContainerError("windows hold more tokens than the original file has bytes")
    stream = body.blob[body.pos :]
    if not stream:
        raise ContainerError("truncated file (the token stream is empty or missing)")
    sizes = {"header": header_size, "segments": 0, "vectors": 0, "tokens": len(stream), "fallback": 0}
    return Container(header, [(KIND_WINDOW, tokens)], b"", b"", [stream], blob[-CHECKSUM_LEN:], sizes)


def _header_dictionary() -> zstandard.ZstdCompressionDict:
    return zstandard.ZstdCompressionDict(HEADER_DICTIONARY, dict_type=zstandard.DICT_TYPE_RAWCONTENT)


def unpack_header(packed: bytes):
    """The JSON value a header section holds: one zstd frame (against HEADER_DICTIONARY) declaring
    1..MAX_HEADER_BYTES bytes of UTF-8 JSON (checked before anything is allocated); ContainerError otherwise."""
    try:
        declared = zstandard.get_frame_parameters(ZSTD_MAGIC + packed).content_size
    except zstandard.ZstdError as exc:
        raise ContainerError(f"header is not a valid zstd frame ({exc})") from None
    if not 0 < declared <= MAX_HEADER_BYTES:  # also rejects frames without a declared size
        raise ContainerError(f"header must declare 1..{MAX_HEADER_BYTES} bytes of JSON")
    try:
        return json.loads(_unzstd(packed, declared, "header", _header_dictionary()).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ContainerError(f"header is not valid JSON ({type(exc).__name__})") from None


def _parse_segments(table: bytes, window: int) -> list[tuple[int, int]]:
    r, segments = Reader(table), []
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


def _parse_streams(section: bytes, n_windows: int) -> list[bytes]:
    """One non-empty token stream per window: all but the last length-prefixed, the last filling the
    rest of the section."""
    r, streams = Reader(section), []
    for _ in range(n_windows - 1):
        stream = r.section("token stream")
        if not stream:
            raise ContainerError("a window's token stream is empty")
        streams.append(stream)
    if n_windows:
        if r.pos >= len(section):
            raise ContainerError("truncated file (the last token stream is empty or missing)")
        streams.append(section[r.pos :])
    elif section:
        raise ContainerError("tokens section present but no window is stored")
    return streams


def _unzstd(packed: bytes, size: int, what: str, dictionary=None) -> bytes:
    """A section holding one zstd frame (stored without its magic) of exactly ``size`` bytes (empty
    when ``size`` is 0)."""
    if size == 0:
        if packed:
            raise ContainerError(f"{what} section present but nothing is stored in it")
        return b""
    if size > len(packed) * ZSTD_MAX_EXPANSION:
        raise ContainerError(f"the segment table claims more bytes than the {what} section can hold")
    frame = ZSTD_MAGIC + packed
    try:
        params = zstandard.get_frame_parameters(frame)
        if params.content_size != size:
            raise ContainerError(f"{what} size does not match the segment table")
        if params.dict_id != 0:
            raise ContainerError(f"{what} frame names a dictionary")
        data = zstandard.ZstdDecompressor(dict_data=dictionary).decompress(frame, max_output_size=size)
    except zstandard.ZstdError as exc:
        raise ContainerError(f"{what} section is not a valid zstd frame ({exc})") from None
    if len(data) != size:
        raise ContainerError(f"{what} size does not match the segment table")
    return data
