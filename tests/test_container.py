import hashlib
import json
import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.fuzz import section_offsets
from memzip import container
from memzip.container import KIND_RAW, KIND_WINDOW, Container
from memzip.errors import ContainerError

HIDDEN = 8


def make(segments=((KIND_WINDOW, 3), (KIND_RAW, 5), (KIND_WINDOW, 2)), fallback=b"\xff\x00raw", original=b"x"):
    n = sum(1 for k, _ in segments if k == KIND_WINDOW)
    header = {
        "memzip_version": "test",
        "model_id": "tiny",
        "model_fingerprint": "ab" * 32,
        "prefix_id": 0,
        "hidden_size": HIDDEN,
        "window": 4,
        "decode_batch": 64,
        "vector_dtype": "bfloat16",
        "original_size": 100,
        "original_sha256": hashlib.sha256(original).hexdigest(),
        "settings": {"lr": 0.01},
        "stats": {"windows": 2},
        "environment": {k: "x" for k in container.ENVIRONMENT_KEYS},
    }
    torch.manual_seed(0)
    vectors = torch.randn(n, HIDDEN).to(torch.bfloat16)
    return Container(header, list(segments), vectors, fallback)


def reseal(body: bytes) -> bytes:
    """Recompute the trailer, to reach the checks behind the container checksum."""
    return body + hashlib.sha256(body).digest()


def test_round_trip():
    c = make()
    blob = container.write(c)
    back = container.read(blob)
    assert back.header == c.header
    assert back.segments == c.segments
    assert torch.equal(back.vectors, c.vectors)
    assert back.fallback == c.fallback
    assert back.sizes == c.sizes


def test_empty_container_round_trips():
    c = make(segments=(), fallback=b"")
    back = container.read(container.write(c))
    assert back.segments == [] and back.vectors.shape == (0, HIDDEN) and back.fallback == b""


def test_layout_starts_with_magic_and_version():
    blob = container.write(make())
    assert blob[:8] == b"\x89MZP\r\n\x1a\n"
    assert struct.unpack_from("<H", blob, 8)[0] == container.FORMAT_VERSION


def test_every_truncation_is_an_error():
    blob = container.write(make())
    for n in range(len(blob)):
        with pytest.raises(ContainerError):
            container.read(blob[:n])


def test_every_flipped_bit_is_an_error():
    """Header, segment table, vectors, fallback and the checksum itself: every single-bit flip."""
    blob = container.write(make())
    for i in range(len(blob)):
        for bit in range(8):
            bad = bytearray(blob)
            bad[i] ^= 1 << bit
            with pytest.raises(ContainerError):
                container.read(bytes(bad))


def test_newer_version_is_named_in_the_error():
    blob = bytearray(container.write(make()))
    struct.pack_into("<H", blob, 8, container.FORMAT_VERSION + 1)
    with pytest.raises(ContainerError, match=f"version {container.FORMAT_VERSION + 1} .*newer memzip"):
        container.read(bytes(blob))


def test_older_version_is_refused_by_number():
    blob = bytearray(container.write(make()))
    struct.pack_into("<H", blob, 8, 1)
    with pytest.raises(ContainerError, match="version 1 is not supported"):
        container.read(bytes(blob))


def test_not_a_memzip_file():
    for blob in (b"", b"hello", b"\x1f\x8b\x08\x00" + bytes(40), b"\x28\xb5\x2f\xfd" + bytes(40)):
        with pytest.raises(ContainerError, match="not a memzip file"):
            container.read(blob)


def _with_header(mutate):
    blob = container.write(make())
    (hlen,) = struct.unpack_from("<I", blob, 10)
    header = json.loads(blob[14:14 + hlen])
    mutate(header)
    new = json.dumps(header).encode()
    return reseal(blob[:10] + struct.pack("<I", len(new)) + new + blob[14 + hlen:-32])


@pytest.mark.parametrize(
    "mutate",
    [
        lambda h: h.pop("model_fingerprint"),
        lambda h: h.update(extra=1),
        lambda h: h.update(hidden_size="8"),
        lambda h: h.update(vector_dtype="float16"),
        lambda h: h.update(decode_batch=0),
        lambda h: h.update(original_size=-1),
        lambda h: h.update(original_size=3),  # smaller than the raw spans
        lambda h: h.update(hidden_size=9),  # does not match the vectors
        lambda h: h.update(original_sha256="xyz"),
        lambda h: h.update(prefix_id=True),
        lambda h: h.update(window=container.MAX_WINDOW_TOKENS + 1),
        lambda h: h.update(decode_batch=container.MAX_DECODE_BATCH + 1),
        lambda h: h.update(window=1024, decode_batch=64),  # too many tokens in flight for one batch
        lambda h: h.update(window=2),  # shorter than a stored window (3 tokens)
        lambda h: h["environment"].pop("torch"),
        lambda h: h["environment"].update(torch=2),
        lambda h: h.update(environment=[]),
    ],
)
def test_bad_headers_are_rejected_even_with_a_valid_trailer(mutate):
    with pytest.raises(ContainerError):
        container.read(_with_header(mutate))


def test_more_vectors_than_windows_is_rejected_even_with_a_valid_trailer():
    c = make()  # two vectors
    c.segments = [(KIND_WINDOW, 3), (KIND_RAW, 5)]
    with pytest.raises(ContainerError, match="vectors"):
        container.read(_write_unchecked(c))


def test_raw_lengths_must_match_the_fallback_even_with_a_valid_trailer():
    c = make()
    c.segments = [(KIND_WINDOW, 3), (KIND_RAW, 6), (KIND_WINDOW, 2)]  # fallback holds 5 bytes
    with pytest.raises(ContainerError, match="fallback"):
        container.read(_write_unchecked(c))


def _write_unchecked(c: Container) -> bytes:
    """Serialize without the writer's own validation of vectors vs segments."""
    from safetensors.torch import save
    import zstandard

    header = json.dumps(c.header).encode()
    table = b"".join(struct.pack("<BI", k, n) for k, n in c.segments)
    parts = [container.MAGIC, struct.pack("<HI", container.FORMAT_VERSION, len(header)), header]
    for section in (table, save({"vectors": c.vectors}), zstandard.ZstdCompressor().compress(c.fallback) if c.fallback else b""):
        parts += [struct.pack("<Q", len(section)), section]
    return reseal(b"".join(parts))


@pytest.mark.parametrize("segments", [((2, 3),), ((KIND_WINDOW, 0),), ((KIND_RAW, 0),), ((KIND_WINDOW, 1 << 17),)])
def test_bad_segment_entries(segments):
    c = make(segments=segments, fallback=b"")
    c.vectors = torch.zeros((sum(1 for k, _ in segments if k == KIND_WINDOW), HIDDEN), dtype=torch.bfloat16)
    with pytest.raises(ContainerError):
        container.read(_write_unchecked(c))


def test_non_finite_vectors_are_rejected():
    c = make()
    c.vectors[0, 0] = float("nan")
    with pytest.raises(ContainerError, match="non-finite"):
        container.read(_write_unchecked(c))


@pytest.mark.parametrize("section", [0, 1, 2])
def test_huge_section_lengths_are_errors_not_allocations(section):
    blob = container.write(make())
    bad = bytearray(blob[:-32])
    struct.pack_into("<Q", bad, section_offsets(blob)[section], (1 << 64) - 1)
    with pytest.raises(ContainerError, match="truncated|past the end"):
        container.read(reseal(bytes(bad)))


def test_huge_header_length_is_refused_before_reading():
    blob = bytearray(container.write(make())[:-32])
    struct.pack_into("<I", blob, 10, 0xFFFFFFFF)
    with pytest.raises(ContainerError, match="header claims"):
        container.read(reseal(bytes(blob)))


def test_deeply_nested_header_json_is_a_clean_error():
    blob = container.write(make())
    nested = b"[" * 100_000 + b"]" * 100_000
    bomb = blob[:10] + struct.pack("<I", len(nested)) + nested
    with pytest.raises(ContainerError):
        container.read(reseal(bomb + blob[14 + struct.unpack_from("<I", blob, 10)[0]:-32]))


def test_raw_spans_claiming_more_than_zstd_can_expand_are_refused():
    c = make(segments=((KIND_RAW, 0xFFFFFFFF), (KIND_RAW, 0xFFFFFFFF)), fallback=b"tiny")
    c.header["original_size"] = 1 << 40
    c.vectors = torch.zeros((0, HIDDEN), dtype=torch.bfloat16)
    with pytest.raises(ContainerError, match="more bytes than the fallback"):
        container.read(_write_unchecked(c))


def test_decompression_bomb_beyond_the_declared_size_is_refused():
    """A fallback frame that expands past what the segment table declares is cut off, not inflated."""
    import zstandard

    c = make(segments=((KIND_RAW, 10),), fallback=b"")
    c.vectors = torch.zeros((0, HIDDEN), dtype=torch.bfloat16)
    bomb = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(50_000_000))
    header = json.dumps(c.header).encode()
    parts = [container.MAGIC, struct.pack("<HI", container.FORMAT_VERSION, len(header)), header]
    for section in (struct.pack("<BI", KIND_RAW, 10), save_vectors(c.vectors), bomb):
        parts += [struct.pack("<Q", len(section)), section]
    with pytest.raises(ContainerError, match="fallback"):
        container.read(reseal(b"".join(parts)))


def save_vectors(vectors):
    from safetensors.torch import save

    return save({"vectors": vectors})


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutations_give_only_container_errors(data):
    blob = bytearray(container.write(make()))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    blob = bytes(blob[:cut])
    if data.draw(st.booleans()):
        blob = reseal(blob[:-32]) if len(blob) > 32 else blob
    try:
        container.read(blob)
    except ContainerError:
        pass
