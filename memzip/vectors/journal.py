"""Resumable compression: a journal of finished windows kept beside the output until it is complete.

Optimizing a window is the expensive part of compression (minutes for a large file), so every window
is appended to the journal the moment it is finished -- verified vector or given up -- and flushed to
disk. A compression that is interrupted, killed or crashes leaves the journal behind; the next run on
the same input, model and settings skips the windows it holds. A journal is used only when its
identity (the input's SHA-256, the model's fingerprint, the resolved settings) matches, and only up to
its last record whose CRC holds. Its codes decide how well their windows compress, never whether they
decode: each kept window's tokens are coded again given its vector, and the finished container is read
back strictly and must reassemble to the input before it is written (``--verify`` also decodes it as
the decompressor does).

Layout: one line ``MZJ2 <identity JSON>\\n``, then records of ``<u32 index, u32 steps, u8 has_code,
[the window's stored vector code, a fixed number of bytes], u32 CRC-32 of the record>``. A torn last
record (the process died mid-write) fails its CRC and is dropped, along with anything after it.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

from .results import WindowResult

MAGIC = b"MZJ2 "
_RECORD = struct.Struct("<IIB")
_CRC = struct.Struct("<I")


class Journal:
    """Finished windows of one compression, identified by input, model and settings."""

    def __init__(self, path: str | os.PathLike, identity: dict, code_bytes: int):
        self.path = Path(path)
        self.identity = json.loads(json.dumps(identity, sort_keys=True))  # as it reads back from disk
        self.code_bytes = code_bytes  # the identity names the vector code, so this is fixed per journal
        self.done: dict[int, WindowResult] = {}
        self.discarded_stale = False  # a journal for another input/model/settings was replaced
        self._valid_length: int | None = None  # bytes of a matching journal up to its last intact record
        self._file = None
        self._load()

    def _load(self) -> None:
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return
        line, sep, rest = blob.partition(b"\n")
        try:
            same = sep and line.startswith(MAGIC) and json.loads(line[len(MAGIC):]) == self.identity
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            same = False
        if not same:
            self.discarded_stale = True
            return
        pos = 0
        while pos + _RECORD.size <= len(rest):
            index, steps, has_code = _RECORD.unpack_from(rest, pos)
            end = pos + _RECORD.size + (self.code_bytes if has_code == 1 else 0)
            if has_code not in (0, 1) or end + _CRC.size > len(rest):
                break
            (crc,) = _CRC.unpack_from(rest, end)
            if crc != zlib.crc32(rest[pos:end]):
                break
            code = bytes(rest[pos + _RECORD.size : end]) if has_code else None
            self.done[index] = WindowResult(code, steps, last=code)
            pos = end + _CRC.size
        self._valid_length = len(line) + 1 + pos

    def open(self) -> None:
        """Start appending (rewriting the file when it was absent, stale or ends in a torn record)."""
        if self._valid_length is not None:
            self._file = open(self.path, "r+b")
            self._file.truncate(self._valid_length)
            self._file.seek(self._valid_length)
        else:
            self._file = open(self.path, "wb")
            self._file.write(MAGIC + json.dumps(self.identity, sort_keys=True).encode() + b"\n")
            self._sync()

    def record(self, index: int, result: WindowResult) -> None:
        if result.code is not None and len(result.code) != self.code_bytes:
            raise ValueError("stored code has the wrong size for this journal")
        body = _RECORD.pack(index, result.steps, int(result.code is not None)) + (result.code or b"")
        self._file.write(body + _CRC.pack(zlib.crc32(body)))
        self._sync()
        self.done[index] = result

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
