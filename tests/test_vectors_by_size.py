"""Memory vectors chosen by total code length (--objective size): the optimizer lowers the float
cross-entropy, the file keeps vectors only when they make it smaller, and kept vectors decode."""

import pytest

from memzip import CompressSettings, OptimizerSettings, compress, decompress
from memzip.codec import compress_with_report
from memzip.vectors.codes import VectorCode
from memzip.errors import SettingsError
from memzip.format import container
from memzip.format.vectors import VectorSpec
from memzip.strategies import Outcome, Stored
from memzip.vectors import vectors_by_size
from memzip.vectors.optimizer import optimize_for_size
from memzip.strategies.model_coded import ModelCoded
from memzip.tiny import TRAINING_TEXT

SIZE = CompressSettings(optimizer=OptimizerSettings(steps=8, lr=0.05), vectors=VectorSpec("compact", 16, 4),
                        objective="size")


def test_optimizing_for_size_lowers_the_float_cross_entropy(lm):
    tokens = lm.tokenizer(TRAINING_TEXT[:200], add_special_tokens=False)["input_ids"]
    code = VectorCode(VectorSpec("full"), lm)
    best, trace = optimize_for_size(lm, tokens, OptimizerSettings(steps=12, lr=0.05), code)
    assert len(trace) == 12 and min(trace) < trace[0] - 1.0  # bits
    assert len(best) == code.size


def test_size_objective_needs_vectors():
    with pytest.raises(SettingsError, match="objective"):
        CompressSettings(objective="size")
    with pytest.raises(SettingsError, match="objective"):
        CompressSettings(vectors=VectorSpec("full"), objective="fastest")


def test_a_file_keeps_no_vector_that_does_not_make_it_smaller(lm):
    data = TRAINING_TEXT[:300].encode()
    blob, report = compress_with_report(data, lm, SIZE)
    plain = compress(data, lm, CompressSettings())
    # a vector costs 18 bytes here; the tiny model's streams cannot save that many: the default file
    assert container.read(blob).vector_spec.code == "none" and report.vectors == 0 and report.predicted >= 1
    assert blob == plain
    assert decompress(blob, lm) == data


def test_vectors_that_cost_more_than_they_save_are_dropped(lm, monkeypatch):
    """Make the streams coded given the vectors expensive: the file is then exactly the default one."""
    real = vectors_by_size.code_windows

    def expensive(lm_, windows, vectors=None, *args, **kwargs):
        streams, bits = real(lm_, windows, vectors, *args, **kwargs)
        return [s + bytes(1000) for s in streams] if vectors is not None else streams, bits

    monkeypatch.setattr(vectors_by_size, "code_windows", expensive)
    data = TRAINING_TEXT[:300].encode()
    blob, report = compress_with_report(data, lm, SIZE)
    assert blob == compress(data, lm, CompressSettings()) and report.vectors == 0
    assert container.read(blob).header["settings"] == {}


def test_kept_vectors_are_recorded_and_decode(lm, monkeypatch):
    """Make the plain streams look expensive so that the vectors win: the file then holds one compact
    code per row, its tokens coded given them, and decodes exactly."""
    real = ModelCoded.store

    def padded(self, job):
        out = real(self, job)
        return Outcome({i: Stored(s.code, s.stream + bytes(10_000)) for i, s in out.stored.items()}, out.resumed,
                       out.not_tried)

    monkeypatch.setattr(vectors_by_size.ModelCoded, "store", padded)
    data = TRAINING_TEXT[:300].encode()
    blob, report = compress_with_report(data, lm, SIZE)
    c = container.read(blob)
    assert len(blob) < 10_000  # the file without vectors holds the padded streams: the smaller one is kept
    assert c.vector_spec == VectorSpec("compact", 16, 4) and report.vectors == c.window_count >= 1
    assert c.header["settings"]["objective"] == "size"
    assert len(c.codes) == c.window_count * VectorSpec("compact", 16, 4).code_bytes(lm.hidden_size)
    assert decompress(blob, lm) == data
