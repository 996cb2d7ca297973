"""Streaming compression into framed files, streaming decompression, and restoring a byte range.

``compress_stream`` reads its input one piece at a time (a piece ends at the last newline before
``frame_size`` bytes, or at ``frame_size`` when there is none) and compresses each piece into its own
container, written out as it comes; an input of at most one frame becomes exactly the container
``codec.compress`` makes of it, anything larger a framed file (memzip/format/frames.py, docs/FORMAT.md
*Framed files*). ``decompress_stream`` reads the seek table, then restores frame after frame;
``restore_range`` decodes only the frames that hold the bytes asked for. Memory is bounded by a frame,
never the input or the output (a plain container is still read whole).

Who compresses or restores the frames is pluggable: ``map_frames`` is an *ordered* map, a callable
taking an iterable of inputs (pieces of the input, or frames) and returning an iterator of outputs
(frames, or restored pieces) in the same order, consuming its iterable lazily. The default works in
this process; a process pool or Ray can do the same, bound to the same model, settings and dictionary.
"""

from __future__ import annotations

import hashlib
import io
from collections import deque
from dataclasses import dataclass, field
from itertools import chain
from typing import BinaryIO, Callable, Iterable, Iterator

from . import codec
from .errors import ContainerError, IntegrityError, MemzipError, RangeError, SettingsError
from .format import container
from .format import frames as fmt
from .format.frames import is_framed  # noqa: F401 - part of this module's API
from .progress import Progress
from .settings import CompressSettings

# Original bytes per frame. Larger frames give the model more context per row's neighbours and less
# per-frame overhead (~15-30 bytes a container, ~3 bytes of table); smaller ones make range restores
# and parallel work finer. 1 MiB is a first choice, not a measurement (to be measured).
DEFAULT_FRAME_SIZE = 1 << 20

MapFrames = Callable[[Iterable[bytes]], Iterator[bytes]]


@dataclass
class StreamReport:
    """What ``compress_stream`` wrote: one container (``frames`` 0) or a framed file of ``frames``
    frames; ``reports``: each container's CompressReport when compressed in this process (none when
    ``map_frames`` did the work)."""

    frames: int
    original_size: int
    compressed_size: int
    reports: list[codec.CompressReport] = field(default_factory=list)


def _fill(src: BinaryIO, buf: bytes, n: int) -> bytes:
    """``buf`` extended from ``src`` to ``n`` bytes, or fewer at the end of the input."""
    parts = [buf]
    have = len(buf)
    while have < n:
        chunk = src.read(n - have)
        if not chunk:
            break
        parts.append(chunk)
        have += len(chunk)
    return b"".join(parts)


def pieces(src: BinaryIO, frame_size: int) -> Iterator[bytes]:
    """The input read lazily in pieces of at most ``frame_size`` bytes, each but the last ending at the
    last newline of its first ``frame_size`` bytes, or at ``frame_size`` without one. The cut depends on
    the input only, never on how reads return."""
    if not 1 <= frame_size <= fmt.MAX_FRAME_BYTES:
        raise SettingsError(f"frame size must be 1..{fmt.MAX_FRAME_BYTES} bytes")
    buf = b""
    while True:
        buf = _fill(src, buf, frame_size + 1)  # one byte more: is there anything after this frame?
        if len(buf) <= frame_size:
            if buf:
                yield buf
            return
        cut = buf.rfind(b"\n", 0, frame_size) + 1 or frame_size
        yield buf[:cut]
        buf = buf[cut:]


def compress_stream(src: BinaryIO, dst: BinaryIO, model=None, settings: CompressSettings = CompressSettings(),
                    dictionary=None, frame_size: int = DEFAULT_FRAME_SIZE, map_frames: MapFrames | None = None,
                    progress: Progress | None = None, journal_path: str | None = None) -> StreamReport:
    """Compress what ``src`` holds into ``dst``: one container when the input is at most ``frame_size``
    bytes (exactly ``codec.compress``'s; ``journal_path`` applies to it alone), else a framed file whose
    frames are written as ``map_frames`` returns them (default: ``codec.compress_with_report`` here).
    ``model``: a loaded LanguageModel, or an ID/path loaded once."""
    progress = progress or Progress()
    split = pieces(src, frame_size)
    first = next(split, b"")
    second = next(split, None)
    lm = codec._model(model, progress) if map_frames is None else model
    if second is None:  # one container, exactly codec.compress's
        if map_frames is None:
            blob, report = codec.compress_with_report(first, lm, settings, progress, journal_path, dictionary)
        else:
            blob, report = next(iter(map_frames(iter([first]))), b""), None
            if not _compresses(blob, container.original_checksum(first)):
                raise SettingsError("map_frames: the container is not the compression of its input")
        dst.write(blob)
        return StreamReport(0, len(first), len(blob), [report] if report else [])
    out = StreamReport(0, 0, 0)
    if map_frames is None:
        def map_frames(items):
            for piece in items:
                blob, report = codec.compress_with_report(piece, lm, settings, progress, dictionary=dictionary)
                out.reports.append(report)
                yield blob
    pending: deque = deque()  # (size, checksum) of each piece handed out, until its frame returns
    whole = hashlib.sha256()

    def handed_out():
        for piece in chain((first, second), split):
            pending.append((len(piece), container.original_checksum(piece)))
            whole.update(piece)
            yield piece

    writer = fmt.Writer(dst)
    for blob in map_frames(handed_out()):
        if not pending:
            raise SettingsError("map_frames returned more frames than it was given pieces")
        size, checksum = pending.popleft()
        if not _compresses(blob, checksum):
            raise SettingsError(f"map_frames: frame {writer.count + 1} is not the compression of its piece")
        try:
            writer.add(blob, size)
        except ValueError as exc:
            raise SettingsError(f"frame size: {exc}") from None
        out.original_size += size
    if pending:
        raise SettingsError("map_frames returned fewer frames than it was given pieces")
    out.compressed_size, out.frames = writer.finish(fmt.original_checksum(whole)), writer.count
    return out


def _compresses(blob: bytes, checksum: bytes) -> bool:
    """Is ``blob`` a container of the piece whose original checksum is ``checksum`` (what a map returned)?"""
    return blob.startswith(container.MAGIC) and container.read(blob).checksum == checksum


def _cached_loader(progress: Progress):
    """``load(spec)`` for codec: each model loaded once per call."""
    from .model import load_model

    loaded: dict = {}

    def load(spec):
        if spec not in loaded:
            loaded[spec] = load_model(spec, progress=progress.message)
        return loaded[spec]

    return load


def _restored(f: BinaryIO, table: fmt.SeekTable, frames: list[fmt.Frame], model, dictionary,
              map_frames: MapFrames | None, progress: Progress, load) -> Iterator[tuple[fmt.Frame, bytes]]:
    """Each of ``frames`` (in order) with its restored piece, checked against the seek table."""
    blobs = (fmt.frame_bytes(f, frame) for frame in frames)
    if map_frames is None:
        load = load or _cached_loader(progress)

        def map_frames(items):
            for blob, frame in zip(items, frames):  # the map is ordered: the i-th blob is frames[i]
                c = fmt.read_frame(blob, frame)
                try:
                    yield codec.decompress_container(c, model, progress, load=load, dictionary=dictionary)
                except MemzipError as exc:  # the same error, naming the frame
                    raise type(exc)(f"frame {frame.index + 1}: {exc}") from None
    restored = map_frames(blobs)
    for frame in frames:
        piece = next(restored, None)
        if piece is None or len(piece) != frame.original_size:
            raise ContainerError(f"frame {frame.index + 1}: restored size does not match the seek table")
        yield frame, piece


def _head(f: BinaryIO) -> bytes:
    f.seek(0)
    head = f.read(len(fmt.MAGIC))
    f.seek(0)
    return head


def decompress_stream(src: BinaryIO, dst: BinaryIO, model=None, dictionary=None, map_frames: MapFrames | None = None,
                      progress: Progress | None = None, load=None) -> int:
    """Restore the file open in ``src`` (seekable: a framed file or a plain container) into ``dst``,
    frame by frame (each frame's checksum is checked before its bytes are written, the whole original's
    before the last frame's); returns the bytes written. ``map_frames`` maps frames (containers) to restored pieces; ``load`` as for
    ``codec.decompress_container`` (default: each model loaded once)."""
    progress = progress or Progress()
    if not is_framed(_head(src)):
        blob = src.read()
        c = container.read(blob)
        if map_frames is None:
            out = codec.decompress_container(c, model, progress, load=load or _cached_loader(progress),
                                             dictionary=dictionary)
        else:  # the map's workers decode and check it; its size is checked here too
            out = next(iter(map_frames(iter([blob]))), None)
            if out is None or len(out) != c.header["original_size"] or container.original_checksum(out) != c.checksum:
                raise IntegrityError("map_frames: the restored file does not match its checksum; nothing written")
        dst.write(out)
        return len(out)
    table = fmt.read_table(src)
    written, whole = 0, hashlib.sha256()
    for _frame, piece in _restored(src, table, table.frames, model, dictionary, map_frames, progress, load):
        whole.update(piece)
        if written + len(piece) == table.original_size and fmt.original_checksum(whole) != table.checksum:
            raise IntegrityError("the frames do not make up the original (its checksum does not match); "
                                 "the last frame not written")
        dst.write(piece)
        written += len(piece)
    return written


def range_pieces(src: BinaryIO, start: int, end: int | None, model=None, dictionary=None,
                 map_frames: MapFrames | None = None, progress: Progress | None = None, load=None) -> Iterator[bytes]:
    """Bytes [start, end) of the original (``end`` None: to its end) in pieces, decoding only the frames
    that hold them; RangeError (before any decoding) for a range outside the original."""
    progress = progress or Progress()
    framed = is_framed(_head(src))
    if framed:
        table = fmt.read_table(src)
        size = table.original_size
    else:
        c = container.read(src.read())
        size = c.header["original_size"]
    end = size if end is None else end
    if not 0 <= start <= end:
        raise RangeError(f"range {start}:{end} is not a range (0 <= START <= END)")
    if end > size:
        raise RangeError(f"range {start}:{end} ends past the original's {size} bytes")
    return _range(src, table if framed else None, None if framed else c, start, end, model, dictionary, map_frames,
                  progress, load)


def _range(src, table, c, start, end, model, dictionary, map_frames, progress, load) -> Iterator[bytes]:
    if start == end:
        return
    if table is None:
        out = codec.decompress_container(c, model, progress, load=load or _cached_loader(progress),
                                         dictionary=dictionary)
        yield out[start:end]
        return
    wanted = table.overlapping(start, end)
    for frame, piece in _restored(src, table, wanted, model, dictionary, map_frames, progress, load):
        yield piece[max(start - frame.start, 0) : end - frame.start]


def restore_range(src: BinaryIO, start: int, end: int | None, model=None, dictionary=None,
                  map_frames: MapFrames | None = None, progress: Progress | None = None, load=None) -> bytes:
    """Bytes [start, end) of the original of the file open in ``src`` (seekable), decoding only the
    frames that overlap them (a plain container is decoded whole)."""
    return b"".join(range_pieces(src, start, end, model, dictionary, map_frames, progress, load))


def compress_bytes(data: bytes, model=None, settings: CompressSettings = CompressSettings(), dictionary=None,
                   frame_size: int = DEFAULT_FRAME_SIZE, map_frames: MapFrames | None = None) -> bytes:
    """``compress_stream`` of bytes in memory, to bytes (tests and small callers)."""
    out = io.BytesIO()
    compress_stream(io.BytesIO(data), out, model, settings, dictionary, frame_size, map_frames)
    return out.getvalue()
