"""Fuzz the decompressor and the dictionary reader: python -m bench.fuzz [--cases N] [--seed S].

Valid containers made with the tiny test model (one made with a dictionary, decoded with it) are
mutated (bit flips, byte overwrites, truncations, insertions, huge section lengths, header fields
replaced by values of random types) and, most of the time, resealed with a correct trailer so the
mutation reaches the checks behind the checksum. Every case goes through the full
``memzip.decompress``. The only acceptable outcomes are a MemzipError (a clean refusal) or the exact
original bytes; anything else -- another exception, or different bytes returned -- is a bug, reported
with the case's seed so it can be replayed. Two more kinds of case need no model: a dictionary file
(.mzd) mutated the same way and resealed, read by ``memzip.format.dictionary.read``, and a container in
the packaged model's single-window profiles (no trailer) mutated and read by ``container.read``: each
must be refused with a MemzipError or read into a valid value. A framed file (three containers and a
seek table) is mutated inside its frames, in its table, in the order and number of its frames, in its
footer and in any bytes, its table checksum made to agree most of the time, and restored whole or in a
random byte range: refused or exact, like a container.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import time

from memzip.format import container
from memzip.errors import ContainerError, MemzipError

_HEADER_VALUES = [0, -1, 1, 2**31, 2**63, 2**64 + 5, 1.5, float("nan"), "", "x" * 300, None, True, [], {}, [1, 2],
                  {"a": 1}, "0" * 64, "f" * 64, "bfloat16", "float32"]


_reseal = container.seal


def _header_span(blob: bytes) -> tuple[int, int, int] | None:
    """(start of the header length field, start of the header, end of the header), if they parse."""
    try:
        r = container.Reader(blob)
        r.pos = len(container.MAGIC)
        r.varint("version")
        if r.take(1, "header profile")[0] != container.PROFILE_JSON:
            return None  # the default profile's header is two varints: mutated like any other bytes
        at = r.pos
        n = r.varint("header length")
    except ContainerError:
        return None
    return (at, r.pos, r.pos + n) if r.pos + n <= len(blob) else None


def _mutate_header(blob: bytes, rng: random.Random) -> bytes:
    span = _header_span(blob)
    if span is None:
        return blob
    try:
        header = container.unpack_header(blob[span[1] : span[2]])
    except ContainerError:
        return blob
    if not isinstance(header, dict):
        return blob
    target = header
    if rng.random() < 0.3 and isinstance(header.get("vectors"), dict):
        target = header["vectors"]
    keys = list(target) + ["unknown_field"]
    key = rng.choice(keys)
    roll = rng.random()
    if roll < 0.15:
        target.pop(key, None)
    elif roll < 0.5 and isinstance(target.get(key), int) and not isinstance(target.get(key), bool):
        target[key] = target[key] + rng.choice([-1, 1, 2, -(2**20), 2**20, 2**40])
    else:
        target[key] = rng.choice(_HEADER_VALUES)
    new = container.pack_header(header)
    return blob[: span[0]] + container.varint(len(new)) + new + blob[span[2] :]


def mutate(blob: bytes, rng: random.Random) -> bytes:
    """One random hostile variant of a valid container (resealed with a correct trailer most of the time)."""
    body = bytearray(blob[: -container.TRAILER_LEN])
    for _ in range(rng.choice([1, 1, 1, 2, 3, 8])):
        kind = rng.random()
        if kind < 0.25 and body:
            i = rng.randrange(len(body))
            body[i] ^= 1 << rng.randrange(8)
        elif kind < 0.4 and body:
            body[rng.randrange(len(body))] = rng.randrange(256)
        elif kind < 0.5:
            body = body[: rng.randrange(len(body) + 1)]
        elif kind < 0.6:
            i = rng.randrange(len(body) + 1)
            body[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
        elif kind < 0.7:
            offsets = container.section_offsets(bytes(body) + bytes(container.TRAILER_LEN))
            if offsets:
                value = rng.choice([0, 1, 2**31, 2**63, 2**64 - 1, 2**70, rng.randrange(1 << 20)])
                at, size = rng.choice(offsets)
                body[at : at + size] = container.varint(value)
        elif kind < 0.75 and len(body) > len(container.MAGIC):
            body[len(container.MAGIC)] = rng.choice([0, 1, 8, 10, 127, 255])  # the version byte
        else:
            body = bytearray(_mutate_header(bytes(body), rng))
    if rng.random() < 0.85:
        return _reseal(bytes(body))
    keep = rng.random() < 0.5
    trailer = blob[-container.TRAILER_LEN :]
    return bytes(body) + (trailer if keep else bytes(rng.randrange(256) for _ in range(rng.randrange(33))))


def check(blob: bytes, original: bytes, lm, dictionary=None) -> str:
    """'ok' (exact original), 'refused: <error type>', or 'BUG: ...'."""
    from memzip import decompress

    try:
        out = decompress(blob, lm, dictionary=dictionary)
    except MemzipError as exc:
        return f"refused: {type(exc).__name__}"
    except Exception as exc:  # noqa: BLE001 - any other exception is exactly what the fuzzer hunts
        return f"BUG: {type(exc).__name__}: {exc}"
    return "ok" if out == original else "BUG: wrong bytes returned"


def seed_containers(lm) -> list[tuple[bytes, bytes]]:
    """(container, original) pairs from the tiny model: text as predicted windows (ranks), predicted
    windows beside raw spans, as compact codes and as full vectors, mixed, invalid UTF-8, all raw,
    empty."""
    from memzip import CompressSettings, OptimizerSettings, compress
    from memzip.format.vectors import VectorSpec

    from memzip.tiny import TRAINING_TEXT

    opt = OptimizerSettings(steps=60, lr=0.1, batch=8)
    compact = CompressSettings(window=4, optimizer=opt, store="always", vectors=VectorSpec("compact"))
    full = CompressSettings(window=4, optimizer=opt, vectors=VectorSpec("full"), store="always")
    predicted = CompressSettings(window=8, store="always")
    inputs = [
        (TRAINING_TEXT[:120].encode(), predicted),
        (TRAINING_TEXT[:100].encode() + bytes(range(32, 127)), CompressSettings(window=8)),  # windows and raw
        (TRAINING_TEXT[:90].encode(), compact),
        (TRAINING_TEXT[:60].encode(), full),
        (b"The quick brown fox \xff\xfe jumps\r\n over \x00 the lazy dog.", compact),
        (b"\x80\x81\x82", compact),
        (b"", compact),
    ]
    return [(compress(data, lm, settings), data) for data, settings in inputs]


def seed_dictionary(lm):
    """A dictionary trained on the tiny model's text, its file's bytes, and a container made with it."""
    from memzip import compress, dictionary
    from memzip.format import dictionary as dictfile
    from memzip.tiny import TRAINING_TEXT

    samples = [TRAINING_TEXT[i : i + 200].encode() for i in range(0, 800, 100)]
    file = dictionary.train(samples, lm, max_tokens=48)
    bound = dictionary.bind(file, lm)
    data = TRAINING_TEXT[50:170].encode()
    return bound, dictfile.write(file), (compress(data, lm, dictionary=bound), data)


def single_window_container() -> bytes:
    """A container in the packaged model's single-window profile (made without the model: the reader
    needs none)."""
    header = {**container.DEFAULT_PROFILE, "memzip_version": "", "original_size": 40, "window": 12, "context": 0,
              "dictionary": "0a1b2c3d"}
    c = container.Container(header, [(container.KIND_WINDOW, 12)], b"", b"", [bytes(range(1, 20))],
                            container.original_checksum(b"x" * 40))
    return container.write(c)


def check_reader(read, blob: bytes) -> str:
    """'read' or 'refused: <error type>' from a reader that needs no model, or 'BUG: ...'."""
    try:
        read(blob)
    except MemzipError as exc:
        return f"refused: {type(exc).__name__}"
    except Exception as exc:  # noqa: BLE001
        return f"BUG: {type(exc).__name__}: {exc}"
    return "read"


def _mutate_dictionary(blob: bytes, rng: random.Random) -> bytes:
    """Like ``mutate``: random damage, resealed with the dictionary's own trailer most of the time."""
    import hashlib

    body = bytearray(blob[:-4])
    for _ in range(rng.choice([1, 1, 2, 4])):
        kind = rng.random()
        if kind < 0.4 and body:
            body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
        elif kind < 0.6 and body:
            body[rng.randrange(len(body))] = rng.randrange(256)
        elif kind < 0.8:
            body = body[: rng.randrange(len(body) + 1)]
        else:
            i = rng.randrange(len(body) + 1)
            body[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
    if rng.random() < 0.85:
        return bytes(body) + hashlib.sha256(bytes(body)).digest()[:4]
    return bytes(body) + blob[-4:]


def seed_framed(lm) -> tuple[bytes, bytes]:
    """A framed file of three frames (tiny pieces of the tiny model's text) and its original."""
    from memzip import frames
    from memzip.tiny import TRAINING_TEXT

    data = TRAINING_TEXT[:150].encode()
    return frames.compress_bytes(data, lm, frame_size=60), data


def _framed_parts(blob: bytes) -> tuple[list[bytes], list[int]]:
    """A valid framed file's frames and its table's values (compressed, original, ... per frame)."""
    import io

    from memzip.format import frames as fmt

    table = fmt.read_table(io.BytesIO(blob))
    return ([blob[f.offset : f.offset + f.size] for f in table.frames],
            [v for f in table.frames for v in (f.size, f.original_size)])


def framed_file(parts: list[bytes], values: list[int], checksum: bytes, count: int | None = None,
                table: bytes | None = None) -> bytes:
    """A framed file of these frames and table values, with a footer that agrees with its table and
    records ``checksum`` as the original's."""
    from memzip.format import frames as fmt

    table = b"".join(container.varint(v) for v in values) if table is None else table
    count = len(values) // 2 if count is None else count
    return fmt.preamble() + b"".join(parts) + fmt.seek_table(table, count, checksum)


def mutate_framed(blob: bytes, rng: random.Random) -> tuple[bytes, bool]:
    """One random hostile variant of a valid framed file: damage inside a frame (its table entry kept
    in agreement), to the seek table's values, to the order or number of frames, to the footer's counts,
    or to any bytes; the table's checksum is made to agree most of the time, so that the damage reaches
    the checks behind it. Also returns whether a range restore must be exact: not when frames were
    reordered, or when the table reads with other original sizes (every frame and the table are then
    sound, the table checksum made to agree on purpose, and only a whole restore, which checks the
    original's checksum, can tell)."""
    from memzip.format import frames as fmt

    parts, values = _framed_parts(blob)
    checksum = fmt.FOOTER.unpack(blob[-fmt.FOOTER_LEN :])[2]
    count, positions = None, True
    kind = rng.random()
    if kind < 0.3:  # a frame damaged as a container is, its size in the table kept right
        i = rng.randrange(len(parts))
        parts[i] = mutate(parts[i], rng)
        values[2 * i] = len(parts[i])
    elif kind < 0.5:  # a table value replaced
        i = rng.randrange(len(values))
        values[i] = rng.choice([0, 1, 4, 5, values[i] - 1, values[i] + 1, 2**30, 2**30 + 1, 2**32, 2**63, 2**64 - 1])
    elif kind < 0.6:  # frames reordered, their entries with them or not
        i, j = rng.sample(range(len(parts)), 2)
        parts[i], parts[j] = parts[j], parts[i]
        positions = False  # even with its entry kept, a frame of the same sizes would read in its place
        if rng.random() < 0.5:
            values[2 * i : 2 * i + 2], values[2 * j : 2 * j + 2] = values[2 * j : 2 * j + 2], values[2 * i : 2 * i + 2]
    elif kind < 0.7:  # a frame dropped, its entry with it or not
        i = rng.randrange(len(parts))
        del parts[i]
        if rng.random() < 0.7:
            del values[2 * i : 2 * i + 2]
            positions = False
    elif kind < 0.8:  # the footer's frame count
        count = rng.choice([0, 1, 2, len(parts) - 1, len(parts) + 1, fmt.MAX_FRAMES, fmt.MAX_FRAMES + 1, 2**32 - 1])
    out = framed_file(parts, values, checksum, count)
    if kind >= 0.8:  # any bytes: flips, overwrites, truncation, insertion, a table of other length
        body = bytearray(out)
        for _ in range(rng.choice([1, 1, 2, 4])):
            roll = rng.random()
            if roll < 0.4 and body:
                body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
            elif roll < 0.6 and body:
                body[rng.randrange(len(body))] = rng.randrange(256)
            elif roll < 0.8:
                del body[rng.randrange(len(body) + 1) :]
            else:
                i = rng.randrange(len(body) + 1)
                body[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        out = bytes(body)
        if rng.random() < 0.85 and len(out) >= fmt.FOOTER_LEN:  # the footer's checksum made to agree
            n, size, original, _, magic = fmt.FOOTER.unpack(out[-fmt.FOOTER_LEN :])
            if size <= len(out) - fmt.FOOTER_LEN:
                table = out[len(out) - fmt.FOOTER_LEN - size : -fmt.FOOTER_LEN]
                out = out[: -fmt.FOOTER_LEN] + fmt.seek_table(table, n, original)[-fmt.FOOTER_LEN : -4] + magic
    if positions:  # a table that reads, with other original sizes: positions a range restore must trust
        try:
            positions = _framed_parts(out)[1][1::2] == _framed_parts(blob)[1][1::2]
        except ContainerError:
            pass
    return out, positions


def check_framed(blob: bytes, original: bytes, lm, rng: random.Random | None = None) -> str:
    """``check`` for a framed file, restored whole by ``memzip.frames.decompress_stream`` (with ``rng``,
    sometimes a random byte range of it by ``restore_range`` instead, which must then be refused or
    exact)."""
    import io

    from memzip import frames

    try:
        if rng is not None and rng.random() < 0.3:
            start = rng.randrange(len(original) + 1)
            end = rng.randrange(start, len(original) + 1)
            if frames.restore_range(io.BytesIO(blob), start, end, lm) != original[start:end]:
                return "BUG: wrong bytes returned"
            return "ok"
        out = io.BytesIO()
        frames.decompress_stream(io.BytesIO(blob), out, lm)
    except MemzipError as exc:
        return f"refused: {type(exc).__name__}"
    except Exception as exc:  # noqa: BLE001
        return f"BUG: {type(exc).__name__}: {exc}"
    return "ok" if out.getvalue() == original else "BUG: wrong bytes returned"


def run(cases: int, seed: int, lm, say=print) -> dict:
    from memzip.format import dictionary as dictfile

    seeds = seed_containers(lm)
    bound, dict_blob, with_dictionary = seed_dictionary(lm)
    single = single_window_container()
    framed, framed_original = seed_framed(lm)
    outcomes: collections.Counter = collections.Counter()
    bugs = []
    t0 = time.perf_counter()
    for case in range(cases):
        rng = random.Random(f"{seed}-{case}")
        kind = case % (len(seeds) + 4)
        if kind == len(seeds):  # a dictionary file
            outcome = check_reader(dictfile.read, _mutate_dictionary(dict_blob, rng))
        elif kind == len(seeds) + 1:  # the single-window profile (no trailer: mutations read as they are)
            outcome = check_reader(container.read, bytes(mutate(single + bytes(4), rng))[:-4])
        elif kind == len(seeds) + 3:  # a framed file (containers and a seek table)
            blob, positions = mutate_framed(framed, rng)
            outcome = check_framed(blob, framed_original, lm, rng if positions else None)
        elif kind == len(seeds) + 2:  # a container made with a dictionary, decoded with it
            blob, original = with_dictionary
            outcome = check(mutate(blob, rng), original, lm, bound)
        else:
            blob, original = seeds[kind]
            outcome = check(mutate(blob, rng), original, lm)
        outcomes[outcome] += 1
        if outcome.startswith("BUG"):
            bugs.append({"case": case, "seed": seed, "outcome": outcome})
        if (case + 1) % 10000 == 0:
            say(f"fuzz: {case + 1} cases, {len(bugs)} bugs, {time.perf_counter() - t0:.0f} s")
    return {"cases": cases, "seed": seed, "seconds": time.perf_counter() - t0, "outcomes": dict(outcomes),
            "bugs": bugs[:50]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__)
    p.add_argument("--cases", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the result as JSON here")
    args = p.parse_args(argv)
    from memzip.tiny import tiny_lm

    result = run(args.cases, args.seed, tiny_lm())
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 1 if result["bugs"] else 0


if __name__ == "__main__":
    sys.exit(main())
