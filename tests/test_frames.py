"""Framed files: independent frames, the seek table, streaming compression and restoring, byte ranges."""

import hashlib
import io
import os
import struct
import subprocess
import sys
import tracemalloc

import pytest

from memzip import codec, frames
from memzip.cli import main
from memzip.errors import ContainerError, IntegrityError, RangeError, SettingsError
from memzip.format import container
from memzip.format import frames as fmt
from memzip.tiny import TRAINING_TEXT

# lines of the tiny model's text: pieces are cut at newlines
TEXT = "\n".join(TRAINING_TEXT[i : i + 70] for i in range(0, len(TRAINING_TEXT), 70)).encode() + b"\n"
FRAME = 300


@pytest.fixture(scope="module")
def framed(lm):
    return frames.compress_bytes(TEXT, lm, frame_size=FRAME)


def _restore(blob, lm, **kwargs) -> bytes:
    out = io.BytesIO()
    assert frames.decompress_stream(io.BytesIO(blob), out, lm, **kwargs) == len(out.getvalue())
    return out.getvalue()


def test_round_trip_over_several_frames(lm, framed):
    table = fmt.read_table(io.BytesIO(framed))
    assert framed.startswith(fmt.MAGIC) and framed.endswith(fmt.FOOTER_MAGIC)
    assert len(table.frames) >= 3 and table.original_size == len(TEXT) and table.file_size == len(framed)
    sizes = [f.original_size for f in table.frames]
    assert max(sizes) <= FRAME and sum(sizes) == len(TEXT)
    assert all(TEXT[f.end - 1 : f.end] == b"\n" for f in table.frames)  # every cut at a newline
    for f in table.frames:  # each frame is the container compress() makes of its piece
        assert framed[f.offset : f.offset + f.size] == codec.compress(TEXT[f.start : f.end], lm)
    assert _restore(framed, lm) == TEXT


def test_an_input_of_one_frame_is_todays_container(lm):
    for data in (b"", TEXT[:FRAME], TEXT[:FRAME - 7]):
        assert frames.compress_bytes(data, lm, frame_size=FRAME) == codec.compress(data, lm)
        assert _restore(codec.compress(data, lm), lm) == data
    assert fmt.is_framed(frames.compress_bytes(TEXT[: FRAME + 1], lm, frame_size=FRAME))


def test_pieces_do_not_depend_on_how_reads_return():
    class Trickle(io.RawIOBase):  # a pipe that returns 1..3 bytes per read
        def __init__(self, data):
            self.data, self.pos, self.n = data, 0, 0

        def readable(self):
            return True

        def read(self, n=-1):
            self.n = self.n % 3 + 1
            chunk = self.data[self.pos : self.pos + min(n, self.n)]
            self.pos += len(chunk)
            return chunk

    data = b"a" * 700 + b"\nbb\n" + b"c" * 400
    expected = list(frames.pieces(io.BytesIO(data), 300))
    assert expected == [b"a" * 300, b"a" * 300, b"a" * 100 + b"\nbb\n", b"c" * 300, b"c" * 100]
    assert list(frames.pieces(Trickle(data), 300)) == expected
    assert list(frames.pieces(io.BytesIO(b""), 5)) == [] and list(frames.pieces(io.BytesIO(b"\n" * 3), 2)) == [b"\n\n", b"\n"]
    with pytest.raises(SettingsError):
        next(frames.pieces(io.BytesIO(data), 0))


def _counting_decoder(lm, decoded):
    def map_frames(blobs):
        for blob in blobs:
            decoded.append(container.read(blob).header["original_size"])
            yield codec.decompress(blob, lm)
    return map_frames


def test_range_restores_decode_only_the_frames_they_need(lm, framed):
    table = fmt.read_table(io.BytesIO(framed))
    a, b = table.frames[0], table.frames[1]
    cases = [
        (0, a.end, 1), (a.end, b.end, 1),  # exactly one frame, at its edges
        (a.start + 5, a.end - 5, 1),  # inside one frame
        (a.end - 1, a.end + 1, 2),  # across an edge
        (10, len(TEXT) - 10, len(table.frames)),  # across all
        (b.start, None, len(table.frames) - 1),  # to the end
        (a.end, a.end, 0), (len(TEXT), len(TEXT), 0), (0, 0, 0),  # empty
    ]
    for start, end, n in cases:
        decoded = []
        got = frames.restore_range(io.BytesIO(framed), start, end, lm, map_frames=_counting_decoder(lm, decoded))
        assert got == TEXT[start:end] and len(decoded) == n, (start, end)
        assert frames.restore_range(io.BytesIO(framed), start, end, lm) == got
    for start, end in ((0, len(TEXT) + 1), (5, 4), (len(TEXT) + 1, None), (-1, 3)):
        with pytest.raises(RangeError):
            frames.restore_range(io.BytesIO(framed), start, end, lm)
    plain = codec.compress(TEXT[:200], lm)  # a plain container: decoded whole, then cut
    assert frames.restore_range(io.BytesIO(plain), 20, 90, lm) == TEXT[20:90]
    with pytest.raises(RangeError):
        frames.restore_range(io.BytesIO(plain), 0, 201, lm)


def _resealed(blob: bytes, table: bytes, count: int | None = None) -> bytes:
    """``blob`` with its seek table replaced by ``table`` and a footer that agrees with it."""
    old_count, old_len, checksum, _, _ = fmt.FOOTER.unpack(blob[-fmt.FOOTER_LEN :])
    count = old_count if count is None else count
    return blob[: -fmt.FOOTER_LEN - old_len] + fmt.seek_table(table, count, checksum)


def _table(blob: bytes) -> bytes:
    n = fmt.FOOTER.unpack(blob[-fmt.FOOTER_LEN :])[1]
    return blob[-fmt.FOOTER_LEN - n : -fmt.FOOTER_LEN]


def _entries(table: bytes) -> list[int]:
    r, out = container.Reader(table), []
    while r.pos < len(table):
        out.append(r.varint("x"))
    return out


def _packed(entries) -> bytes:
    return b"".join(container.varint(v) for v in entries)


def test_the_strict_reader_refuses_damaged_files(lm, framed):
    table = _table(framed)
    e = _entries(table)
    assert _packed(e) == table and len(e) == 2 * len(fmt.read_table(io.BytesIO(framed)).frames)
    swapped = list(e)
    swapped[1], swapped[-1] = e[-1], e[1]  # two frames' original sizes exchanged: the same sum
    assert e[1] != e[-1]
    flipped = bytearray(framed)
    flipped[-fmt.FOOTER_LEN - 2] ^= 4
    newer = bytearray(framed)
    newer[4] = fmt.FRAMES_VERSION + 1
    bad = {
        "truncated by one byte": framed[:-1],
        "truncated to the preamble": framed[:5],
        "trailing byte": framed + b"\0",
        "leading frame cut off": fmt.preamble() + framed[len(fmt.preamble()) + 3 :],
        "table edited": bytes(flipped),
        "newer version": bytes(newer),
        "sizes that do not add up": _resealed(framed, _packed([e[0] + 1] + e[1:])),
        "a frame of zero bytes": _resealed(framed, _packed(e[:1] + [0] + e[2:])),
        "non-canonical varint": _resealed(framed, table[:-1] + bytes([table[-1] | 0x80, 0])),
        "count below the table": _resealed(framed, table, len(e) // 2 - 1),
        "count above the table": _resealed(framed, table, len(e) // 2 + 1),
        "one frame": _resealed(framed[: len(fmt.preamble()) + e[0]] + framed[-fmt.FOOTER_LEN - len(table) :],
                               _packed(e[:2]), 1),
        "huge count": _resealed(framed, table, fmt.MAX_FRAMES + 1),
    }
    for name, blob in bad.items():
        with pytest.raises(ContainerError) as err:
            _restore(blob, lm)
        assert "\n" not in str(err.value), name
    swapped_blob = _resealed(framed, _packed(swapped))
    fmt.read_table(io.BytesIO(swapped_blob))  # the table alone cannot tell
    with pytest.raises(ContainerError, match="frame 1: its original size does not match the seek table"):
        _restore(swapped_blob, lm)
    # the first two frames exchanged, their entries too: each frame is sound, the whole original is not
    t = fmt.read_table(io.BytesIO(framed))
    a, b = (framed[f.offset : f.offset + f.size] for f in t.frames[:2])
    rest = framed[t.frames[2].offset : -fmt.FOOTER_LEN - len(table)]
    reordered = _resealed(fmt.preamble() + b + a + rest + framed[-fmt.FOOTER_LEN - len(table) :],
                          _packed(e[2:4] + e[0:2] + e[4:]))
    with pytest.raises(IntegrityError, match="do not make up the original"):
        _restore(reordered, lm)


def test_map_frames_is_an_ordered_lazy_map(lm):
    pulled, seen = [], []

    def lazy_map(items):
        for piece in items:  # one piece at a time: the stream never reads ahead of the map
            pulled.append(len(piece))
            seen.append(len(pulled))
            yield codec.compress(piece, lm)

    out = io.BytesIO()
    report = frames.compress_stream(io.BytesIO(TEXT), out, lm, frame_size=FRAME, map_frames=lazy_map)
    assert out.getvalue() == frames.compress_bytes(TEXT, lm, frame_size=FRAME)
    assert seen == list(range(1, report.frames + 1)) and report.reports == []
    assert (report.original_size, report.compressed_size) == (len(TEXT), len(out.getvalue()))

    def reordered(items):
        items = list(items)
        return (codec.compress(p, lm) for p in items[::-1])

    def short(items):
        return (codec.compress(p, lm) for p in list(items)[:-1])

    for wrong in (reordered, short):
        with pytest.raises(SettingsError):
            frames.compress_stream(io.BytesIO(TEXT), io.BytesIO(), lm, frame_size=FRAME, map_frames=wrong)


class _Lines(io.RawIOBase):
    """``size`` bytes of repetitive text, generated as read (never held whole); hashes what it gave."""

    def __init__(self, size):
        self.left, self.sha, self.line, self.buf = size, hashlib.sha256(), 0, b""

    def readable(self):
        return True

    def read(self, n=-1):
        n = min(self.left, n if n >= 0 else self.left, 1 << 16)
        parts, have = [self.buf], len(self.buf)
        while have < n:
            line = b"line %d: the quick brown fox jumps over the lazy dog.\n" % (self.line % 997)
            parts.append(line)
            have += len(line)
            self.line += 1
        data = b"".join(parts)
        out, self.buf = data[:n], data[n:]
        self.left -= n
        self.sha.update(out)
        return out


class _HashSink(io.RawIOBase):
    def __init__(self):
        self.sha, self.size = hashlib.sha256(), 0

    def writable(self):
        return True

    def write(self, b):
        self.sha.update(b)
        self.size += len(b)
        return len(b)


def _raw_frames(pieces):
    """A map that stores each piece raw (zstd) in a container: the streaming path without the model."""
    for piece in pieces:
        header = {**container.DEFAULT_PROFILE, "dictionary": "", "window": 8, "context": 0,
                  "original_size": len(piece)}
        yield container.write(container.Container(header, [(container.KIND_RAW, len(piece))], b"", piece, [],
                                                  container.original_checksum(piece)))


def test_streaming_memory_is_bounded_by_a_frame():
    size, frame = 20 << 20, 1 << 20
    src, packed = _Lines(size), io.BytesIO()
    tracemalloc.start()
    try:
        report = frames.compress_stream(src, packed, None, frame_size=frame, map_frames=_raw_frames)
        _, compress_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        sink = _HashSink()
        frames.decompress_stream(io.BytesIO(packed.getvalue()), sink)
        _, restore_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.original_size == size and report.frames >= 20 and sink.size == size
    assert sink.sha.digest() == src.sha.digest()
    # a few frames' worth (the read buffer, a piece, its container), never the 20 MB input or output
    assert compress_peak < 8 * frame and restore_peak < 8 * frame, (compress_peak, restore_peak)


def test_cli_round_trip_range_and_info(tiny_model_dir, tmp_path, capsys):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    cmd = [sys.executable, "-m", "memzip"]
    src = tmp_path / "text.txt"
    src.write_bytes(TEXT)
    subprocess.run(cmd + ["c", str(src), "--model", tiny_model_dir, "--frame-size", "300", "-q"], env=env, check=True)
    mz = tmp_path / "text.txt.mz"
    assert fmt.is_framed(mz.read_bytes()) and len(fmt.read_table(io.BytesIO(mz.read_bytes())).frames) >= 3
    part = subprocess.run(cmd + ["x", str(mz), "--range", "250:700", "-c", "--model", tiny_model_dir, "-q"], env=env,
                          capture_output=True, check=True).stdout
    assert part == TEXT[250:700]
    assert main(["x", str(mz), "--range", "600:", "-o", str(tmp_path / "tail"), "-q"]) == 0
    assert (tmp_path / "tail").read_bytes() == TEXT[600:]
    assert main(["x", str(mz), "-o", str(tmp_path / "whole"), "-q"]) == 0  # the model the frames name
    assert (tmp_path / "whole").read_bytes() == TEXT
    capsys.readouterr()
    assert main(["info", str(mz)]) == 0
    out = capsys.readouterr().out
    assert "framed file, version 1" in out and f"original:        {len(TEXT)} bytes" in out
    small = tmp_path / "small.txt"
    small.write_bytes(TEXT[:200])
    assert main(["c", str(small), "--model", tiny_model_dir, "--frame-size", "1K", "-q"]) == 0
    from memzip.model import load_model

    assert (tmp_path / "small.txt.mz").read_bytes() == codec.compress(TEXT[:200], load_model(tiny_model_dir))
    for args, message in [
        (["x", str(mz), "--range", "5:3", "-c"], "not a range"),
        (["x", str(mz), "--range", "0:99999", "-c"], "ends past"),
        (["x", str(mz), "--range", "x", "-c"], "START:END"),
        (["x", str(mz), "--range", "0:5"], "--range writes to"),
        (["c", str(src), "-o", str(tmp_path / "y.mz"), "--frame-size", "0"], "--frame-size must be"),
        (["c", str(src), "-o", str(tmp_path / "y.mz"), "--frame-size", "3Q"], "not a byte count"),
    ]:
        capsys.readouterr()
        assert main(args + ["--model", tiny_model_dir]) == 1, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, (args, err)
    bad = tmp_path / "bad.mz"
    bad.write_bytes(mz.read_bytes()[:-1])
    assert main(["x", str(bad), "-o", str(tmp_path / "bad.out"), "--model", tiny_model_dir]) == 1
    assert "truncated or corrupted" in capsys.readouterr().err and not (tmp_path / "bad.out").exists()
