import hashlib
import json

import pytest
import zstandard
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from memzip.format import container
from memzip.format.vectors import VectorSpec
from memzip.format.container import KIND_RAW, KIND_WINDOW, Container, section_offsets
from memzip.errors import ContainerError

HIDDEN = 8
COMPACT = {"code": "compact", "rank": 4, "bits": 4, "basis": "embedding-pca-v2", "basis_digest": "0123456789abcdef"}


def codes_for(n: int, vectors: dict = COMPACT, seed: int = 0) -> bytes:
    """Valid stored codes for n windows: bf16 vectors, or a positive bf16 scale and 4-bit integers."""
    g = torch.Generator().manual_seed(seed)
    if vectors["code"] == "none":
        return b""
    if vectors["code"] == "full":
        return torch.randn(n, HIDDEN, generator=g).to(torch.bfloat16).view(torch.uint8).numpy().tobytes()
    scale = torch.full((n, 1), 0.1).to(torch.bfloat16).view(torch.uint8)
    q = torch.randint(-7, 8, (n, vectors["rank"]), generator=g, dtype=torch.int8).view(torch.uint8)
    return torch.cat([scale, q], dim=1).numpy().tobytes()


def make(segments=((KIND_WINDOW, 3), (KIND_RAW, 5), (KIND_WINDOW, 2)), fallback=b"\xff\x00raw", original=b"x",
         vectors=COMPACT):
    n = sum(1 for k, _ in segments if k == KIND_WINDOW)
    header = {
        "memzip_version": "test",
        "model_id": "tiny",
        "model_fingerprint": "ab" * 32,
        "prefix_id": 0,
        "hidden_size": HIDDEN,
        "window": 4,
        "context": 0,
        "dictionary": "",
        "engine": "exact-2",
        "vectors": dict(vectors),
        "original_size": 100,
        "settings": {"lr": 0.01},
    }
    streams = [bytes([(17 * (i + 1)) % 255 + 1]) * (i + 1) for i in range(n)]  # opaque to the container: non-empty
    return Container(header, list(segments), codes_for(n, vectors), fallback, streams, container.original_checksum(original))


def reseal(body: bytes) -> bytes:
    """Recompute the trailer, to reach the checks behind the container checksum."""
    return container.seal(body)


@pytest.mark.parametrize("vectors", [COMPACT, {"code": "full"}])
def test_round_trip(vectors):
    c = make(vectors=vectors)
    blob = container.write(c)
    back = container.read(blob)
    assert back.header == c.header
    assert back.segments == c.segments
    assert back.codes == c.codes and len(c.codes) == 2 * back.vector_spec.code_bytes(HIDDEN)
    assert back.vector_spec == (VectorSpec("compact", 4, 4) if vectors is COMPACT else VectorSpec("full"))
    assert back.fallback == c.fallback and back.streams == c.streams and back.checksum == c.checksum
    assert back.sizes == c.sizes


def test_empty_container_round_trips():
    c = make(segments=(), fallback=b"")
    back = container.read(container.write(c))
    assert back.segments == [] and back.codes == b"" and back.fallback == b""
    assert back.sizes["vectors"] == 0 and back.sizes["fallback"] == 0


def test_writer_refuses_codes_no_reader_would_accept():
    c = make()
    c.codes = c.codes[:-1]
    with pytest.raises(ValueError, match="vector codes"):
        container.write(c)


def test_layout_starts_with_magic_and_version_and_ends_with_checksums():
    c = make()
    blob = container.write(c)
    assert blob[:4] == b"\x89MZP" and blob[4] == container.FORMAT_VERSION == 10
    assert blob[5] == container.PROFILE_JSON  # the tiny test header is not the default model's
    assert blob[-8:-4] == hashlib.sha256(b"x").digest()[:4] == c.checksum
    assert blob[-4:] == hashlib.sha256(blob[:-4]).digest()[:4]


def test_the_writer_refuses_missing_streams_or_checksum():
    c = make()
    c.streams = c.streams[:1]
    with pytest.raises(ValueError, match="token stream"):
        container.write(c)
    c = make()
    c.streams[0] = b""
    with pytest.raises(ValueError, match="token stream"):
        container.write(c)
    c = make()
    c.checksum = b"short"
    with pytest.raises(ValueError, match="checksum"):
        container.write(c)


def test_every_truncation_is_an_error():
    blob = container.write(make())
    for n in range(len(blob)):
        with pytest.raises(ContainerError):
            container.read(blob[:n])


def _predicted():
    return make(vectors={"code": "none"})


@pytest.mark.parametrize("build", [make, _predicted])
def test_every_flipped_bit_is_an_error(build):
    """Header, segment table, vectors, streams, fallback and both checksums: every single-bit flip."""
    blob = container.write(build())
    for i in range(len(blob)):
        for bit in range(8):
            bad = bytearray(blob)
            bad[i] ^= 1 << bit
            with pytest.raises(ContainerError):
                container.read(bytes(bad))


def test_newer_version_is_named_in_the_error():
    blob = bytearray(container.write(make()))
    blob[4] = container.FORMAT_VERSION + 1
    with pytest.raises(ContainerError, match=f"version {container.FORMAT_VERSION + 1} .*newer memzip"):
        container.read(bytes(blob))


def test_older_version_is_refused_by_number():
    blob = bytearray(container.write(make()))
    for old in (8, 9):
        blob[4] = old
        with pytest.raises(ContainerError, match=f"version {old} is not supported"):
            container.read(bytes(blob))
    format8 = b"\x89MZP\r\n\x1a\n\x08\x00" + bytes(20)  # format 8's 8-byte magic and u16 version
    with pytest.raises(ContainerError, match="not supported"):
        container.read(format8)


def test_not_a_memzip_file():
    for blob in (b"", b"hello", b"\x1f\x8b\x08\x00" + bytes(40), b"\x28\xb5\x2f\xfd" + bytes(40)):
        with pytest.raises(ContainerError, match="not a memzip file"):
            container.read(blob)


def _header_span(blob: bytes) -> tuple[int, int]:
    """(start, end) of the JSON header's zstd frame: byte 5 is the profile, then its varint length."""
    assert blob[5] == container.PROFILE_JSON
    r = container.Reader(blob)
    r.pos = 6
    n = r.varint("header length")
    return r.pos, r.pos + n


def _with_packed_header(packed: bytes, blob: bytes | None = None) -> bytes:
    blob = blob or container.write(make())
    start, end = _header_span(blob)
    head = blob[:5] + bytes([container.PROFILE_JSON]) + container.varint(len(packed))
    return reseal(head + packed + blob[end : -container.TRAILER_LEN])


def _with_header(mutate):
    blob = container.write(make())
    start, end = _header_span(blob)
    header = container.unpack_header(blob[start:end])
    mutate(header)
    return _with_packed_header(container.pack_header(header), blob)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda h: h.pop("model_fingerprint"),
        lambda h: h.update(extra=1),
        lambda h: h.update(hidden_size="8"),
        lambda h: h.update(vectors={"code": "float16"}),
        lambda h: h.update(vectors=[]),
        lambda h: h["vectors"].update(rank=HIDDEN + 1),  # more numbers than the vector has
        lambda h: h["vectors"].update(rank=0),
        lambda h: h["vectors"].update(bits=1),
        lambda h: h["vectors"].update(bits=9),
        lambda h: h["vectors"].update(bits=True),
        lambda h: h["vectors"].update(basis="gaussian"),
        lambda h: h["vectors"].update(basis_digest="xyz"),
        lambda h: h["vectors"].pop("basis_digest"),
        lambda h: h["vectors"].update(rank=3),  # codes section no longer matches the windows
        lambda h: h.update(vectors={"code": "full"}),  # codes section no longer matches the windows
        lambda h: h.pop("engine"),
        lambda h: h.update(engine=""),
        lambda h: h.update(engine="exact 1"),
        lambda h: h.update(engine=1),
        lambda h: h.update(engine="x" * (container.MAX_ENGINE_NAME + 1)),
        lambda h: h.update(original_size=-1),
        lambda h: h.update(original_size=3),  # smaller than the raw spans
        lambda h: h.update(hidden_size=3),  # narrower than the rank of the codes
        lambda h: h.update(original_sha256="00" * 32),  # format 8's fields are unknown to format 9
        lambda h: h.update(stats={}),
        lambda h: h.update(model_fingerprint="AB" * 32),
        lambda h: h.update(prefix_id=True),
        lambda h: h.update(window=container.MAX_WINDOW_TOKENS + 1),
        lambda h: h.update(window=0),
        lambda h: h.update(window=2),  # shorter than a stored window (3 tokens)
        lambda h: h.update(threads=2),  # format 7's fields are unknown to format 8
        lambda h: h.update(environment={}),
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


def _zstd(data: bytes, **options) -> bytes:
    """A zstd frame as the container stores it: without its 4-byte magic."""
    import zstandard

    return zstandard.ZstdCompressor(**options).compress(data)[4:] if data else b""


def _write_unchecked(c: Container, codes_section: bytes | None = None, tokens_section: bytes | None = None) -> bytes:
    """Serialize without the writer's own validation of codes, streams vs segments."""
    header = container.pack_header(c.header)
    table = container.pack_segments(c.segments)
    parts = [container.MAGIC, container.varint(container.FORMAT_VERSION), header]
    codes = _zstd(c.codes) if codes_section is None else codes_section
    if tokens_section is None:
        windows = sum(1 for k, _ in c.segments if k == KIND_WINDOW)
        tokens_section = container.pack_streams([b"\x01"] * windows)
    for section in (table, codes, tokens_section, _zstd(c.fallback)):
        parts += [container.varint(len(section)), section]
    return reseal(b"".join(parts) + c.checksum)


@pytest.mark.parametrize("segments", [((KIND_WINDOW, 0),), ((KIND_RAW, 0),), ((KIND_WINDOW, 5),), ((KIND_WINDOW, 1 << 17),)])
def test_bad_segment_entries(segments):
    c = make(segments=segments, fallback=b"")
    with pytest.raises(ContainerError):
        container.read(_write_unchecked(c))


def _one_bad_code(vectors, byte, value):
    c = make(vectors=vectors)
    codes = bytearray(c.codes)
    codes[byte] = value
    c.codes = bytes(codes)
    return _write_unchecked(c)


def test_non_finite_full_vectors_are_rejected():
    nan = torch.tensor([float("nan")], dtype=torch.bfloat16).view(torch.uint8)
    c = make(vectors={"code": "full"})
    codes = bytearray(c.codes)
    codes[0:2] = bytes(nan.tolist())
    c.codes = bytes(codes)
    with pytest.raises(ContainerError, match="non-finite"):
        container.read(_write_unchecked(c))


@pytest.mark.parametrize("byte,value,message", [
    (1, 0x80, "scales"),  # scale -0.1: sign bit set
    (1, 0x7F, "scales"),  # scale with an all-ones exponent: inf or nan
    (2, 8, "exceed 4 bits"),  # code 8 > 7
    (3, 0xF8, "exceed 4 bits"),  # code -8 < -7
])
def test_impossible_compact_codes_are_rejected(byte, value, message):
    blob = _one_bad_code(COMPACT, byte, value)
    if byte == 1 and value == 0x7F:
        c = make()
        codes = bytearray(c.codes)
        codes[0:2] = b"\x80\x7f"  # bf16 +inf
        c.codes = bytes(codes)
        blob = _write_unchecked(c)
    with pytest.raises(ContainerError, match=message):
        container.read(blob)


def test_codes_section_must_hold_exactly_the_declared_size():
    c = make()
    for section in (_zstd(c.codes + b"\x00"), _zstd(c.codes[:-1]), b"", c.codes,
                    _zstd(c.codes, write_content_size=False)):
        with pytest.raises(ContainerError, match="vectors"):
            container.read(_write_unchecked(c, section))


@pytest.mark.parametrize("section", [0, 1, 2, 3])
@pytest.mark.parametrize("length, message", [((1 << 64) - 1, "truncated|past the end"),
                                             (1 << 64, "not a canonical length"), (1 << 80, "longer than 10 bytes")])
def test_huge_section_lengths_are_errors_not_allocations(section, length, message):
    blob = container.write(make())
    bad = bytearray(blob[: -container.TRAILER_LEN])
    at, size = section_offsets(blob)[section]
    bad[at : at + size] = container.varint(length)
    with pytest.raises(ContainerError, match=message):
        container.read(reseal(bytes(bad)))


def test_section_lengths_must_be_canonical():
    blob = container.write(make())
    bad = bytearray(blob[: -container.TRAILER_LEN])
    at, size = section_offsets(blob)[0]
    bad[at : at + size] = bytes([bad[at] | 0x80, 0x00])  # the same value with a needless zero byte
    with pytest.raises(ContainerError, match="not a canonical length"):
        container.read(reseal(bytes(bad)))


def test_huge_header_length_is_refused_before_reading():
    blob = container.write(make())
    start, end = _header_span(blob)
    bad = blob[:6] + container.varint(0xFFFFFFFF) + blob[start : -container.TRAILER_LEN]
    with pytest.raises(ContainerError, match="truncated"):
        container.read(reseal(bad))


@pytest.mark.parametrize(
    "packed, message",
    [
        (b'{"memzip_version": "0"}', "not a valid zstd frame"),  # plain JSON, as format 3 stored it
        (zstandard.ZstdCompressor(write_content_size=False).compress(b"{}")[4:], "must declare"),
        (zstandard.ZstdCompressor().compress(b"{}"), "not a valid zstd frame"),  # a frame with its magic
        (_zstd(b" " * (container.MAX_HEADER_BYTES + 1)), "must declare"),
        (_zstd(b"\xff{}"), "not valid JSON"),
        (_zstd(b"[1]"), "not a JSON object"),
        (_zstd(b"[" * 30_000 + b"]" * 30_000), "not valid JSON"),  # nesting deeper than the parser's stack
    ],
)
def test_header_frames_are_read_strictly(packed, message):
    with pytest.raises(ContainerError, match=message):
        container.read(_with_packed_header(packed))


def test_header_is_stored_compressed():
    c = make()
    blob = container.write(c)
    plain = json.dumps(c.header, sort_keys=True, separators=(",", ":")).encode()
    start, end = _header_span(blob)
    assert c.sizes["header"] == end - 5 and end - start < len(plain) // 4


def test_raw_spans_claiming_more_than_zstd_can_expand_are_refused():
    c = make(segments=((KIND_RAW, 0xFFFFFFFF), (KIND_RAW, 0xFFFFFFFF)), fallback=b"tiny")
    c.header["original_size"] = 1 << 40
    with pytest.raises(ContainerError, match="more bytes than the fallback"):
        container.read(_write_unchecked(c))


def test_decompression_bomb_beyond_the_declared_size_is_refused():
    """A fallback frame that expands past what the segment table declares is cut off, not inflated."""
    import zstandard

    c = make(segments=((KIND_RAW, 10),), fallback=b"")
    bomb = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(50_000_000))[4:]
    parts = [container.MAGIC, container.varint(container.FORMAT_VERSION), container.pack_header(c.header)]
    for section in (container.pack_segments([(KIND_RAW, 10)]), b"", b"", bomb):
        parts += [container.varint(len(section)), section]
    with pytest.raises(ContainerError, match="fallback"):
        container.read(reseal(b"".join(parts) + c.checksum))


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
        blob = reseal(blob[: -container.TRAILER_LEN]) if len(blob) > container.TRAILER_LEN else blob
    try:
        container.read(blob)
    except ContainerError:
        pass


def test_one_stream_per_window_is_read_strictly():
    c = make(vectors={"code": "none"})
    back = container.read(container.write(c))
    assert back.streams == c.streams == [b"\x12", b"\x23\x23"]
    v = container.varint
    assert container.pack_streams(c.streams) == v(1) + b"\x12" + b"\x23\x23"  # the last fills the section
    for section, message in (
        (v(1) + b"\x12", "last token stream is empty"),  # one stream for two windows
        (v(0) + b"\x23", "empty"),
        (v(5) + b"\x23", "truncated"),
        (b"", "truncated"),
    ):
        with pytest.raises(ContainerError, match=message):
            container.read(_write_unchecked(c, tokens_section=section))


def test_windows_cannot_claim_more_tokens_than_the_file_has_bytes():
    c = make(segments=((KIND_WINDOW, 4),) * 30, fallback=b"", vectors={"code": "none"})  # 120 tokens, 100 bytes
    with pytest.raises(ContainerError, match="more tokens than the original file has bytes"):
        container.read(_write_unchecked(c))


def test_the_header_dictionary_is_the_one_the_format_pins():
    from pathlib import Path

    digest = hashlib.sha256(container.HEADER_DICTIONARY).hexdigest()
    assert digest == container.HEADER_DICTIONARY_SHA256
    assert digest in (Path(__file__).parent.parent / "docs" / "FORMAT.md").read_text()
    typical = container.pack_json(make().header)
    assert len(typical) < len(container.zstd_frame(json.dumps(make().header).encode()))
    assert container.unpack_header(typical) == make().header


def test_windows_and_raw_spans_round_trip_with_their_streams():
    segments = [(KIND_WINDOW, 3), (KIND_RAW, 5), (KIND_WINDOW, 2)]
    c = make(segments=segments, vectors={"code": "none"})
    back = container.read(container.write(c))
    assert back.segments == segments and back.window_lengths == [3, 2] and back.streams == c.streams


@pytest.mark.parametrize("table", [b"\x86\x00", b"\x86", b"\x06\xff"])  # overlong, cut, cut after an entry
def test_segment_entries_are_canonical_varints(table):
    c = make(segments=[(KIND_WINDOW, 3)], fallback=b"", vectors={"code": "none"})
    good = _write_unchecked(c)
    assert container.pack_segments(c.segments) == b"\x06"  # 3 * 2 + kind 0: one byte
    bad = good.replace(container.varint(1) + b"\x06", container.varint(len(table)) + table, 1)
    assert bad != good
    with pytest.raises(ContainerError, match="segment entry"):
        container.read(reseal(bad[: -container.TRAILER_LEN]))


def test_the_default_profile_holds_the_packaged_models_header_in_a_few_bytes():
    header = {**container.DEFAULT_PROFILE, "memzip_version": "0.7.0", "original_size": 1335, "window": 286, "context": 0, "dictionary": ""}
    packed = container.pack_header(header)
    assert packed == bytes([container.PROFILE_DEFAULT]) + container.varint(1335) + container.varint(286) + b"\x00"
    c = Container(header, [(KIND_WINDOW, 286), (KIND_WINDOW, 9)], b"", b"", [b"\x01\x02", b"\x03"],
                  container.original_checksum(b"x"))
    back = container.read(container.write(c))
    assert back.header == {**header, "memzip_version": ""} and back.sizes["header"] == 6  # the version is not kept
    other = {**header, "prefix_id": 1}  # anything else goes to JSON
    assert container.pack_header(other)[0] == container.PROFILE_JSON


def test_a_json_header_the_default_profile_would_hold_is_not_canonical():
    header = {**container.DEFAULT_PROFILE, "memzip_version": "0.7.0", "original_size": 1335, "window": 286, "context": 0, "dictionary": ""}
    c = Container(header, [(KIND_WINDOW, 286), (KIND_WINDOW, 9)], b"", b"", [b"\x01", b"\x03"],
                  container.original_checksum(b"x"))
    blob = container.write(c)
    frame = container.pack_json(header)
    json_blob = blob[:5] + bytes([container.PROFILE_JSON]) + container.varint(len(frame)) + frame + blob[11:-4]
    with pytest.raises(ContainerError, match="not canonical"):
        container.read(reseal(json_blob))
    with pytest.raises(ContainerError, match="profile 7 is unknown"):
        container.read(reseal(blob[:5] + b"\x07" + blob[6:-4]))


def test_a_shared_context_must_lie_in_the_first_window():
    header = {**container.DEFAULT_PROFILE, "memzip_version": "0.7.0", "original_size": 1335, "window": 286, "context": 200, "dictionary": ""}
    ok = Container(header, [(KIND_WINDOW, 286), (KIND_WINDOW, 86)], b"", b"", [b"\x01", b"\x02"],
                   container.original_checksum(b"x"))
    assert container.read(container.write(ok)).header["context"] == 200
    for segments, streams, fallback in (([(KIND_WINDOW, 199), (KIND_WINDOW, 86)], [b"\x01", b"\x02"], b""),
                                        ([(KIND_RAW, 5)], [], container.zstd_frame(b"\x00" * 5))):
        # written by hand: the writer would not make these files
        body = container.MAGIC + container.varint(container.FORMAT_VERSION) + container.pack_header(header)
        for section in (container.pack_segments(segments), b"", container.pack_streams(streams), fallback):
            body += container.varint(len(section)) + section
        with pytest.raises(ContainerError, match="shared context"):
            container.read(container.seal(body + container.original_checksum(b"x")))


SINGLE = {**container.DEFAULT_PROFILE, "memzip_version": "0.7.0", "original_size": 1335, "window": 286, "context": 0,
          "dictionary": ""}


@pytest.mark.parametrize("dictionary", ["", "0a1b2c3d"])
def test_a_single_window_of_the_packaged_model_is_stream_and_checksum(dictionary):
    """Profiles 12 and 48: magic, version, profile, [dictionary ID], original size, tokens, the stream,
    the original's checksum: 14 fixed bytes (18 with a dictionary) where the general layout takes 25."""
    header = {**SINGLE, "dictionary": dictionary}
    c = Container(header, [(KIND_WINDOW, 286)], b"", b"", [b"\x01\x02\x03"], container.original_checksum(b"x"))
    blob = container.write(c)
    profile = container.PROFILE_DICT_SINGLE if dictionary else container.PROFILE_SINGLE
    assert blob == (container.MAGIC + bytes([container.FORMAT_VERSION, profile]) + bytes.fromhex(dictionary)
                    + container.varint(1335) + container.varint(286) + b"\x01\x02\x03" + c.checksum)
    back = container.read(blob)
    assert back.header == {**header, "memzip_version": ""} and back.streams == [b"\x01\x02\x03"]
    assert back.segments == [(KIND_WINDOW, 286)] and back.checksum == c.checksum
    assert len(blob) - 3 == 14 + len(dictionary) // 2
    for bad, message in ((blob[:-7] + blob[-4:], "truncated|empty"), (blob[:7], "truncated"),
                         (blob.replace(container.varint(286), container.varint(1400), 1), "more tokens")):
        with pytest.raises(ContainerError, match=message):
            container.read(bad)


def test_a_single_window_in_the_general_layout_is_not_canonical():
    c = Container(dict(SINGLE), [(KIND_WINDOW, 286)], b"", b"", [b"\x01"], container.original_checksum(b"x"))
    body = container.MAGIC + container.varint(container.FORMAT_VERSION) + container.pack_header(SINGLE)
    for section in (container.pack_segments(c.segments), b"", container.pack_streams(c.streams), b""):
        body += container.varint(len(section)) + section
    with pytest.raises(ContainerError, match="single-window profile"):
        container.read(container.seal(body + c.checksum))


def test_dictionary_ids_are_kept_by_every_profile():
    two = [(KIND_WINDOW, 286), (KIND_WINDOW, 9)]
    for header in ({**SINGLE, "dictionary": "deadbeef"}, {**SINGLE, "dictionary": "deadbeef", "prefix_id": 2}):
        c = Container(dict(header), two, b"", b"", [b"\x01", b"\x02"], container.original_checksum(b"x"))
        back = container.read(container.write(c))
        assert back.header["dictionary"] == "deadbeef"
    assert container.pack_header({**SINGLE, "dictionary": "deadbeef"})[0] == container.PROFILE_DICT
    for wrong in ("DEADBEEF", "dead", "deadbeef00"):
        c = Container({**SINGLE, "dictionary": wrong, "prefix_id": 2}, two, b"", b"", [b"\x01", b"\x02"],
                      container.original_checksum(b"x"))
        with pytest.raises(ContainerError, match="dictionary"):
            container.write(c)
