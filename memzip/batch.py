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


def pieces(paths: Iterable[str], sizes: list[int], reader: Callable[[str], bytes] = read) -> Iterator[bytes]:
    """Each file's bytes, read when asked for; its size appended to ``sizes``."""
    for path in paths:
        data = reader(path)
        sizes.append(len(data))
        yield data


def run(kind: str, paths: list[str], mapper: Callable[[Iterable[bytes]], Iterator[bytes]], *, force: bool = False,
        on_file: Callable[[FileResult], None] | None = None) -> Summary:
    """Every file in ``paths`` through ``mapper`` (memzip.parallel: pieces -> results in order), each
    output written atomically to its target as it comes; ``on_file`` is told of each one written."""
    from .files import write_atomically

    targets = [target_for(kind, p) for p in paths]
    for target in targets:
        if os.path.exists(target) and not force:
            raise FileExistsError(errno.EEXIST, "file exists (force=True to overwrite)", target)
    started, sizes, summary = time.monotonic(), [], Summary()
    for i, out in enumerate(mapper(pieces(paths, sizes))):
        write_atomically(targets[i], out, force=force, mode_from=paths[i])
        summary.files.append(FileResult(paths[i], targets[i], sizes[i], len(out)))
        if on_file is not None:
            on_file(summary.files[-1])
    summary.seconds = time.monotonic() - started
    return summary


def compress_files(paths: Iterable[str | os.PathLike], model: str | None = None, settings=None, *, jobs: int = 1,
                   ray: bool | str | None = None, dictionary: str | os.PathLike | None = None,
                   device: str | None = None, force: bool = False, threads: int | None = None) -> Summary:
    """Compress each file to FILE.mz. ``model``: an ID or local path (None: the default); ``settings``:
    memzip.CompressSettings; ``jobs`` workers (0: one per core, or per CPU of the Ray cluster); ``ray``:
    True (MEMZIP_RAY_ADDRESS, or a local cluster) or a cluster address ("auto": the running one);
    ``dictionary``: a .mzd file made by ``memzip train``; ``threads`` per worker (default: shared out)."""
    return _files("compress", paths, model, settings, jobs, ray, dictionary, device, force, threads)


def decompress_files(paths: Iterable[str | os.PathLike], model: str | None = None, *, jobs: int = 1,
                     ray: bool | str | None = None, dictionary: str | os.PathLike | None = None,
                     device: str | None = None, force: bool = False, threads: int | None = None) -> Summary:
    """Restore each FILE.mz to FILE; ``model`` overrides the one each file names (its fingerprint must
    still match); the other arguments as for ``compress_files``."""
    return _files("decompress", paths, model, None, jobs, ray, dictionary, device, force, threads)


def _files(kind, paths, model, settings, jobs, ray, dictionary, device, force, threads) -> Summary:
    from .parallel import WorkerSpec, open_pool

    paths = [os.fspath(p) for p in paths]
    for p in paths:
        target_for(kind, p)  # refuse a wrong suffix before starting workers
    spec = WorkerSpec(model, device, os.fspath(dictionary) if dictionary is not None else None, threads)
    with open_pool(spec, jobs, ray) as pool:
        return run(kind, paths, pool.mapper(kind, settings), force=force)
