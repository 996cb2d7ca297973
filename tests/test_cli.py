"""The memzip command, run in-process on the tiny model saved as a local model directory."""

import os
import subprocess
import sys

import pytest

from memzip.format import container
from memzip.cli import main

FAST = ["--window", "4", "--steps", "40", "--lr", "0.1", "--store", "always", "--vectors", "compact", "-q"]


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "note.txt"
    path.write_bytes("The quick brown fox jumps over the lazy dog.\r\n\xff🙂".encode("utf-8", "surrogateescape") + b"\xff\x00")
    return path


def run(*args):
    return main([str(a) for a in args])


def test_compress_then_extract_keeps_input_and_restores_bytes(tiny_model_dir, text_file, tmp_path):
    original = text_file.read_bytes()
    assert run("c", text_file, "--model", tiny_model_dir, *FAST) == 0
    mz = tmp_path / "note.txt.mz"
    assert mz.exists() and text_file.read_bytes() == original  # input kept
    os.rename(text_file, tmp_path / "kept.txt")
    assert run("x", mz, "--model", tiny_model_dir, "-q") == 0
    assert text_file.read_bytes() == original
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_existing_output_is_not_overwritten_without_force(tiny_model_dir, text_file, tmp_path, capsys):
    (tmp_path / "note.txt.mz").write_bytes(b"precious")
    assert run("c", text_file, "--model", tiny_model_dir, *FAST) == 1
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "note.txt.mz").read_bytes() == b"precious"
    assert run("c", text_file, "--model", tiny_model_dir, "-f", *FAST) == 0
    assert container.read((tmp_path / "note.txt.mz").read_bytes())


def test_output_option_and_stdout(tiny_model_dir, text_file, tmp_path, capsysbinary):
    out = tmp_path / "other.mz"
    assert run("c", text_file, "-o", out, "--model", tiny_model_dir, *FAST) == 0
    capsysbinary.readouterr()
    assert run("x", out, "-c", "--model", tiny_model_dir, "-q") == 0
    assert capsysbinary.readouterr().out == text_file.read_bytes()


def _bad_files(blob: bytes) -> dict:
    import gzip
    import random

    import zstandard

    def flip(offset):
        bad = bytearray(blob)
        bad[offset] ^= 0x10
        return bytes(bad)

    names = ("segments", "vectors", "tokens", "fallback")
    starts = {"header": 6, **{n: o + size for n, (o, size) in zip(names, container.section_offsets(blob))},
              "checksum": len(blob) - container.TRAILER_LEN - container.CHECKSUM_LEN,
              "trailer": len(blob) - container.TRAILER_LEN}
    newer = bytearray(blob)
    newer[4] = container.FORMAT_VERSION + 1
    return {
        "empty": b"",
        "random bytes": random.Random(0).randbytes(5000),
        "gzip renamed": gzip.compress(b"hello world" * 50),
        "zstd renamed": zstandard.ZstdCompressor().compress(b"hello world" * 50),
        "newer version": bytes(newer),
        "truncated at the fallback": blob[: starts["fallback"]],
        "truncated mid-vectors": blob[: starts["vectors"] + 7],
        "truncated by one byte": blob[:-1],
        **{f"flipped bit in {name}": flip(start + 1) for name, start in starts.items()},
    }


def test_bad_files_fail_cleanly_and_write_nothing(tiny_model_dir, text_file, tmp_path, capsys):
    """Each: exit 1, one line on stderr naming the problem, no output and no temporary file."""
    assert run("c", text_file, "--model", tiny_model_dir, *FAST) == 0
    blob = (tmp_path / "note.txt.mz").read_bytes()
    assert container.read(blob).fallback  # the sample has a fallback section to damage
    (tmp_path / "note.txt.mz").unlink()
    text_file.unlink()
    for name, bad in _bad_files(blob).items():
        mz = tmp_path / "bad.mz"
        mz.write_bytes(bad)
        capsys.readouterr()
        assert run("x", mz, "--model", tiny_model_dir) == 1, name
        err = capsys.readouterr().err
        assert err.startswith("memzip: ") and err.count("\n") == 1 and "Traceback" not in err, (name, err)
        assert any(word in err for word in ("corrupted", "truncated", "not a memzip", "version")), (name, err)
        assert sorted(os.listdir(tmp_path)) == ["bad.mz"], name


@pytest.mark.parametrize(
    "args, message",
    [
        (["c", "missing.txt"], "No such file"),
        (["x", "plain.txt"], "unknown suffix"),
        (["info", "plain.txt"], "not a memzip file"),
        (["c", "plain.txt", "--bits", "9"], "--bits must be 2..8"),
        (["c", "plain.txt", "--rank", "0"], "--rank must be at least 1"),
        (["c", "plain.txt", "--lr", "0"], "--lr must be positive"),
        (["c", "plain.txt", "--threads", "0"], "--threads must be at least 1"),
        (["x", "plain.txt.mz", "-T", "0"], "--threads must be at least 1"),
    ],
)
def test_errors_are_one_line(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plain.txt").write_text("hello")
    assert run(*args) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_unwritable_output_directory(tiny_model_dir, text_file, tmp_path, capsys):
    assert run("c", text_file, "-o", tmp_path / "no" / "such" / "dir.mz", "--model", tiny_model_dir, *FAST) == 1
    assert "output directory does not exist" in capsys.readouterr().err


def test_info_describes_the_file(tiny_model_dir, text_file, tmp_path, capsys):
    assert run("c", text_file, "--model", tiny_model_dir, *FAST) == 0
    capsys.readouterr()
    assert run("info", tmp_path / "note.txt.mz") == 0
    out = capsys.readouterr().out
    assert os.path.abspath(tiny_model_dir) in out
    assert f"{len(text_file.read_bytes())} bytes" in out and "ratio" in out and "as vectors" in out
    assert "raw bytes:" in out and "optimizer steps: median" in out
    assert "compact codes, rank 64, 4-bit, basis embedding-pca-v2" in out  # rank 256 capped at the tiny width


def test_full_vectors_and_the_default_store_policy(tiny_model_dir, text_file, tmp_path, capsys):
    full = [a for a in FAST if a not in ("-q", "compact")] + ["full"]
    assert run("c", text_file, "-o", tmp_path / "full.mz", "--model", tiny_model_dir, *full) == 0
    summary = capsys.readouterr().err
    assert "vectors" in summary and "not tried" not in summary
    assert run("info", tmp_path / "full.mz") == 0
    assert "full bf16 vectors" in capsys.readouterr().out
    assert run("c", text_file, "-o", tmp_path / "default.mz", "--model", tiny_model_dir) == 0
    summary = capsys.readouterr().err
    assert " predicted, " in summary and " vectors, " not in summary
    assert container.read((tmp_path / "full.mz").read_bytes()).header["settings"]["precision"] in ("fp32", "bf16")
    assert run("c", text_file, "-o", tmp_path / "fp32.mz", "--model", tiny_model_dir, "--precision", "fp32", "-q",
               "--vectors", "full", "--steps", "5") == 0
    assert container.read((tmp_path / "fp32.mz").read_bytes()).header["settings"]["precision"] == "fp32"
    assert run("info", tmp_path / "default.mz") == 0
    out = capsys.readouterr().out
    assert "tokens coded with the model's probabilities" in out
    assert "engine:          exact-2" in out and "decoding rows" not in out and "threads" not in out
    assert run("c", text_file, "-o", tmp_path / "one.mz", "--model", tiny_model_dir, "--threads", "1", "-q") == 0
    assert (tmp_path / "one.mz").read_bytes() == (tmp_path / "default.mz").read_bytes()  # same file, any count
    assert run("c", text_file, "-o", tmp_path / "checked.mz", "--model", tiny_model_dir, "--verify", "-q") == 0
    assert (tmp_path / "checked.mz").read_bytes() == (tmp_path / "default.mz").read_bytes()
    for name in ("full.mz", "default.mz"):
        assert run("x", tmp_path / name, "-o", tmp_path / (name + ".out"), "--model", tiny_model_dir, "-q") == 0
        assert (tmp_path / (name + ".out")).read_bytes() == text_file.read_bytes()



def test_console_script_in_a_subprocess(tiny_model_dir, text_file, tmp_path):
    """No traceback reaches the user, and stdin/stdout streaming works end to end."""
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    cmd = [sys.executable, "-m", "memzip"]
    blob = subprocess.run(cmd + ["c", "-", "--model", tiny_model_dir, *FAST], input=text_file.read_bytes(),
                          capture_output=True, env=env, check=True).stdout
    restored = subprocess.run(cmd + ["x", "-", "--model", tiny_model_dir, "-q"], input=blob,
                              capture_output=True, env=env, check=True).stdout
    assert restored == text_file.read_bytes()
    bad = subprocess.run(cmd + ["x", "-", "-q"], input=b"garbage", capture_output=True, env=env)
    assert bad.returncode == 1 and bad.stdout == b"" and b"Traceback" not in bad.stderr


@pytest.mark.parametrize("how, code", [("keyboard", 130), ("sigterm", 143)])
def test_interrupted_extract_writes_nothing(tiny_model_dir, text_file, tmp_path, monkeypatch, capsys, how, code):
    """Ctrl-C or SIGTERM while decoding: exit 128+signal, no output and no temporary file left."""
    import signal
    import time

    from memzip import codec

    assert run("c", text_file, "--model", tiny_model_dir, *FAST) == 0
    mz = tmp_path / "note.txt.mz"
    blob = mz.read_bytes()
    text_file.unlink()

    def interrupted(*args, **kwargs):
        if how == "keyboard":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM was not delivered")

    monkeypatch.setattr(codec, "decompress_container", interrupted)
    try:
        assert run("x", mz, "--model", tiny_model_dir, "-q") == code
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert "no output written" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["note.txt.mz"] and mz.read_bytes() == blob


def test_extract_with_another_thread_count(tiny_model_dir, text_file, tmp_path, capsys):
    """The thread count is a speed setting: a file decodes with any count (once recorded by format 7)."""
    assert run("c", text_file, "--model", tiny_model_dir, "-T", "2", "-q") == 0
    mz = tmp_path / "note.txt.mz"
    text_file.unlink()
    assert run("x", mz, "--model", tiny_model_dir, "-T", "1") == 0
    assert "warning" not in capsys.readouterr().err and text_file.exists()


def test_gzip_style_invocations(tiny_model_dir, text_file, tmp_path, capsys, monkeypatch):
    from memzip import cli

    assert cli.gzip_style(["a.txt", "-k"]) == ["c", "a.txt", "-k"]
    assert cli.gzip_style(["-d", "a.txt.mz"]) == ["x", "a.txt.mz"] == cli.gzip_style(["a.txt.mz", "--decompress"])
    assert cli.gzip_style(["info", "-d"]) == ["info", "-d"] and cli.gzip_style(["--version"]) == ["--version"]
    original = text_file.read_bytes()
    monkeypatch.setattr(cli, "ESTIMATE_ABOVE_S", 0)  # every job announces its estimate
    assert run(text_file, "-k", "-v", "--model", tiny_model_dir, "--window", "4", "--store", "always") == 0
    err = capsys.readouterr().err
    assert "expect roughly" in err and "sections: header" in err
    os.rename(text_file, tmp_path / "kept.txt")
    assert run("-d", tmp_path / "note.txt.mz", "--model", tiny_model_dir) == 0
    assert text_file.read_bytes() == original
    assert "expect roughly" in capsys.readouterr().err


def _count_loads(monkeypatch) -> list:
    """(spec, device) of every model load from now on."""
    import memzip.model as model

    real, calls = model.load_model, []

    def counting(spec=None, device=None, progress=print):
        calls.append((spec, device))
        return real(spec, device=device, progress=progress)

    monkeypatch.setattr(model, "load_model", counting)
    return calls


def test_one_model_load_per_command_on_the_device_asked_for(tiny_model_dir, tmp_path, monkeypatch):
    from memzip.tiny import TRAINING_TEXT

    texts = {tmp_path / "a.txt": TRAINING_TEXT[:80].encode(), tmp_path / "b.txt": TRAINING_TEXT[90:200].encode()}
    for path, data in texts.items():
        path.write_bytes(data)
    calls = _count_loads(monkeypatch)
    assert run("c", *texts, "--model", tiny_model_dir, "--device", "cpu", "--store", "always", "-q") == 0
    assert calls == [(tiny_model_dir, "cpu")]
    packed = [p.with_name(p.name + ".mz") for p in texts]
    assert all(container.read(p.read_bytes()).window_count >= 1 for p in packed)  # decoding needs the model
    for model_args in (["--model", tiny_model_dir], []):  # --model, or the model each file names
        calls.clear()
        for path in texts:
            path.unlink(missing_ok=True)
        assert run("x", *packed, *model_args, "--device", "cpu", "-q") == 0
        assert calls == [(tiny_model_dir if model_args else os.path.abspath(tiny_model_dir), "cpu")]
        assert all(path.read_bytes() == data for path, data in texts.items())


def test_extract_reads_each_input_once_and_loads_no_model_for_a_raw_file(tiny_model_dir, tmp_path, monkeypatch):
    raw = tmp_path / "raw.bin"
    raw.write_bytes(b"\xff\xfe\xfd\x00")
    assert run("c", raw, "--model", tiny_model_dir, "-q") == 0
    assert container.read((tmp_path / "raw.bin.mz").read_bytes()).window_count == 0
    raw.unlink()
    calls, reads, real_read = _count_loads(monkeypatch), [], container.read
    monkeypatch.setattr(container, "read", lambda blob: reads.append(len(blob)) or real_read(blob))
    assert run("x", tmp_path / "raw.bin.mz", "-q") == 0
    assert raw.read_bytes() == b"\xff\xfe\xfd\x00" and calls == [] and len(reads) == 1


def test_the_estimate_follows_the_decoders_batches(monkeypatch):
    import argparse

    from memzip import cli, rows

    args = argparse.Namespace(command="x")
    c = container.Container({}, [(container.KIND_WINDOW, 4096)] * 6, b"", b"")
    # six rows of 4,096 tokens: the decoder steps 4 rows (16,384 positions) together, then 2
    assert rows.decoding_batches(c.window_lengths) == [[0, 1, 2, 3], [4, 5]]
    monkeypatch.setattr(cli, "ESTIMATE_ABOVE_S", 0)
    expected = 4096 * (cli.STEP_S + 4 * cli.STEP_S_PER_ROW) + 4096 * (cli.STEP_S + 2 * cli.STEP_S_PER_ROW)
    assert cli._estimate(args, b"", c) == f"expect roughly {cli._duration(expected)} on a 2-core CPU (restoring)"
    assert cli._estimate(args, b"", container.Container({}, [(container.KIND_RAW, 9)], b"", b"x" * 9)) is None


def test_small_files_of_one_command_are_coded_together_and_each_is_what_it_is_alone(tiny_model_dir, tmp_path, capsys):
    from memzip.tiny import TRAINING_TEXT

    names = [tmp_path / f"f{i}.txt" for i in range(5)]
    for i, path in enumerate(names):
        path.write_bytes(TRAINING_TEXT[40 * i : 40 * i + 60 + 25 * i].encode())
    assert run("c", *names, "--model", tiny_model_dir, "--store", "always", "-q") == 0
    together = [p.with_name(p.name + ".mz").read_bytes() for p in names]
    for path, blob in zip(names, together):
        assert run("c", path, "-o", tmp_path / "alone.mz", "-f", "--model", tiny_model_dir, "--store", "always", "-q") == 0
        assert (tmp_path / "alone.mz").read_bytes() == blob
    originals = [p.read_bytes() for p in names]
    for p in names:
        p.unlink()
    bad = bytearray(together[3])
    bad[-7] ^= 0x10  # inside the last token stream: found only by decoding
    names[3].with_name(names[3].name + ".mz").write_bytes(bytes(bad))
    assert run("x", *[p.with_name(p.name + ".mz") for p in names], "--model", tiny_model_dir, "-q") == 1
    assert "memzip:" in capsys.readouterr().err
    assert [p.read_bytes() for p in names[:3]] == originals[:3] and not names[3].exists() and not names[4].exists()
