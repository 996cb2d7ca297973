"""Vector codes: what the optimizer trains, what the container stores, what the decoder rebuilds."""

import pytest
import torch

from memzip import CompressSettings, OptimizerSettings, compress, decompress
from memzip.codec import compress_with_report
from memzip.format import container
from memzip.progress import Progress
from memzip.strategies import Job, worth_storing
from memzip.vectors.codes import BASIS_BITS, VectorCode, basis_digest, embedding_basis, header_field
from memzip.format.vectors import VectorSpec, check_codes, spec_from_header
from memzip.windows import Segment
from memzip.tiny import TRAINING_TEXT

SPECS = [VectorSpec("full"), VectorSpec("compact", 16, 4), VectorSpec("compact", 64, 8), VectorSpec("compact", 8, 2)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.describe())
def test_train_view_is_exactly_what_the_decoder_rebuilds(lm, spec):
    code = VectorCode(spec, lm)
    params = torch.randn(5, code.dim, generator=torch.Generator().manual_seed(1))
    codes = code.quantize(params)
    assert [len(c) for c in codes] == [spec.code_bytes(lm.hidden_size)] * 5
    rebuilt = code.rebuild(codes)
    assert rebuilt.shape == (5, lm.hidden_size) and rebuilt.dtype == torch.float32
    assert torch.equal(code.train_view(params).detach(), rebuilt)
    check_codes(code.spec, lm.hidden_size, b"".join(codes), 5)  # what the writer stores, the reader accepts


@pytest.mark.parametrize("spec", SPECS[1:], ids=lambda s: s.describe())
def test_compact_codes_hold_bits_bit_integers_and_a_positive_scale(lm, spec):
    code = VectorCode(spec, lm)
    raw = b"".join(code.quantize(torch.randn(7, code.dim) * 3))
    rows = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(7, 2 + spec.rank)
    q = rows[:, 2:].contiguous().view(torch.int8)
    assert q.abs().max() == spec.levels  # absmax scaling uses the full range
    assert (rows[:, :2].contiguous().view(torch.bfloat16).float() > 0).all()


def test_rebuilding_does_not_depend_on_which_windows_are_rebuilt_together(lm):
    code = VectorCode(VectorSpec("compact", 48, 5), lm)
    codes = code.quantize(torch.randn(9, 48, generator=torch.Generator().manual_seed(2)))
    together = code.rebuild(codes)
    for i in range(9):
        assert torch.equal(code.rebuild([codes[i]])[0], together[i])
    assert torch.equal(code.rebuild(codes[::-1]), together.flip(0))


def test_gradient_passes_straight_through_the_rounding(lm):
    code = VectorCode(VectorSpec("compact", 16, 3), lm)
    params = torch.randn(2, 16, requires_grad=True)
    upstream = torch.randn(2, lm.hidden_size)
    (code.train_view(params) * upstream).sum().backward()
    assert torch.allclose(params.grad, upstream @ code.basis32.T, atol=1e-5)


def test_basis_is_orthogonal_ordered_by_variance_and_sign_fixed(lm):
    grid = float(1 << BASIS_BITS)
    mean_grid, basis_grid = embedding_basis(lm, lm.hidden_size)
    assert torch.equal(mean_grid, mean_grid.round()) and torch.equal(basis_grid, basis_grid.round())  # integers
    mean, basis = mean_grid / grid, basis_grid / grid
    weight = lm.float_model.get_input_embeddings().weight.detach().double()
    assert torch.equal(weight, lm.embedding_table().double())  # the engine's table is the model's
    assert torch.allclose(mean, weight.mean(dim=0), atol=1e-7)
    norms = basis.norm(dim=1)
    assert (norms[:-1] >= norms[1:] - 1e-12).all()  # directions by decreasing standard deviation
    unit = basis / norms.unsqueeze(1)
    assert torch.allclose(unit @ unit.T, torch.eye(lm.hidden_size, dtype=torch.float64), atol=1e-5)
    centred = weight - mean
    assert torch.allclose(norms**2, (centred @ unit.T).var(dim=0, unbiased=False), rtol=1e-3)  # std along each
    biggest = unit.abs().argmax(dim=1)
    assert (unit.gather(1, biggest.unsqueeze(1)) > 0).all()
    assert basis_digest(lm, 16) == basis_digest(lm, 16) != basis_digest(lm, 17)


def test_rank_is_capped_at_the_model_width(lm):
    assert VectorCode(VectorSpec("compact", 10_000, 4), lm).spec == VectorSpec("compact", lm.hidden_size, 4)
    assert VectorSpec("compact", 10_000, 4).fitted(64).rank == 64 and VectorSpec("full").fitted(8).code == "full"


def test_specs_round_trip_through_the_header_and_bad_ones_are_refused(lm):
    for spec in SPECS:
        assert spec_from_header(header_field(spec, lm), lm.hidden_size) == spec
    good = VectorSpec("compact", 16, 4).header(basis_digest(lm, 16))
    for bad in ({"code": "half"}, {**good, "bits": 9}, {**good, "rank": 0}, {**good, "basis": "random"},
                {**good, "extra": 1}, {**good, "basis_digest": "no"}, {**good, "rank": 1.0}, "full"):
        with pytest.raises(ValueError):
            spec_from_header(bad, lm.hidden_size)
    for args in (("half",), ("compact", 0, 4), ("compact", 8, 1), ("compact", 8, 9)):
        with pytest.raises(ValueError):
            VectorSpec(*args)


def test_stored_bits_count_what_the_code_carries():
    assert VectorSpec("full").stored_bits(576) == 576 * 16
    assert VectorSpec("compact", 256, 4).stored_bits(576) == 16 + 256 * 4
    assert VectorSpec("compact", 256, 4).code_bytes(576) == 2 + 256  # one byte per number before zstd


def _job(data: bytes, windows, store: str) -> Job:
    return Job(data, windows, CompressSettings(store=store), lm=None, progress=Progress())


def test_smaller_policy_tries_only_windows_a_code_could_beat():
    data = b"x" * 1000  # zstd shrinks this to almost nothing: no window is worth a vector
    windows = [Segment(b"x" * 100, (1,) * 4), Segment(b"x" * 900, (1,) * 4)]
    assert worth_storing(_job(data, windows, "smaller"), [20, 20]) == [False, False]
    always = _job(data, windows, "always")
    assert worth_storing(always, [20, 20]) == [True, True] and "zstd_frame" not in vars(always)  # not computed
    noise = bytes(range(256)) * 4  # incompressible: a 10-byte code beats a 100-byte window
    windows = [Segment(noise[:100], (1,) * 4), Segment(noise[100:110], (1,) * 4)]
    job = _job(noise, windows, "smaller")
    assert worth_storing(job, [10, 10]) == [True, False]
    assert job.zstd_frame == container.zstd_frame(noise) and worth_storing(job, [10, 10]) == [True, False]


def test_smaller_policy_stores_raw_what_a_vector_cannot_beat(lm):
    data = TRAINING_TEXT[:120].encode()
    settings = CompressSettings(window=4, optimizer=OptimizerSettings(steps=5), vectors=VectorSpec("compact"))
    blob, report = compress_with_report(data, lm, settings)
    r = report
    assert r.not_tried == r.windows == r.fallback_windows and r.vectors == 0 and r.steps == []
    c = container.read(blob)
    assert c.window_count == 0 and c.codes == b""
    assert c.sizes["vectors"] == 0 and 0 < c.sizes["fallback"] < len(data)
    assert decompress(blob, lm) == data


def test_full_and_compact_files_both_round_trip_and_record_their_code(lm):
    data = TRAINING_TEXT[:60].encode()
    for spec in (VectorSpec("full"), VectorSpec("compact", 32, 4)):
        settings = CompressSettings(window=4, optimizer=OptimizerSettings(steps=60, lr=0.1, batch=8), vectors=spec,
                                    store="always")
        blob, report = compress_with_report(data, lm, settings)
        c = container.read(blob)
        assert c.vector_spec == spec and report.vectors >= 1
        assert len(c.codes) == report.vectors * spec.code_bytes(lm.hidden_size)
        assert decompress(blob, lm) == data


def test_a_decoder_with_another_basis_refuses_before_decoding(lm, monkeypatch):
    import memzip.vectors.codes as codes
    from memzip.errors import ModelMismatchError

    data = TRAINING_TEXT[:40].encode()
    settings = CompressSettings(window=4, optimizer=OptimizerSettings(steps=60, lr=0.1, batch=8),
                                vectors=VectorSpec("compact", 32, 4), store="always")
    blob = compress(data, lm, settings)
    assert decompress(blob, lm) == data
    monkeypatch.setattr(codes, "basis_digest", lambda lm_, rank: "f" * 16)
    with pytest.raises(ModelMismatchError, match="basis"):
        decompress(blob, lm)


def test_compact_vectors_are_rebuilt_exactly_row_by_row(lm):
    """Rebuilding is integer work on the grid, then one rounding per operation: the same vectors
    whether windows are rebuilt one at a time or together."""
    code = VectorCode(VectorSpec("compact", 32, 4), lm)
    params = torch.randn(6, 32, generator=torch.Generator().manual_seed(4))
    codes = code.quantize(params)
    together = code.rebuild(codes)
    assert torch.equal(together, torch.cat([code.rebuild(c) for c in codes]))
