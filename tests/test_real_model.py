"""Integration tests on the packaged default model (SmolLM2-135M-Instruct), on short texts."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from memzip import CompressSettings, OptimizerSettings, compress, container, decompress
from memzip.codec import stored_vectors
from memzip.codes import VectorSpec
from memzip.decoder import replay
from memzip.errors import ModelMismatchError

pytestmark = pytest.mark.model

# Full bf16 vectors, tried for every window: the paper's setting, in which fresh 16-token windows reliably
# converge (compact codes do so only for a fraction of windows; see the README and bench/results).
SHORT = CompressSettings(window=16, optimizer=OptimizerSettings(steps=200), vectors=VectorSpec("full"), store="always")


@pytest.mark.parametrize(
    "data",
    [
        b"The library opens at nine, but the reading room stays closed until ten.",
        "El tren de las ocho llegó tarde otra vez, y nadie en el andén se sorprendió.".encode(),
    ],
    ids=["english", "spanish"],
)
def test_prose_round_trips_through_memory_vectors(real_lm, data):
    report = []
    blob = compress(data, real_lm, SHORT, report=report)
    assert report[0].vectors >= 1  # real memory tokens, not just the fallback
    assert decompress(blob, real_lm) == data
    # every stored window replays identically with other batch sizes and thread counts, and clears the margin
    c = container.read(blob)
    lengths = [n for kind, n in c.segments if kind == container.KIND_WINDOW]
    ref, ref_gaps = replay(real_lm, stored_vectors(c, real_lm), lengths, c.header["decode_batch"], c.header["prefix_id"])
    assert min(min(g) for g in ref_gaps) >= SHORT.optimizer.margin
    before = torch.get_num_threads()
    try:
        for threads, batch in ((1, 1), (2, 1), (1, len(lengths))):
            torch.set_num_threads(threads)
            tokens, gaps = replay(real_lm, stored_vectors(c, real_lm), lengths, batch, c.header["prefix_id"])
            assert tokens == ref
            assert max(abs(a - b) for g, h in zip(gaps, ref_gaps) for a, b in zip(g, h)) < 0.01
    finally:
        torch.set_num_threads(before)


FRESH = (
    "The ferry to the island leaves twice a day, once at dawn and once after lunch. Most visitors take the "
    "second one, because the harbour cafe serves breakfast until noon and nobody wants to miss it. On windy "
    "days the captain waits in the ticket office, reading the weather report aloud to anyone who asks.\r\n"
)


def test_default_settings_predict_prose_below_zstd_and_xz(real_lm):
    import lzma

    data = FRESH.encode()
    report = []
    blob = compress(data, real_lm, report=report)
    r = report[0]
    assert r.predicted == r.windows >= 1 and r.vectors == 0 and r.fallback_windows == 0
    c = container.read(blob)
    assert c.vector_spec == VectorSpec("none") and c.sizes["vectors"] == 0
    assert len(blob) < min(len(container.zstd_frame(data)), len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)))
    assert decompress(blob, real_lm) == data


def test_a_file_decodes_in_a_process_with_another_thread_count(real_lm):
    """Ranks follow exact logits, which move with the CPU thread count: this text, compressed with 2
    threads, failed its checksum when replayed with 1 (before files recorded the count)."""
    data = (Path(__file__).parent.parent / "bench" / "texts" / "fresh_es.txt").read_bytes()
    blob = compress(data, real_lm, CompressSettings(threads=2))
    assert container.read(blob).header["threads"] == 2
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert decompress(blob, real_lm) == data
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_windows_the_model_cannot_predict_cheaply_become_placeholder_rows(real_lm):
    import base64
    import random

    noise = base64.b64encode(random.Random(7).randbytes(300)).decode()  # ~6 bits per byte, unpredictable
    data = (FRESH + noise + "\n" + FRESH.upper()).encode()
    report = []
    blob = compress(data, real_lm, CompressSettings(window=32), report=report)
    c, r = container.read(blob), report[0]
    assert 0 < r.predicted < r.windows and c.row_lengths.count(0) == r.windows - r.predicted
    assert decompress(blob, real_lm) == data


@pytest.mark.parametrize("settings", [SHORT, CompressSettings(store="always")], ids=["full vectors", "predicted"])
def test_invalid_utf8_nul_and_empty(real_lm, settings):
    data = b"header\x00\x00\xff\xfe binary junk \x80 and then: a sentence in plain English.\r\n"
    assert decompress(compress(data, real_lm, settings), real_lm) == data
    assert decompress(compress(b"", real_lm, settings), real_lm) == b""


def test_file_from_the_real_model_refuses_another_model(real_lm, lm):
    blob = compress(b"A short line of text to remember.", real_lm, SHORT)
    assert container.read(blob).header["model_id"] == "smollm2-135m-instruct"
    with pytest.raises(ModelMismatchError, match="smollm2-135m-instruct"):
        decompress(blob, lm)


def test_cli_on_the_default_model(tmp_path):
    src = tmp_path / "hello.txt"
    src.write_bytes("Bonjour! A café sign, two chairs and a dog. 🙂\n".encode())
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "memzip"]
    subprocess.run(cmd + ["c", str(src), "-q"], check=True, env=env)
    os.rename(src, tmp_path / "orig.txt")
    subprocess.run(cmd + ["x", str(tmp_path / "hello.txt.mz"), "-q"], check=True, env=env)
    assert src.read_bytes() == (tmp_path / "orig.txt").read_bytes()
    info = subprocess.run(cmd + ["info", str(tmp_path / "hello.txt.mz")], check=True, capture_output=True, text=True)
    assert "smollm2-135m-instruct" in info.stdout
