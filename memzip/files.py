"""Writing files so that no failure or interrupt leaves a partial one: the content goes to a temporary
file (or directory) beside the target, synced, and is renamed into place only when complete; on any
failure the temporary is removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def write_atomically(path: str | os.PathLike, data: bytes | Callable[[BinaryIO], None], *, force: bool = False,
                     mode_from: str | os.PathLike | None = None) -> None:
    """Write ``data`` (bytes, or a function that writes to the open binary file) to ``path`` through a
    temporary file in the same directory: synced to disk, given the permission bits of ``mode_from``
    (when named and readable), then renamed into place. An existing ``path`` is replaced only with
    ``force`` (FileExistsError otherwise, checked when the content is complete)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode_from is not None:
            with contextlib.suppress(OSError):
                os.chmod(tmp, os.stat(mode_from).st_mode & 0o7777)
        if not force and os.path.exists(path):
            raise FileExistsError(errno.EEXIST, "file exists", path)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def build_directory(target: str | os.PathLike, build: Callable[[Path], None]) -> Path:
    """Fill the directory ``target`` through ``build(temporary directory)``, renamed into place when
    complete. Concurrent builders are fine: when another one got there first, its directory is kept."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        build(tmp)
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not target.is_dir():
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
