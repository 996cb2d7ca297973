"""Integration tests on the packaged default model (SmolLM2-135M-Instruct), on short texts."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from memzip import CompressSettings, OptimizerSettings, compress, decompress
from memzip.codec import compress_with_report
from memzip.format import container
from memzip.decoder import decode_windows
from memzip.format.vectors import VectorSpec
from memzip.vectors.codes import stored_vectors
from memzip.vectors.greedy import replay
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
    blob, report = compress_with_report(data, real_lm, SHORT)
    assert report.vectors >= 1  # real memory tokens, not just the fallback
    assert decompress(blob, real_lm) == data
    # every stored window is regenerated greedily by the engine, with the margin asked for
    c = container.read(blob)
    vectors = stored_vectors(c, real_lm)
    tokens = decode_windows(real_lm, c.window_lengths, None, vectors)
    replays = replay(real_lm, tokens, vectors)
    assert all(r.ranks == [0] * len(r.ranks) and r.lead >= SHORT.optimizer.margin for r in replays)


FRESH = (
    "The ferry to the island leaves twice a day, once at dawn and once after lunch. Most visitors take the "
    "second one, because the harbour cafe serves breakfast until noon and nobody wants to miss it. On windy "
    "days the captain waits in the ticket office, reading the weather report aloud to anyone who asks.\r\n"
)


def test_default_settings_predict_prose_below_zstd_and_xz(real_lm):
    import lzma

    data = FRESH.encode()
    blob, report = compress_with_report(data, real_lm)
    r = report
    assert r.predicted == r.windows >= 1 and r.vectors == 0 and r.fallback_windows == 0
    c = container.read(blob)
    assert c.vector_spec == VectorSpec("none") and c.sizes["vectors"] == 0
    assert len(blob) < min(len(container.zstd_frame(data)), len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)))
    assert decompress(blob, real_lm) == data


# The packaged model's engine: weights converted from the GGUF file's own codes and tables built by
# exact construction, so the fingerprint and the logits of a fixed input are the same bits on every
# machine, torch and transformers release. A change here is a new engine version and file format.
ENGINE_FINGERPRINT = "aaf3e199c718a616e2f32543c199a3621b03c8b84d57258e257e833f2f85492c"
LOGITS_SHA256 = "eb124fb80271ccaf1b3e2ef85d602d7b2ec5b6b8bc2b00f29f936ba145cdb2a1"


def _fixed_logits_digest(lm) -> str:
    import hashlib

    ids = torch.tensor([[lm.prefix_id] + [(i * 7919) % lm.vocab_size for i in range(1, 32)]])  # no tokenizer involved
    e = lm.engine
    logits = e.logits(e.forward(e.embed(ids), e.new_cache(1, 32)))
    return hashlib.sha256(logits.numpy().tobytes()).hexdigest()


def test_the_packaged_engine_is_the_pinned_bits(real_lm):
    assert real_lm.fingerprint == ENGINE_FINGERPRINT
    assert _fixed_logits_digest(real_lm) == LOGITS_SHA256


def test_a_file_decodes_in_a_process_with_baseline_kernels_and_one_thread(real_lm, tmp_path):
    """Compressed here (native CPU level, this process's threads), decoded in a fresh process with
    torch's and oneDNN's kernels restricted to baseline x86-64 and one thread."""
    data = (Path(__file__).parent.parent / "bench" / "texts" / "fresh_es.txt").read_bytes()
    mz = tmp_path / "es.mz"
    mz.write_bytes(compress(data, real_lm))
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default", ONEDNN_MAX_CPU_ISA="SSE41", MEMZIP_ISA="baseline")
    subprocess.run([sys.executable, "-m", "memzip", "x", str(mz), "-T", "1", "-q"], check=True, env=env)
    assert (tmp_path / "es").read_bytes() == data


def test_windows_the_model_cannot_predict_cheaply_are_stored_raw(real_lm):
    import base64
    import random

    noise = base64.b64encode(random.Random(7).randbytes(300)).decode()  # ~6 bits per byte, unpredictable
    data = (FRESH + noise + "\n" + FRESH.upper()).encode()
    blob, report = compress_with_report(data, real_lm, CompressSettings(window=32))
    c, r = container.read(blob), report
    assert 0 < r.predicted < r.windows and c.window_count == r.predicted
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


def test_the_c_engine_and_the_reference_give_the_packaged_models_distributions(real_lm):
    """Every token frequency of 32 positions (1.5 million exact integer divisions), C against PyTorch."""
    from memzip.engine import Engine

    ids = torch.tensor([[real_lm.prefix_id] + [(i * 7919) % real_lm.vocab_size for i in range(1, 32)]])
    outs = []
    for engine in (real_lm.engine, Engine(real_lm.engine.weights, "cpu", "torch")):
        hidden = engine.forward(engine.embed(ids), engine.new_cache(1, 32))
        rows = torch.arange(32)
        outs.append((engine.frequencies(hidden, rows), engine.intervals(hidden, rows, ids[0])))
    assert torch.equal(outs[0][0], outs[1][0]) and outs[0][1] == outs[1][1]
