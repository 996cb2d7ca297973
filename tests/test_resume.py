"""Interrupted compressions: the journal of finished windows, resuming, and what a killed run leaves."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from memzip.format.vectors import VectorSpec
from memzip import CompressSettings, OptimizerSettings, codec, compress, decompress
from memzip.codec import compress_with_report
from memzip.vectors import memory_vectors
from memzip.vectors.journal import Journal
from memzip.vectors.results import WindowResult
from memzip.tiny import TRAINING_TEXT

QUICK = CompressSettings(window=4, optimizer=OptimizerSettings(steps=60, lr=0.1, batch=4), store="always", vectors=VectorSpec("compact"))
IDENTITY = {"input_sha256": "ab" * 32, "settings": {"betas": (0.9, 0.999)}}
CODE_BYTES = 10


def _code(seed: int) -> bytes:
    """A stored code (the journal treats codes as opaque bytes of a fixed size)."""
    return torch.randint(0, 256, (CODE_BYTES,), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8).numpy().tobytes()


def _code_bytes(lm, settings: CompressSettings) -> int:
    return settings.vectors.fitted(lm.hidden_size).code_bytes(lm.hidden_size)


def _journal_with(path, results: dict) -> Journal:
    j = Journal(path, IDENTITY, CODE_BYTES)
    j.open()
    for index, result in results.items():
        j.record(index, result)
    j.close()
    return j


def test_journal_reads_back_exactly_what_was_recorded(tmp_path):
    path = tmp_path / "f.mz.part"
    _journal_with(path, {3: WindowResult(_code(1), 17), 0: WindowResult(None, 60), 5: WindowResult(_code(2), 4)})
    back = Journal(path, IDENTITY, CODE_BYTES)
    assert not back.discarded_stale and sorted(back.done) == [0, 3, 5]
    assert back.done[3].code == _code(1) and back.done[3].steps == 17
    assert back.done[0].code is None and back.done[0].steps == 60


def test_torn_last_record_is_dropped_and_appending_continues(tmp_path):
    path = tmp_path / "f.mz.part"
    _journal_with(path, {0: WindowResult(_code(1), 5), 1: WindowResult(_code(2), 6)})
    blob = path.read_bytes()
    for cut in range(1, 4 + 9 + CODE_BYTES):  # the process died while writing the last record
        path.write_bytes(blob[:-cut])
        back = Journal(path, IDENTITY, CODE_BYTES)
        assert sorted(back.done) == [0]
    back.open()
    back.record(7, WindowResult(_code(3), 9))
    back.close()
    again = Journal(path, IDENTITY, CODE_BYTES)
    assert sorted(again.done) == [0, 7] and again.done[7].code == _code(3)


def test_corrupted_record_stops_the_journal_there(tmp_path):
    path = tmp_path / "f.mz.part"
    _journal_with(path, {0: WindowResult(_code(1), 5), 1: WindowResult(_code(2), 6)})
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0x40  # inside the second record's code
    path.write_bytes(bytes(blob))
    assert sorted(Journal(path, IDENTITY, CODE_BYTES).done) == [0]


@pytest.mark.parametrize("content", [b"", b"MZJ2 {\"input_sha256\": \"other\"}\n", b"garbage\n\x00\x01", b"MZJ2 [[[["])
def test_journal_of_another_run_or_garbage_is_not_used(tmp_path, content):
    path = tmp_path / "f.mz.part"
    path.write_bytes(content)
    j = Journal(path, IDENTITY, CODE_BYTES)
    assert j.done == {} and j.discarded_stale
    j.open()  # starts over
    j.record(0, WindowResult(_code(1), 5))
    j.close()
    assert sorted(Journal(path, IDENTITY, CODE_BYTES).done) == [0]


def test_compress_journals_every_window_and_a_rerun_optimizes_nothing(lm, tmp_path, monkeypatch):
    data = TRAINING_TEXT[:120].encode()
    path = str(tmp_path / "f.mz.part")
    first, counted = compress_with_report(data, lm, QUICK, journal_path=path)
    n = counted.windows
    assert len(Journal(path, memory_vectors.journal_identity(data, lm, codec.resolved_settings(data, lm, QUICK)), _code_bytes(lm, QUICK)).done) == n
    seen = []
    real = memory_vectors.optimize_windows
    monkeypatch.setattr(memory_vectors, "optimize_windows",
                        lambda lm_, windows, *a, **k: seen.append(len(windows)) or real(lm_, windows, *a, **k))
    again, report = compress_with_report(data, lm, QUICK, journal_path=path)
    assert seen == [0] and report.resumed == n
    assert again == first  # same vectors, same steps, same container
    assert decompress(again, lm) == data


def test_interrupted_compress_resumes_from_the_finished_windows(lm, tmp_path, monkeypatch):
    data = TRAINING_TEXT[:160].encode()
    path = str(tmp_path / "f.mz.part")
    real_record = Journal.record
    calls = []

    def record_then_interrupt(self, index, result):
        real_record(self, index, result)
        calls.append(index)
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(Journal, "record", record_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        compress(data, lm, QUICK, journal_path=path)
    monkeypatch.setattr(Journal, "record", real_record)
    assert len(Journal(path, memory_vectors.journal_identity(data, lm, codec.resolved_settings(data, lm, QUICK)), _code_bytes(lm, QUICK)).done) == 3
    blob, report = compress_with_report(data, lm, QUICK, journal_path=path)
    assert report.resumed == 3
    assert decompress(blob, lm) == data


def test_journal_for_other_settings_is_replaced(lm, tmp_path):
    data = TRAINING_TEXT[:60].encode()
    path = str(tmp_path / "f.mz.part")
    compress(data, lm, QUICK, journal_path=path)
    other = CompressSettings(window=5, optimizer=QUICK.optimizer, store="always", vectors=VectorSpec("compact"))
    blob, report = compress_with_report(data, lm, other, journal_path=path)
    assert report.resumed == 0 and decompress(blob, lm) == data


# --- the real command, killed and interrupted in a subprocess --------------------------------------

SLOW = ["--window", "4", "--steps", "60", "--lr", "0.1", "--batch", "1", "-T", "1", "--store", "always",
        "--vectors", "compact"]
RECORD = 9 + 2 + 64 + 4  # journal record of a window stored as a vector (tiny model: compact rank capped at 64)


def _start(tiny_model_dir, text_file):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    cmd = [sys.executable, "-m", "memzip", "c", str(text_file), "--model", tiny_model_dir, *SLOW]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _records(journal) -> int:
    if not journal.exists():
        return 0
    blob = journal.read_bytes()
    return (len(blob) - len(blob.split(b"\n", 1)[0]) - 1) // RECORD


def _wait_for_records(proc, journal, count: int, timeout: float = 120.0) -> None:
    """Until the running process has journaled ``count`` more windows than the journal held."""
    target = _records(journal) + count
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _records(journal) >= target:
            return
        if proc.poll() is not None:
            pytest.fail(f"memzip c finished before it could be interrupted: {proc.stderr.read().decode()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("no journal records appeared")


def _leftovers(directory, name):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(f".{name}"))


def test_signals_leave_no_output_and_a_killed_run_is_resumed(tiny_model_dir, tmp_path):
    text_file = tmp_path / "book.txt"
    original = TRAINING_TEXT[:300].encode()
    text_file.write_bytes(original)
    out, journal = tmp_path / "book.txt.mz", tmp_path / "book.txt.mz.part"

    for sig, code, word in ((signal.SIGINT, 130, b"interrupted"), (signal.SIGTERM, 143, b"terminated")):
        proc = _start(tiny_model_dir, text_file)
        _wait_for_records(proc, journal, 1)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == code and word in err and b"Traceback" not in err
        assert not out.exists() and _leftovers(tmp_path, "book.txt.mz") == []
        assert text_file.read_bytes() == original and journal.exists()

    proc = _start(tiny_model_dir, text_file)
    _wait_for_records(proc, journal, 4)
    proc.kill()  # SIGKILL: no handler runs at all
    proc.wait(timeout=60)
    assert not out.exists() and text_file.read_bytes() == original
    done_before = _records(journal)

    proc = _start(tiny_model_dir, text_file)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()
    assert b"resuming: " in err and not journal.exists()
    resumed = int(err.split(b"resuming: ")[1].split(b" ")[0])
    assert resumed >= done_before >= 6
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    restored = subprocess.run([sys.executable, "-m", "memzip", "x", "-c", str(out), "--model", tiny_model_dir, "-q"],
                              env=env, capture_output=True, check=True).stdout
    assert restored == original
