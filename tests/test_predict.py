"""Predicted windows (the default, no memory vectors): tokens coded with the model's probabilities."""

import pytest
import torch

from memzip import CompressSettings, compress, decompress, settings
from memzip.codec import compress_with_report
from memzip.format import container
from memzip.format.vectors import VectorSpec
from memzip.engine.forward import Engine, rank_of
from memzip.errors import ContainerError, SettingsError
from memzip.settings import OptimizerSettings
from memzip.strategies import model_coded
from memzip.tiny import TRAINING_TEXT, tiny_lm

PREDICT = CompressSettings(window=8, store="always")


def test_ranks_order_the_vocabulary_lower_ids_first_on_ties():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randint(-3, 4, (5, 40), generator=gen).double()  # many exact ties
    ranks = torch.stack([rank_of(logits, torch.full((5,), t)) for t in range(40)], dim=1)
    for row in range(5):
        assert sorted(ranks[row].tolist()) == list(range(40))  # a permutation
        order = sorted(range(40), key=lambda t: (-logits[row, t].item(), t))
        assert [ranks[row, t].item() for t in order] == list(range(40))
    assert torch.equal(rank_of(logits, logits.argmax(dim=-1)), torch.zeros(5, dtype=torch.long))


@pytest.mark.parametrize(
    "data",
    [
        TRAINING_TEXT[:150].encode(),
        "línea uno\r\nzweite Zeile — ünïcödé ☃ 🎉\r\n".encode(),
        b"text \xff\xfe then \x00 bytes \x80 and more text after them.",
        b"",
        b"a",
    ],
)
def test_default_settings_round_trip_anything(lm, data):
    blob, report = compress_with_report(data, lm)
    assert decompress(blob, lm) == data
    c = container.read(blob)
    assert c.header["vectors"] == {"code": "none"} and c.codes == b""
    assert c.header["settings"] == {}
    assert report.vectors == 0 and report.steps == []


def test_predicted_windows_store_token_streams_and_beat_raw_on_text_the_model_knows(lm):
    data = TRAINING_TEXT[:300].encode()
    blob, report = compress_with_report(data, lm, PREDICT)
    c = container.read(blob)
    r = report
    assert r.predicted == r.windows == c.window_count > 1 and r.fallback_windows == 0
    assert len(c.streams) == c.window_count and c.sizes["tokens"] > 0
    assert c.sizes["tokens"] < len(container.zstd_frame(data))  # the tiny model learned this text
    assert decompress(blob, lm) == data


def test_the_whole_file_goes_raw_when_that_is_smaller(lm):
    data = bytes(range(32, 127)) * 3  # no model predicts this; zstd shrinks it to almost nothing
    blob, report = compress_with_report(data, lm, CompressSettings(window=8))
    c = container.read(blob)
    assert c.window_count == 0 and report.predicted == 0 and report.fallback_windows == report.windows
    assert c.segments == [(container.KIND_RAW, len(data))]
    assert decompress(blob, lm) == data


def test_levels_plan_rows_of_at_most_their_length_after_a_shared_context():
    for level, longest in settings.LEVEL_ROWS.items():
        assert settings.row_plan(10, level) == (10, 0)  # one row holds a short file whole
        for tokens in (longest + 1, 3 * longest - 1, 10_000, 50_000):
            window, context = settings.row_plan(tokens, level)
            later = window - context
            rows = 1 + -(-(tokens - window) // later)
            assert context == settings.LEVEL_CONTEXT[level] and rows >= 2
            assert later <= longest and window <= settings.MAX_ROW
            assert window + (rows - 2) * later < tokens <= window + (rows - 1) * later  # no empty row
    assert settings.row_plan(settings.SPLIT_TOKENS, 7) == (settings.SPLIT_TOKENS, 0)  # one row up to the split
    assert settings.row_plan(settings.SPLIT_TOKENS + 1, 7)[1] == settings.LEVEL_CONTEXT[7]
    assert settings.row_plan(8192, 9) == (8192, 0)
    assert [settings.LEVEL_ROWS[k] for k in sorted(settings.LEVEL_ROWS)] == sorted(settings.LEVEL_ROWS.values())
    with pytest.raises(SettingsError):
        CompressSettings(level=0)


def _count_forwards(monkeypatch) -> list[int]:
    """Positions of every engine evaluation from now on, as a growing list."""
    real, calls = Engine.forward, []

    def counting(self, x, cache):
        calls.append(x.shape[1])
        return real(self, x, cache)

    monkeypatch.setattr(Engine, "forward", counting)
    return calls


def test_compression_evaluates_windows_all_at_once_and_decompression_one_token_at_a_time(lm, monkeypatch):
    calls = _count_forwards(monkeypatch)
    data = TRAINING_TEXT[:200].encode()
    blob, report = compress_with_report(data, lm, PREDICT)
    c = container.read(blob)
    assert report.predicted == c.window_count > 1
    assert calls == [max(c.window_lengths)]  # one evaluation of every window's positions, no replay
    calls.clear()
    assert decompress(blob, lm) == data and len(calls) == max(c.window_lengths)


def test_a_stream_that_is_not_the_encoders_is_refused(lm):
    """Padding a window's stream decodes the same tokens, but no encoder writes it: refused."""
    data = TRAINING_TEXT[:40].encode()
    c = container.read(compress(data, lm, PREDICT))
    c.streams[0] = c.streams[0] + b"\x00"
    with pytest.raises(ContainerError, match="not what the encoder writes"):
        decompress(container.write(c), lm)


def test_memory_vector_files_code_their_tokens_given_the_vectors(lm):
    settings = CompressSettings(window=4, optimizer=OptimizerSettings(steps=60, lr=0.1, batch=8),
                                vectors=VectorSpec("full"), store="always")
    c = container.read(compress(TRAINING_TEXT[:40].encode(), lm, settings))
    # every vector regenerates its window greedily, so its tokens are the likeliest: short streams
    assert c.window_count > 0 and all(len(s) <= 2 for s in c.streams)


def test_windows_not_worth_their_streams_are_stored_raw(lm):
    data = TRAINING_TEXT[:300].encode() + bytes(range(32, 127)) * 2  # the model knows the first part only
    blob, report = compress_with_report(data, lm, CompressSettings(window=8))
    c, r = container.read(blob), report
    assert 0 < r.predicted < r.windows and r.not_tried == r.windows - r.predicted
    assert c.window_count == r.predicted and {kind for kind, _ in c.segments} == {container.KIND_WINDOW, container.KIND_RAW}
    assert decompress(blob, lm) == data


def test_thread_counts_change_nothing_in_the_file_or_the_output(lm):
    """The engine's arithmetic does not depend on the thread count: the same file either way, and any
    count decodes it."""
    data = TRAINING_TEXT[:160].encode()
    before = torch.get_num_threads()
    try:
        blobs = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            blobs.append(compress(data, lm, PREDICT))
        assert blobs[0] == blobs[1] == blobs[2]
        for threads in (1, 3):
            torch.set_num_threads(threads)
            assert decompress(blobs[0], lm) == data
    finally:
        torch.set_num_threads(before)


def test_files_agree_between_kernel_implementations(lm):
    """A file made with the C kernels decodes with the PyTorch reference, and the other way round."""
    data = TRAINING_TEXT[:150].encode()
    c_lm, t_lm = tiny_lm(kernels="c"), tiny_lm(kernels="torch")
    blob = compress(data, c_lm, PREDICT)
    assert compress(data, t_lm, PREDICT) == blob
    assert decompress(blob, t_lm) == data and decompress(blob, c_lm) == data


def test_binary_input_is_stored_raw_after_a_short_probe(lm, monkeypatch):
    import random

    rng = random.Random(5)
    noise = bytes(rng.randrange(256) for _ in range(6000))  # valid UTF-8 runs in it become windows
    text = (TRAINING_TEXT * 4).encode()
    coded: list[int] = []
    real = model_coded.code_windows

    def counted(lm_, windows, *args, **kwargs):
        coded.append(sum(len(w) for w in windows))
        return real(lm_, windows, *args, **kwargs)

    monkeypatch.setattr(model_coded, "code_windows", counted)
    blob, report = compress_with_report(noise, lm, CompressSettings(window=64))
    assert decompress(blob, lm) == noise
    assert coded == [model_coded.PROBE_TOKENS] and report.predicted == 0  # only the probe ran
    coded.clear()
    assert decompress(compress(text, lm, CompressSettings(window=64)), lm) == text
    assert coded[0] == model_coded.PROBE_TOKENS and len(coded) == 2  # text passes the probe: the full pass runs
