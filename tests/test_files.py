"""Atomic writes: a file or directory appears complete or not at all, and never replaces one unasked."""

import os
import stat

import pytest

from memzip.files import build_directory, write_atomically


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_writes_bytes_or_what_a_writer_writes(tmp_path):
    target = tmp_path / "out.bin"
    write_atomically(target, b"first")
    assert target.read_bytes() == b"first"
    write_atomically(target, lambda f: f.write(b"second"), force=True)
    assert target.read_bytes() == b"second" and _leftovers(tmp_path) == []


def test_refuses_to_replace_a_file_unless_forced(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        write_atomically(target, b"new")
    assert target.read_bytes() == b"precious" and _leftovers(tmp_path) == []


def test_a_failure_leaves_neither_output_nor_temporary(tmp_path):
    target = tmp_path / "out.bin"

    def failing(f):
        f.write(b"half of it")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, failing)
    assert not target.exists() and _leftovers(tmp_path) == []


def test_copies_the_permission_bits_it_is_asked_to(tmp_path):
    source = tmp_path / "in.txt"
    source.write_bytes(b"x")
    os.chmod(source, 0o640)
    write_atomically(tmp_path / "out.mz", b"y", mode_from=source)
    assert stat.S_IMODE(os.stat(tmp_path / "out.mz").st_mode) == 0o640
    write_atomically(tmp_path / "other.mz", b"y", mode_from=tmp_path / "missing")  # no such file: default mode
    assert (tmp_path / "other.mz").read_bytes() == b"y"


def test_directories_are_built_aside_and_renamed_into_place(tmp_path):
    target = tmp_path / "cache" / "model"
    assert build_directory(target, lambda d: (d / "weights").write_bytes(b"w")) == target
    assert (target / "weights").read_bytes() == b"w"
    # a second builder finds the directory there: its own is dropped, the first one's kept
    assert build_directory(target, lambda d: (d / "weights").write_bytes(b"other")) == target
    assert (target / "weights").read_bytes() == b"w" and _leftovers(target.parent) == []

    def failing(d):
        (d / "half").write_bytes(b"h")
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError):
        build_directory(tmp_path / "cache" / "broken", failing)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["model"]
