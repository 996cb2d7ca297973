"""Framed files: independent .mz containers back to back, then a seek table. Writing and strict reading;
the byte layout is specified in docs/FORMAT.md, *Framed files*.

A framed file holds an input larger than one frame: each frame is a complete container of one piece of
the input, so any frame decodes alone. The seek table (each frame's compressed and original size) and a
fixed-size footer sit at the end, so a reader that can seek finds every frame from the last bytes, as
with zstd's seekable format. Needs neither torch nor the model.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from ..errors import ContainerError
from . import container
from .container import Reader, varint

MAGIC = b"\x89MZF"
FRAMES_VERSION = 1
FOOTER_MAGIC = b"MZF\x8f"  # the file's last 4 bytes
# footer: frame count (u32 LE), table length (u32 LE), the original's checksum (first 4 bytes of its
# SHA-256: frames in the wrong order or missing are found by a whole restore), the table's checksum (4 bytes
# of the SHA-256 of the table and the footer's first 12 bytes), FOOTER_MAGIC
FOOTER = struct.Struct("<II4s4s4s")
FOOTER_LEN = FOOTER.size  # 20
CHECKSUM_LEN = 4

# Bounds that keep a hostile table from making a reader allocate without limit (a frame is read whole).
MIN_FRAMES = 2  # an input of one frame is a plain container: one input, one encoding
MAX_FRAMES = 1 << 24
MAX_FRAME_BYTES = 1 << 30  # original bytes per frame
MAX_ENTRY_BYTES = 2 * 10  # two varints per frame


def is_framed(head: bytes) -> bool:
    """Do these first bytes of a file (4 are enough) start a framed file?"""
    return head[: len(MAGIC)] == MAGIC


@dataclass(frozen=True)
class Frame:
    """One frame: where it sits in the file and which bytes of the original it holds."""

    index: int
    offset: int  # of its container in the framed file
    size: int  # its container's length in bytes
    start: int  # of its piece in the original
    original_size: int  # its piece's length

    @property
    def end(self) -> int:
        return self.start + self.original_size


@dataclass(frozen=True)
class SeekTable:
    frames: list[Frame]
    file_size: int  # of the framed file
    checksum: bytes  # first CHECKSUM_LEN bytes of the SHA-256 of the whole original

    @property
    def original_size(self) -> int:
        return self.frames[-1].end if self.frames else 0

    def overlapping(self, start: int, end: int) -> list[Frame]:
        """The frames holding any byte of [start, end) of the original."""
        return [f for f in self.frames if f.start < end and f.end > start]


def preamble() -> bytes:
    return MAGIC + varint(FRAMES_VERSION)


def original_checksum(sha256) -> bytes:
    """What the footer records of the original, from a hashlib.sha256 object fed the whole original."""
    return sha256.digest()[:CHECKSUM_LEN]


def seek_table(table: bytes, count: int, checksum: bytes) -> bytes:
    """The seek table ``table`` (``count`` frames' varints) and the footer that goes with it, for an
    original whose checksum is ``checksum``."""
    head = struct.pack("<II", count, len(table)) + checksum
    return table + head + hashlib.sha256(table + head).digest()[:CHECKSUM_LEN] + FOOTER_MAGIC


class Writer:
    """Writes a framed file to ``dst`` as frames come: ``add`` each frame (a complete container) with the
    length of its piece, then ``finish`` writes the seek table and footer. Holds only the table."""

    def __init__(self, dst: BinaryIO):
        self.dst, self.table, self.count, self.written = dst, bytearray(), 0, 0
        self._write(preamble())

    def _write(self, data: bytes) -> None:
        self.dst.write(data)
        self.written += len(data)

    def add(self, frame: bytes, original_size: int) -> None:
        if not 1 <= original_size <= MAX_FRAME_BYTES:
            raise ValueError(f"a frame holds 1..{MAX_FRAME_BYTES} bytes of the original")
        if self.count >= MAX_FRAMES:
            raise ValueError(f"more than {MAX_FRAMES} frames: use a larger frame size")
        if not frame.startswith(container.MAGIC):
            raise ValueError("a frame must be a container")
        self._write(frame)
        self.table += varint(len(frame)) + varint(original_size)
        self.count += 1

    def finish(self, checksum: bytes) -> int:
        """Write the seek table and footer (``checksum``: ``original_checksum`` of the whole original);
        returns the framed file's size."""
        if self.count < MIN_FRAMES:
            raise ValueError(f"a framed file holds at least {MIN_FRAMES} frames")
        if len(checksum) != CHECKSUM_LEN:
            raise ValueError(f"the original's checksum is {CHECKSUM_LEN} bytes")
        self._write(seek_table(bytes(self.table), self.count, checksum))
        return self.written


def _read_at(f: BinaryIO, offset: int, n: int) -> bytes:
    f.seek(offset)
    data = f.read(n)
    if len(data) != n:
        raise ContainerError("truncated file (a read ran past the end)")
    return data


def read_table(f: BinaryIO) -> SeekTable:
    """The seek table of the framed file open in ``f`` (seekable), checked against the file: preamble,
    footer, table checksum, canonical varints, limits, and sizes that tile the file exactly."""
    size = f.seek(0, 2)
    head = _read_at(f, 0, min(size, len(MAGIC) + 10))
    if not is_framed(head):
        raise ContainerError("not a framed memzip file (bad magic)")
    r = Reader(head)
    r.pos = len(MAGIC)
    version = r.varint("framed file version")
    if version != FRAMES_VERSION:
        newer = " (written by a newer memzip; upgrade to read it)" if version > FRAMES_VERSION else ""
        raise ContainerError(f"framed file version {version} is not supported{newer}; this memzip reads "
                             f"version {FRAMES_VERSION}")
    first = r.pos
    if size < first + FOOTER_LEN:
        raise ContainerError("truncated file (no room for the seek table's footer)")
    footer = _read_at(f, size - FOOTER_LEN, FOOTER_LEN)
    count, table_len, whole, _checksum, magic = FOOTER.unpack(footer)
    if magic != FOOTER_MAGIC:
        raise ContainerError("framed file is truncated or corrupted (no seek table footer at its end)")
    if not MIN_FRAMES <= count <= MAX_FRAMES:
        raise ContainerError(f"seek table frame count {count} is out of range ({MIN_FRAMES}..{MAX_FRAMES})")
    if not 2 * count <= table_len <= MAX_ENTRY_BYTES * count or first + table_len + FOOTER_LEN > size:
        raise ContainerError("seek table length is out of range")
    table = _read_at(f, size - FOOTER_LEN - table_len, table_len)
    if seek_table(table, count, whole)[-FOOTER_LEN:] != footer:
        raise ContainerError("framed file is corrupted (seek table checksum mismatch)")
    t, frames, offset, start = Reader(table), [], first, 0
    for i in range(count):
        length, original = t.varint("frame size"), t.varint("frame original size")
        if length < len(container.MAGIC) + 1:
            raise ContainerError(f"frame {i + 1}: compressed size {length} is too small")
        if not 1 <= original <= MAX_FRAME_BYTES:
            raise ContainerError(f"frame {i + 1}: original size {original} is out of range (1..{MAX_FRAME_BYTES})")
        frames.append(Frame(i, offset, length, start, original))
        offset, start = offset + length, start + original
    if t.pos != len(table):
        raise ContainerError("seek table holds more than its frames")
    if offset != size - FOOTER_LEN - table_len:
        raise ContainerError("seek table sizes do not add up to the file's size")
    return SeekTable(frames, size, whole)


def frame_bytes(f: BinaryIO, frame: Frame) -> bytes:
    """The container of ``frame``, read from ``f``."""
    return _read_at(f, frame.offset, frame.size)


def read_frame(blob: bytes, frame: Frame) -> container.Container:
    """A frame's container read strictly (``container.read``), its original size checked against the
    seek table; errors name the frame."""
    try:
        c = container.read(blob)
    except ContainerError as exc:
        raise ContainerError(f"frame {frame.index + 1}: {exc}") from None
    if c.header["original_size"] != frame.original_size:
        raise ContainerError(f"frame {frame.index + 1}: its original size does not match the seek table")
    return c


def containers(f: BinaryIO, table: SeekTable) -> Iterator[tuple[Frame, container.Container]]:
    """Every frame of ``table`` read strictly from ``f``, one at a time (for ``memzip info`` and the
    fuzzer): memory for one frame, not the file."""
    for frame in table.frames:
        yield frame, read_frame(frame_bytes(f, frame), frame)
