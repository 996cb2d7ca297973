"""Many files at once: FILE -> FILE.mz (``compress_files``) and FILE.mz -> FILE (``decompress_files``),
each file a piece coded by a pool of workers (memzip.parallel: this process, all the cores here, or a
Ray cluster), the outputs written in input order, each atomically (memzip.files).

Inputs are read only as the workers need them (``pieces``), so memory holds a few files at a time.
Every target is checked before any work: an existing one stops the job unless ``force``. A file that
fails stops the job there: the files before it are written, none after it.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from .errors import MemzipError

SUFFIX = ".mz"


@dataclass(frozen=True)
class FileResult:
    source: str
    target: str
    read: int  # bytes of the input
    written: int  # bytes of the output


@dataclass
class Summary:
    """What a job did: each file, in input order, and the job's wall time."""

    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def read(self) -> int:
        return sum(f.read for f in self.files)

    @property
    def written(self) -> int:
        return sum(f.written for f in self.files)


def target_for(kind: str, path: str) -> str:
    """FILE.mz for compression; FILE for decompressing FILE.mz (anything else is refused)."""
    if kind == "compress":
        return path + SUFFIX
    if not path.endswith(SUFFIX) or len(os.path.basename(path)) == len(SUFFIX):
        raise MemzipError(f"{path}: unknown suffix, expected '{SUFFIX}'")
    return path[: -len(SUFFIX)]


def expand(paths: Iterable[str], kind: str, recursive: bool) -> list[str]:
    """The files a job takes: each path named, and with ``recursive`` every regular file under each named
    directory (sorted; symbolic links are not followed), as gzip -r: for compression those not already
    ending in .mz, for decompression those ending in it."""
    out = []
    for path in paths:
        if recursive and os.path.isdir(path):
            found = []
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    full = os.path.join(root, name)
                    if not os.path.isfile(full) or os.path.islink(full):
                        continue
                    if name.endswith(SUFFIX) == (kind == "decompress"):
                        found.append(full)
            out += found
        else:
            out.append(path)
    return out


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def pieces(kind: str, paths: Iterable[str], frame_size: int, sizes: list[int]) -> Iterator[bytes]:
    """What the workers code, read when asked for: for compression each file's frames (its pieces of at
    most ``frame_size`` bytes, cut as memzip.frames cuts them: a file of one piece is one), for
    decompression each plain container, or each frame of a framed file. Each input's size is appended
    to ``sizes``."""
    from .format import frames as fmt
    from .frames import pieces as cut

    for path in paths:
        with open(path, "rb") as f:
            sizes.append(os.fstat(f.fileno()).st_size)
            if kind == "compress":
                count = 0
                for piece in cut(f, frame_size):
                    count += 1
                    yield piece
                if not count:  # an empty file is one empty piece, as compress_stream sees it
                    yield b""
            elif fmt.is_framed(f.read(len(fmt.MAGIC))):
                table = fmt.read_table(f)
                for frame in table.frames:
                    yield fmt.frame_bytes(f, frame)
            else:
                f.seek(0)
                yield f.read()


def run(kind: str, paths: list[str], mapper: Callable[[Iterable[bytes]], Iterator[bytes]], *, force: bool = False,
        frame_size: int | None = None, targets: list[str | None] | None = None,
        write: Callable[[str, str | None, Callable], None] | None = None,
        on_file: Callable[[FileResult], None] | None = None) -> Summary:
    """Every file in ``paths`` through ``mapper`` (memzip.parallel: pieces -> results in order), frame by
    frame: each output is what one process makes of the file (memzip.frames.compress_stream /
    decompress_stream, their frames coded by the workers), written in input order as it comes,
    atomically to its target (``targets``: default FILE.mz / FILE; ``write(path, target, writer)``
    replaces the writing, e.g. for standard output); ``on_file`` is told of each file done."""
    from . import frames
    from .files import write_atomically

    frame_size = frame_size or frames.DEFAULT_FRAME_SIZE
    targets = targets if targets is not None else [target_for(kind, p) for p in paths]
    for target in targets:
        if target is not None and os.path.exists(target) and not force:
            raise FileExistsError(errno.EEXIST, "file exists (force=True to overwrite)", target)
    if write is None:
        def write(path, target, writer):
            write_atomically(target, writer, force=force, mode_from=path)
    started, sizes, summary = time.monotonic(), [], Summary()
    results = mapper(pieces(kind, paths, frame_size, sizes))

    def from_workers(items):  # this file's pieces, each answered by the next result of the whole job
        for _item in items:
            yield next(results)

    for path, target in zip(paths, targets):
        out = []
        with open(path, "rb") as src:
            if kind == "compress":
                writer = lambda dst: out.append(frames.compress_stream(src, dst, frame_size=frame_size,  # noqa: E731
                                                                        map_frames=from_workers).compressed_size)
            else:
                writer = lambda dst: out.append(frames.decompress_stream(src, dst, map_frames=from_workers))  # noqa: E731
            write(path, target, writer)
        summary.files.append(FileResult(path, target, os.path.getsize(path), out[0]))
        if on_file is not None:
            on_file(summary.files[-1])
    summary.seconds = time.monotonic() - started
    return summary


def compress_files(paths: Iterable[str | os.PathLike], model: str | None = None, settings=None, *, jobs: int = 1,
                   ray: bool | str | None = None, dictionary: str | os.PathLike | None = None,
                   device: str | None = None, force: bool = False, threads: int | None = None,
                   frame_size: int | None = None) -> Summary:
    """Compress each file to FILE.mz (a file over ``frame_size`` bytes, default memzip.frames', framed). ``model``: an ID or local path (None: the default); ``settings``:
    memzip.CompressSettings; ``jobs`` workers (0: one per core, or per CPU of the Ray cluster); ``ray``:
    True (MEMZIP_RAY_ADDRESS, or a local cluster) or a cluster address ("auto": the running one);
    ``dictionary``: a .mzd file made by ``memzip train``; ``threads`` per worker (default: shared out)."""
    return _files("compress", paths, model, settings, jobs, ray, dictionary, device, force, threads, frame_size)


def decompress_files(paths: Iterable[str | os.PathLike], model: str | None = None, *, jobs: int = 1,
                     ray: bool | str | None = None, dictionary: str | os.PathLike | None = None,
                     device: str | None = None, force: bool = False, threads: int | None = None) -> Summary:
    """Restore each FILE.mz to FILE; ``model`` overrides the one each file names (its fingerprint must
    still match); the other arguments as for ``compress_files``."""
    return _files("decompress", paths, model, None, jobs, ray, dictionary, device, force, threads)


def _files(kind, paths, model, settings, jobs, ray, dictionary, device, force, threads, frame_size=None) -> Summary:
    from .parallel import WorkerSpec, open_pool

    paths = [os.fspath(p) for p in paths]
    for p in paths:
        target_for(kind, p)  # refuse a wrong suffix before starting workers
    spec = WorkerSpec(model, device, os.fspath(dictionary) if dictionary is not None else None, threads)
    with open_pool(spec, jobs, ray) as pool:
        return run(kind, paths, pool.mapper(kind, settings), force=force, frame_size=frame_size)
