"""Predicted windows (the default, no memory vectors): tokens stored as their ranks under the model."""

import pytest
import torch

from memzip import CompressSettings, codec, compress, container, decompress
from memzip.codes import VectorCode, VectorSpec
from memzip.decoder import greedy_decode, rank_of, rank_tokens, select_rank
from memzip.errors import ContainerError, SettingsError
from memzip.optimizer import OptimizerSettings
from tiny import TRAINING_TEXT

PREDICT = CompressSettings(window=8, store="always")


def test_rank_of_and_select_rank_are_inverse_even_with_ties():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randint(-3, 4, (5, 40), generator=gen).float()  # many exact ties
    greedy = logits.argmax(dim=-1)
    for t in range(40):
        tokens = torch.full((5,), t)
        ranks = rank_of(logits, tokens)
        assert torch.equal(select_rank(logits, ranks, greedy), tokens)
    assert torch.equal(rank_of(logits, greedy), torch.zeros(5, dtype=torch.long))


@pytest.mark.parametrize("with_vectors", [False, True])
@pytest.mark.parametrize("batch", [1, 3, 64])
def test_stored_ranks_regenerate_the_windows(lm, with_vectors, batch):
    ids = lm.tokenizer(TRAINING_TEXT[:200], add_special_tokens=False)["input_ids"]
    windows = [ids[i : i + 9] for i in range(0, len(ids), 9)]
    vectors = None
    if with_vectors:
        code = VectorCode(VectorSpec("full"), lm)
        vectors = code.rebuild(code.quantize(torch.randn(len(windows), lm.hidden_size, generator=torch.Generator().manual_seed(1))))
    ranks, _ = rank_tokens(lm, vectors, windows, batch, lm.prefix_id)
    assert any(r > 0 for row in ranks for r in row)  # the model is not perfect: the ranks carry information
    assert greedy_decode(lm, vectors, [len(w) for w in windows], batch, lm.prefix_id, ranks) == windows


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
    report = []
    blob = compress(data, lm, report=report)
    assert decompress(blob, lm) == data
    c = container.read(blob)
    assert c.header["vectors"] == {"code": "none"} and c.codes == b""
    assert c.header["settings"] == {"rank_margin": codec.DEFAULT_RANK_MARGIN}
    assert report[0].vectors == 0 and report[0].steps == []


def test_predicted_windows_store_ranks_and_beat_raw_on_text_the_model_knows(lm):
    data = TRAINING_TEXT[:300].encode()
    report = []
    blob = compress(data, lm, PREDICT, report=report)
    c = container.read(blob)
    r = report[0]
    assert r.predicted == r.windows == c.window_count > 1 and r.fallback_windows == 0
    assert len(c.ranks) == sum(c.window_lengths) and c.sizes["ranks"] > 0
    assert c.header["stats"]["predicted_windows"] == r.predicted
    assert c.sizes["ranks"] < len(container.zstd_frame(data))  # the tiny model learned this text
    assert decompress(blob, lm) == data


def test_the_whole_file_goes_raw_when_that_is_smaller(lm):
    data = bytes(range(32, 127)) * 3  # no model predicts this; zstd shrinks it to almost nothing
    report = []
    blob = compress(data, lm, CompressSettings(window=8), report=report)
    c = container.read(blob)
    assert c.window_count == 0 and report[0].predicted == 0 and report[0].fallback_windows == report[0].windows
    assert c.row_lengths == []  # nothing to keep batches for
    assert decompress(blob, lm) == data


def test_default_window_grows_with_the_input():
    none, full = VectorSpec("none"), VectorSpec("full")
    assert codec.default_window(full, 10_000) == codec.DEFAULT_WINDOW
    lo, hi = codec.PREDICT_WINDOW_RANGE
    assert codec.default_window(none, 10) == lo
    assert codec.default_window(none, hi * codec.PARALLEL_ROWS) == hi
    assert lo < codec.default_window(none, hi * codec.PARALLEL_ROWS // 2) < hi


def test_a_window_failing_the_proof_becomes_a_placeholder_row_without_ranking_again(lm, monkeypatch):
    import memzip.decoder as decoder

    real_select, real_rank = decoder.select_rank, codec.rank_tokens
    calls, corrupted = [], []

    def counting_rank(*args, **kwargs):
        calls.append(len(args[2]))
        return real_rank(*args, **kwargs)

    def flaky(logits, ranks, greedy):  # the decoder picks a wrong token once, in row 1
        out = real_select(logits, ranks, greedy)
        if not corrupted:
            out[1] = (out[1] + 1) % logits.shape[1]
            corrupted.append(True)
        return out

    monkeypatch.setattr(codec, "rank_tokens", counting_rank)
    monkeypatch.setattr(decoder, "select_rank", flaky)
    data = TRAINING_TEXT[:200].encode()
    report = []
    blob = compress(data, lm, PREDICT, report=report)
    n = report[0].windows
    assert report[0].demoted_by_final_check == 1 and report[0].predicted == n - 1
    assert calls == [n]  # the other windows keep the ranks of the one pass: their batch still has n rows
    assert container.read(blob).row_lengths[1] == 0
    monkeypatch.setattr(decoder, "select_rank", real_select)
    assert decompress(blob, lm) == data


def _count_steps(lm, monkeypatch) -> list[int]:
    """Rows of every model step from now on, as a list that grows."""
    real, steps = type(lm).next_logits, []

    def counting(self, embeds, past):
        steps.append(embeds.shape[0])
        return real(self, embeds, past)

    monkeypatch.setattr(type(lm), "next_logits", counting)
    return steps


def test_predicted_windows_are_ranked_and_proven_in_one_pass(lm, monkeypatch):
    steps = _count_steps(lm, monkeypatch)
    data = TRAINING_TEXT[:200].encode()
    report = []
    blob = compress(data, lm, PREDICT, report=report)
    c = container.read(blob)
    assert report[0].predicted == c.window_count > 1 and report[0].demoted_by_final_check == 0
    assert len(steps) == max(c.window_lengths)  # one batch, replayed once: no second proof replay
    steps.clear()
    assert decompress(blob, lm) == data and len(steps) == max(c.window_lengths)


def test_a_rank_beyond_the_vocabulary_is_refused_before_decoding(lm):
    data = TRAINING_TEXT[:40].encode()
    c = container.read(compress(data, lm, PREDICT))
    c.ranks = [len(lm.tokenizer) + 5] + c.ranks[1:]
    with pytest.raises(ContainerError, match="beyond the vocabulary"):
        decompress(container.write(c), lm)


def test_memory_vector_files_store_all_zero_ranks(lm):
    settings = CompressSettings(window=4, optimizer=OptimizerSettings(steps=60, lr=0.1, batch=8),
                                vectors=VectorSpec("full"), store="always")
    c = container.read(compress(TRAINING_TEXT[:40].encode(), lm, settings))
    assert c.window_count > 0 and set(c.ranks) == {0} and c.sizes["ranks"] <= 4


def _noisy(lm, amplitude: float, monkeypatch):
    """Make every decoding step's logits differ by up to amplitude / 2 (another machine's arithmetic)."""
    real = type(lm).next_logits
    gen = torch.Generator().manual_seed(5)

    def next_logits(self, embeds, past):
        logits, past = real(self, embeds, past)
        return logits + (torch.rand(logits.shape, generator=gen) - 0.5) * amplitude, past

    monkeypatch.setattr(type(lm), "next_logits", next_logits)


def test_a_rank_margin_makes_decoding_tolerate_small_numeric_differences(lm, monkeypatch):
    ids = lm.tokenizer(TRAINING_TEXT[:300], add_special_tokens=False)["input_ids"]
    windows = [ids[i : i + 16] for i in range(0, len(ids), 16)]
    lengths = [len(w) for w in windows]
    loose, _ = rank_tokens(lm, None, windows, 64, lm.prefix_id)
    safe, _ = rank_tokens(lm, None, windows, 64, lm.prefix_id, rank_margin=0.5)
    escaped = sum(r < 0 for row in safe for r in row)
    assert 0 < escaped < sum(lengths) // 2  # some tokens by id, most still by rank
    assert all(r == l or r < 0 for rs, ls in zip(safe, loose) for r, l in zip(rs, ls))
    _noisy(lm, 0.4, monkeypatch)  # differences up to 0.2 < 0.5 / 2
    assert greedy_decode(lm, None, lengths, 64, lm.prefix_id, safe) == windows
    assert greedy_decode(lm, None, lengths, 64, lm.prefix_id, loose) != windows  # ranks alone break


def test_rank_margin_is_recorded_and_round_trips(lm):
    data = TRAINING_TEXT[:200].encode()
    blob = compress(data, lm, CompressSettings(window=8, store="always", rank_margin=0.05))
    c = container.read(blob)
    assert c.header["settings"] == {"rank_margin": 0.05} and min(c.ranks) < 0
    assert decompress(blob, lm) == data


def test_windows_not_worth_their_ranks_become_placeholder_rows_in_the_same_pass(lm, monkeypatch):
    steps = _count_steps(lm, monkeypatch)
    data = TRAINING_TEXT[:300].encode() + bytes(range(32, 127)) * 2  # the model knows the first part only
    report = []
    blob = compress(data, lm, CompressSettings(window=8), report=report)
    c, r = container.read(blob), report[0]
    assert 0 < r.predicted < r.windows and r.not_tried == r.windows - r.predicted
    assert c.row_lengths.count(0) == r.not_tried and len(c.row_lengths) == r.windows
    assert container.KIND_PLACEHOLDER in {kind for kind, _ in c.segments}
    assert len(steps) == 8  # one pass of 8-token windows (one batch): nothing ranked again
    steps.clear()
    assert decompress(blob, lm) == data and len(steps) == max(c.window_lengths)


def test_placeholder_rows_end_with_the_last_batch_that_stores_a_window(lm, monkeypatch):
    monkeypatch.setattr(codec, "decode_batch_for", lambda window: 2)
    data = TRAINING_TEXT[:100].encode() + bytes(range(32, 127)) * 2  # predictable, then not
    report = []
    blob = compress(data, lm, CompressSettings(window=8), report=report)
    c, r = container.read(blob), report[0]
    rows = c.row_lengths
    assert c.header["decode_batch"] == 2 and 0 < r.predicted < r.windows
    last = max(i for i, n in enumerate(rows) if n)
    assert len(rows) == (last // 2 + 1) * 2 < r.windows  # later windows are plain raw, no rows
    assert decompress(blob, lm) == data


def test_replays_run_with_the_thread_count_the_file_records(lm, monkeypatch):
    """CPU kernels split their work by thread count and their logits move with it, so every replay of a
    file (the compressor's ranking pass and the decompressor's) runs with the count in its header."""
    real, seen = type(lm).next_logits, []

    def spying(self, embeds, past):
        seen.append(torch.get_num_threads())
        return real(self, embeds, past)

    monkeypatch.setattr(type(lm), "next_logits", spying)
    data = TRAINING_TEXT[:120].encode()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        blob = compress(data, lm, CompressSettings(window=8, store="always", threads=1))
        assert container.read(blob).header["threads"] == 1 and set(seen) == {1}
        assert torch.get_num_threads() == 2  # restored
        seen.clear()
        assert decompress(blob, lm) == data and set(seen) == {1} and torch.get_num_threads() == 2
        torch.set_num_threads(3)
        seen.clear()
        default = compress(data, lm, PREDICT)  # no count given: the current one, recorded
        assert container.read(default).header["threads"] == 3 and set(seen) == {3}
        torch.set_num_threads(1)
        seen.clear()
        assert decompress(default, lm) == data and set(seen) == {3} and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_thread_counts_outside_the_format_are_refused():
    for bad in (0, container.MAX_THREADS + 1):
        with pytest.raises(SettingsError):
            CompressSettings(threads=bad)
