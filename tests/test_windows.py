from hypothesis import given, settings
from hypothesis import strategies as st

from memzip.engine.tokens import detokenize, hf_token_bytes
from memzip.windows import segment, split_utf8
from memzip.tiny import tiny_tokenizer

SAMPLES = [
    b"",
    b"plain ascii text",
    "CRLF\r\nline two\r\n".encode(),
    "emoji 🙂👍🏽 and ñ, ü, 中文".encode(),
    b"\xff\xfe invalid start",
    b"nul\x00bytes\x00",
    b"trailing partial \xe2\x82",
    "a\u00a0b  leading and trailing spaces  ".encode(),
    b"\xed\xa0\x80 encoded surrogate",
    "literal <|im_end|> special token text".encode(),
]


@given(st.binary(max_size=300))
def test_split_utf8_partitions_into_valid_and_invalid_runs(data):
    runs = split_utf8(data)
    assert b"".join(r for _, r in runs) == data
    for ok, run in runs:
        assert run
        if ok:
            run.decode("utf-8")
        else:  # ASCII is always valid UTF-8, so invalid runs hold only high bytes
            assert all(b >= 0x80 for b in run)
    assert all(a[0] != b[0] for a, b in zip(runs, runs[1:]))  # runs alternate


def _check_segments(data, window):
    tok = tiny_tokenizer()
    table = hf_token_bytes(tok)
    segs = segment(data, tok, table, window)
    assert b"".join(s.data for s in segs) == data
    for s in segs:
        assert s.data
        if s.is_window:
            assert 1 <= len(s.tokens) <= window
            assert detokenize(table, s.tokens) == s.data
    assert all(a.is_window or b.is_window for a, b in zip(segs, segs[1:]))  # raw spans are merged
    return segs


def test_segments_of_samples():
    for data in SAMPLES:
        for window in (1, 3, 16):
            _check_segments(data, window)


def test_text_becomes_windows_and_invalid_bytes_stay_raw():
    segs = _check_segments(b"hello world, hello world.\xff\xfeand more text", 4)
    raw = [s.data for s in segs if not s.is_window]
    assert b"\xff\xfe" in b"".join(raw)
    assert sum(len(s.tokens) for s in segs if s.is_window) >= 6


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=120).map(lambda t: t.encode("utf-8"))), st.integers(1, 20))
def test_segments_partition_any_input(data, window):
    _check_segments(data, window)
