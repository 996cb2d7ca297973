"""Round trips through compress()/decompress() on the tiny seeded model."""

import hashlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from memzip.format.vectors import VectorSpec
from memzip import CompressSettings, OptimizerSettings, compress, decompress
from memzip import codec
from memzip.codec import compress_with_report
from memzip.format import container
from memzip.settings import DEFAULT_LEVEL, LEVEL_CONTEXT
from memzip.format.container import KIND_WINDOW
from memzip.errors import ContainerError, IntegrityError, ModelLoadError, ModelMismatchError
from memzip.engine import ENGINE_VERSION
from memzip.model import LanguageModel
from memzip.tiny import TRAINING_TEXT, tiny_lm, tiny_tokenizer

# Settings under which the tiny random model memorizes some short windows (and quickly gives up on others).
QUICK = CompressSettings(window=4, optimizer=OptimizerSettings(steps=60, lr=0.1, batch=8), store="always", vectors=VectorSpec("compact"))
CHEAP = CompressSettings(window=4, optimizer=OptimizerSettings(steps=2, lr=0.3, batch=8), store="always", vectors=VectorSpec("compact"))

SAMPLES = {
    "empty": b"",
    "english": b"The quick brown fox jumps over the lazy dog.",
    "spanish": "El veloz murciélago hindú comía feliz cardillo y kiwi.".encode(),
    "crlf": b"line one\r\nline two\r\n\r\n",
    "emoji": "smile 🙂, thumbs 👍🏽, 中文, ñ".encode(),
    "invalid": b"\xff\xfe\x00\x00 binary \x80\x81 then text \xc3",
    "nul": b"a\x00b\x00c",
    "spaces": b"   leading and trailing   ",
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_round_trip_samples(lm, name):
    data = SAMPLES[name]
    blob, report = compress_with_report(data, lm, QUICK)
    assert decompress(blob, lm) == data
    r = report
    assert r.vectors + r.fallback_windows == r.windows


def test_vectors_are_used_and_verified(lm):
    data = b"The quick brown fox jumps over the lazy dog. The quick brown fox."
    blob, report = compress_with_report(data, lm, QUICK)
    c = container.read(blob)
    assert report.vectors >= 1
    assert c.window_count == report.vectors
    assert c.header["model_fingerprint"] == lm.fingerprint
    assert c.checksum == hashlib.sha256(data).digest()[:4]
    assert decompress(blob, lm) == data


@settings(max_examples=25, deadline=None)
@given(st.one_of(st.binary(max_size=120), st.text(max_size=60).map(str.encode)))
def test_round_trip_any_bytes(lm, data):
    assert decompress(compress(data, lm, CHEAP), lm) == data


def test_long_input_round_trips(lm):
    data = ("Compression is prediction; prediction is compression. 🙂\r\n" * 40).encode() + bytes(range(256))
    assert decompress(compress(data, lm, CHEAP), lm) == data


def test_different_weights_are_refused_before_decoding(lm):
    blob = compress(b"The quick brown fox jumps.", lm, QUICK)
    assert container.read(blob).window_count >= 1
    model = tiny_lm().float_model  # same name, same architecture; one weight changed in its last bit
    with torch.no_grad():
        w = model.model.norm.weight
        w[0] = torch.nextafter(w[0], torch.tensor(float("inf")))
    other = LanguageModel.from_hf("tiny-test-model", model, tiny_tokenizer(), 0)
    assert other.fingerprint != lm.fingerprint
    with pytest.raises(ModelMismatchError, match="tiny-test-model"):
        decompress(blob, other)


def test_missing_model_names_what_the_file_needs(lm):
    blob = compress(b"The quick brown fox jumps.", lm, QUICK)
    assert container.read(blob).window_count >= 1
    with pytest.raises(ModelLoadError, match="needs model 'tiny-test-model'"):
        decompress(blob, "/nonexistent/model/dir")


def test_all_raw_file_needs_no_model(lm):
    blob = compress(b"\xff\xfe\xfd", lm, QUICK)
    assert container.read(blob).window_count == 0
    assert decompress(blob) == b"\xff\xfe\xfd"  # the recorded model 'tiny-test-model' is never loaded


def _tampered(blob: bytes, change) -> bytes:
    c = container.read(blob)
    change(c)
    return container.write(c)


def test_wrong_vector_fails_the_checksum_and_returns_nothing(lm):
    blob = compress(b"The quick brown fox jumps over the lazy dog.", lm, QUICK)
    assert container.read(blob).window_count >= 1

    def negate(c):  # still well-formed codes, but they decode to other tokens
        assert c.vector_spec.code == "compact"
        size = c.vector_spec.code_bytes(c.header["hidden_size"])
        codes = bytearray(c.codes)
        for start in range(0, len(codes), size):
            q = torch.frombuffer(bytearray(codes[start + 2 : start + size]), dtype=torch.int8)
            codes[start + 2 : start + size] = (-q).numpy().tobytes()
        c.codes = bytes(codes)

    with pytest.raises((IntegrityError, ContainerError)):  # the streams decode otherwise under other vectors
        decompress(_tampered(blob, negate), lm)


def test_wrong_recorded_checksum_is_an_integrity_error(lm):
    blob = compress(b"\xff abc", lm, CHEAP)
    with pytest.raises(IntegrityError):
        decompress(_tampered(blob, lambda c: setattr(c, "checksum", bytes(4))), lm)


def test_window_lengths_are_stored(lm):
    data = b"The quick brown fox jumps over the lazy dog."
    c = container.read(compress(data, lm, QUICK))
    lengths = [n for kind, n in c.segments if kind == KIND_WINDOW]
    assert lengths and all(1 <= n <= QUICK.window for n in lengths)


def test_verify_decodes_the_finished_file_and_refuses_a_wrong_one(lm, monkeypatch):
    """CompressSettings(verify=True) decodes the container as decompress does before returning it."""
    import memzip.codec as codec

    data = TRAINING_TEXT[:120].encode()
    calls = []
    real = codec.decode_windows

    def counted(*args, **kwargs):
        calls.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr(codec, "decode_windows", counted)
    assert decompress(compress(data, lm, CompressSettings(window=8, verify=True)), lm) == data
    assert len(calls) == 2  # once inside compress, once here

    def wrong(*args, **kwargs):
        out = real(*args, **kwargs)
        out[0] = [(out[0][0] + 1) % lm.vocab_size] + out[0][1:]
        return out

    monkeypatch.setattr(codec, "decode_windows", wrong)
    with pytest.raises(IntegrityError):
        compress(data, lm, CompressSettings(window=8, verify=True))
    compress(data, lm, CompressSettings(window=8))  # without verify, no decoding at all


def test_another_model_is_refused_and_the_message_names_the_needed_one(lm):
    blob = compress(b"The quick brown fox jumps.", lm, QUICK)
    assert container.read(blob).window_count >= 1
    other = tiny_lm(seed=1, model_id="some-other-model")
    with pytest.raises(ModelMismatchError, match="needs model 'tiny-test-model' with fingerprint"):
        decompress(blob, other)


def test_engine_version_is_recorded_and_another_one_is_refused(lm):
    blob = compress(b"The quick brown fox.", lm, CompressSettings(window=8, store="always"))
    c = container.read(blob)
    assert c.header["engine"] == ENGINE_VERSION and c.window_count >= 1
    assert "environment" not in c.header and "threads" not in c.header and "decode_batch" not in c.header
    with pytest.raises(ModelMismatchError, match="engine 'exact-0'"):
        decompress(_tampered(blob, lambda c: c.header.update(engine="exact-0")), lm)


class _CountingTokenizer:
    """A tokenizer that counts the texts it is given."""

    def __init__(self, tokenizer):
        self.tokenizer, self.texts = tokenizer, []

    def __call__(self, text, **kwargs):
        self.texts.append(text)
        return self.tokenizer(text, **kwargs)

    def __len__(self):
        return len(self.tokenizer)


def test_each_piece_of_work_is_done_once_per_compression(monkeypatch):
    """One tokenization, one zstd pass over the whole input, one settings resolution, every candidate
    file built once and the kept one read back once (with --verify too: decoding reuses that read)."""
    import memzip.vectors.optimizer as optimizer

    lm = tiny_lm()
    counting = _CountingTokenizer(lm.tokenizer)
    lm._tokenizer = counting
    data = TRAINING_TEXT[:300].encode()
    frames, writes, reads = [], [], []
    real_frame, real_write, real_read = container.zstd_frame, container.write, container.read
    monkeypatch.setattr(container, "zstd_frame", lambda d, *a: frames.append(d) or real_frame(d, *a))
    monkeypatch.setattr(container, "write", lambda *a, **k: writes.append(a[0]) or real_write(*a, **k))
    monkeypatch.setattr(container, "read", lambda blob: reads.append(blob) or real_read(blob))
    blob, report = compress_with_report(data, lm, CompressSettings(verify=True))
    assert counting.texts == [data.decode()]
    assert report.predicted >= 1 and len(writes) == 2  # the model-coded file and the all-raw one
    assert reads == [blob] and frames.count(data) == 1  # the estimate's zstd frame is the raw file's fallback
    natives = []
    monkeypatch.setattr(optimizer, "bf16_is_native", lambda device: natives.append(device) or False)
    counting.texts.clear()
    _, report = compress_with_report(data[:40], lm, QUICK)
    assert natives == [lm.device] and report.settings.optimizer.precision == "fp32"  # resolved once, recorded
    assert counting.texts == [data[:40].decode()]


def test_a_default_compression_imports_and_resolves_nothing_for_vectors(lm):
    _, report = compress_with_report(TRAINING_TEXT[:100].encode(), lm)
    assert report.settings.optimizer.precision == "auto"  # nothing to optimize: nothing resolved
    assert report.settings.window == len(lm.tokenizer(TRAINING_TEXT[:100], add_special_tokens=False)["input_ids"])


def test_decompress_container_takes_a_container_already_read_and_loads_through_the_loader(lm):
    blob = compress(TRAINING_TEXT[:60].encode(), lm, CompressSettings(store="always"))
    c = container.read(blob)
    asked = []
    assert codec.decompress_container(c, None, load=lambda spec: asked.append(spec) or lm) == TRAINING_TEXT[:60].encode()
    assert asked == ["tiny-test-model"]  # the model the file names
    asked.clear()
    assert codec.decompress_container(c, "elsewhere", load=lambda spec: asked.append(spec) or lm)
    assert asked == ["elsewhere"]


def test_later_rows_start_after_the_shared_context(lm):
    """Rows after the first are coded after the first row's first `context` tokens (the level's, or
    --context), decode exactly, and cost fewer bits than rows that start from nothing."""
    data = (TRAINING_TEXT * 4).encode()
    shared, plain = (compress(data, lm, CompressSettings(window=300, context=c, store="always")) for c in (100, 0))
    a, b = container.read(shared), container.read(plain)
    assert a.header["context"] == 100 and b.header["context"] == 0
    assert a.window_lengths[0] == 300 and set(a.window_lengths[1:-1]) == {200}
    assert decompress(shared, lm) == data and decompress(plain, lm) == data
    assert a.sizes["tokens"] / a.window_count < b.sizes["tokens"] / b.window_count
    level = container.read(compress(data, lm))  # the default level's rows and context
    assert level.header["context"] == LEVEL_CONTEXT[DEFAULT_LEVEL] and level.window_count >= 2


def test_a_first_window_stored_raw_gives_a_file_without_shared_context(lm):
    """The decoder takes the shared context from the first window entry: when the first window is not
    worth storing by the model, the windows are coded again without one."""
    import base64
    import random

    noise = base64.b64encode(random.Random(3).randbytes(120))
    data = noise + (TRAINING_TEXT * 3).encode()
    blob, report = compress_with_report(data, lm, CompressSettings(window=150, context=40))
    c = container.read(blob)
    assert c.segments[0][0] == container.KIND_RAW and c.window_count >= 1 and c.header["context"] == 0
    assert decompress(blob, lm) == data
