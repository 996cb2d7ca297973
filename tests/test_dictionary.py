"""Dictionaries (memzip train, -D): the .mzd file read strictly, text chosen from samples, rows that
start after it in coding and decoding, and files refused without the dictionary they were made with."""

import struct
import subprocess
import sys

import pytest

from memzip import CompressSettings, compress, decompress
from memzip import dictionary
from memzip.codec import compress_with_report
from memzip.errors import ModelMismatchError
from memzip.format import container
from memzip.format import dictionary as dictfile
from memzip.tiny import TRAINING_TEXT

SAMPLES = [TRAINING_TEXT[i : i + 240].encode() for i in range(0, 900, 60)]


@pytest.fixture(scope="module")
def trained(lm):
    return dictionary.train(SAMPLES, lm, max_tokens=96)


def test_a_dictionary_file_round_trips_and_its_id_is_its_trailer(trained):
    blob = dictfile.write(trained)
    back = dictfile.read(blob)
    assert back == trained and back.id == trained.id == blob[-4:].hex()
    assert back.header["tokens"] == len(back.tokens) <= 96 and back.header["placement"] == "after"


def test_the_dictionary_reader_is_strict(trained):
    blob = dictfile.write(trained)
    for i in range(len(blob)):  # every flipped bit: the trailer (or the magic) finds it
        for bit in (0, 3, 7):
            bad = bytearray(blob)
            bad[i] ^= 1 << bit
            with pytest.raises(dictfile.DictionaryError):
                dictfile.read(bytes(bad))
    for cut in (0, 3, 8, len(blob) - 1):
        with pytest.raises(dictfile.DictionaryError):
            dictfile.read(blob[:cut])
    with pytest.raises(dictfile.DictionaryError, match="magic"):
        dictfile.read(container.MAGIC + blob[4:])


def _resealed(header: dict, tokens: list[int], vectors: bytes = b"") -> bytes:
    """A dictionary written by hand, trailer and all (the writer would refuse these)."""
    import hashlib
    import json

    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    body = (dictfile.MAGIC + container.varint(1) + container.varint(len(head)) + head
            + b"".join(container.varint(t) for t in tokens) + vectors)
    return body + hashlib.sha256(body).digest()[:4]


def test_hand_made_dictionaries_that_no_writer_makes_are_refused(trained):
    h = dict(trained.header)
    cases = [
        (_resealed({**h, "tokens": len(trained.tokens) + 1}, trained.tokens), "truncated|past the end"),
        (_resealed(h, trained.tokens + [5]), "unexpected bytes"),
        (_resealed({**h, "vectors": 1, "hidden_size": 2}, trained.tokens, struct.pack("<2f", 1.0, float("nan"))),
         "not finite"),
        (_resealed({**h, "placement": "middle"}, trained.tokens), "placement"),
        (_resealed({**h, "tokens": 0, "vectors": 0}, []), "empty"),
        (_resealed({k: v for k, v in h.items() if k != "samples"}, trained.tokens), "fields"),
    ]
    for blob, message in cases:
        with pytest.raises(dictfile.DictionaryError, match=message):
            dictfile.read(blob)


def test_a_dictionary_is_bound_only_to_the_model_it_was_made_for(lm, trained):
    other = dictfile.DictionaryFile({**trained.header, "model_fingerprint": "00" * 32}, list(trained.tokens))
    dictfile.write(other)
    with pytest.raises(dictionary.DictionaryMismatch, match="made for model"):
        dictionary.bind(other, lm)


def test_segments_are_chosen_by_the_samples_that_share_them():
    common = [7, 8, 9, 10, 11, 12, 13, 14]
    samples = [common + [100 + i] * 8 for i in range(6)] + [[50 + i for i in range(16)]]
    chosen = dictionary.select_text(samples, 16)
    assert sum(map(len, chosen)) <= 16 and any(common[:4] == piece[:4] for piece in chosen)
    assert all(50 not in piece for piece in chosen)  # what one sample alone holds is not worth a place


def test_files_made_with_a_dictionary_restore_with_it_only(lm, trained):
    d = dictionary.bind(trained, lm)
    data = TRAINING_TEXT[300:520].encode()
    blob, report = compress_with_report(data, lm, CompressSettings(), dictionary=d)
    c = container.read(blob)
    assert c.header["dictionary"] == d.id and report.predicted == 1
    assert decompress(blob, lm, dictionary=d) == data
    with pytest.raises(ModelMismatchError, match=f"needs dictionary {d.id}"):
        decompress(blob, lm)
    other = dictionary.bind(dictionary.train(SAMPLES[:4], lm, max_tokens=40), lm)
    with pytest.raises(ModelMismatchError, match=f"needs dictionary {d.id}, not {other.id}"):
        decompress(blob, lm, dictionary=other)
    plain = compress(data, lm)
    assert container.read(plain).header["dictionary"] == "" and decompress(plain, lm, dictionary=d) == data


def test_long_files_with_a_dictionary_and_a_shared_context_round_trip(lm, trained):
    d = dictionary.bind(trained, lm)
    data = (TRAINING_TEXT * 3).encode()
    blob = compress(data, lm, CompressSettings(window=200, context=40, store="always"), dictionary=d)
    c = container.read(blob)
    assert c.window_count > 2 and c.header["context"] == 40 and c.header["dictionary"] == d.id
    assert decompress(blob, lm, dictionary=d) == data


def test_the_cli_trains_and_uses_a_dictionary(tiny_model_dir, tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    for i, blob in enumerate(SAMPLES):
        (samples / f"s{i}.txt").write_bytes(blob)
    mzd, text = tmp_path / "d.mzd", tmp_path / "note.txt"
    text.write_bytes(TRAINING_TEXT[123:400].encode())
    cli = [sys.executable, "-m", "memzip"]
    model = ["--model", tiny_model_dir]
    subprocess.run(cli + ["train", "-q", "--max-tokens", "64", "-o", str(mzd), str(samples)] + model, check=True)
    subprocess.run(cli + ["-q", "-D", str(mzd), str(text)] + model, check=True)
    text.rename(tmp_path / "orig.txt")
    refused = subprocess.run(cli + ["-d", "-q", str(tmp_path / "note.txt.mz")] + model, capture_output=True, text=True)
    assert refused.returncode == 1 and "needs dictionary" in refused.stderr and not text.exists()
    subprocess.run(cli + ["-d", "-q", "-D", str(mzd), str(tmp_path / "note.txt.mz")] + model, check=True)
    assert text.read_bytes() == (tmp_path / "orig.txt").read_bytes()


def test_many_files_coded_together_are_the_files_each_makes_alone(lm, trained):
    from memzip.codec import compress_many, decompress_many

    d = dictionary.bind(trained, lm)
    inputs = [TRAINING_TEXT[i : i + 90 + 37 * (i % 5)].encode() for i in range(0, 700, 70)]
    inputs += [b"", bytes(range(256)) * 3, (TRAINING_TEXT * 2).encode()]  # empty, binary, several windows
    settings = CompressSettings(window=160, context=32)
    for start in (None, d):
        together = compress_many(inputs, lm, settings, dictionary=start)
        alone = [compress_with_report(data, lm, settings, dictionary=start)[0] for data in inputs]
        assert [blob for blob, _report in together] == alone
        assert decompress_many(alone, lm, dictionary=start) == inputs
    bad = bytearray(alone[2])
    bad[-6] ^= 1
    with pytest.raises(Exception):
        decompress_many(alone[:2] + [bytes(bad)], lm, dictionary=d)
