from dataclasses import replace

import pytest
import torch

from memzip.decoder import decode_windows
from memzip.format.vectors import VectorSpec
from memzip.settings import OptimizerSettings
from memzip.vectors.codes import VectorCode
from memzip.vectors.optimizer import RowAdam, optimize_windows, resolved, teacher_forced

SPECS = [VectorSpec("full"), VectorSpec("compact", 32, 4)]


def test_row_adam_matches_torch_adam_per_row():
    torch.manual_seed(0)
    settings = OptimizerSettings(lr=0.05)
    x0 = torch.randn(3, 5)
    ref = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([ref], lr=settings.lr, betas=settings.betas, eps=settings.eps)
    x, m, v, t = x0.clone(), torch.zeros(3, 5), torch.zeros(3, 5), torch.zeros(3)
    adam = RowAdam(settings, settings.lr)
    for step in range(6):
        grad = torch.randn(3, 5)
        opt.zero_grad()
        ref.grad = grad.clone()
        opt.step()
        x, m, v, t = adam.step(x, grad, m, v, t)
    assert torch.allclose(x, ref.detach(), atol=1e-6)


def test_row_adam_rows_are_independent():
    settings = OptimizerSettings(lr=0.1)
    adam = RowAdam(settings, settings.lr)
    grad = torch.ones(2, 4)
    x, m, v, t = adam.step(torch.zeros(2, 4), grad, torch.zeros(2, 4), torch.zeros(2, 4), torch.tensor([0.0, 10.0]))
    assert not torch.allclose(x[0], x[1])  # different step counts give different bias corrections
    assert t.tolist() == [1.0, 11.0]


def _windows(lm, text, size):
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    return [ids[i:i + size] for i in range(0, len(ids), size)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.code)
def test_converged_windows_keep_the_exact_code_that_passed(lm, spec):
    windows = _windows(lm, "The quick brown fox jumps over the lazy dog. Memory tokens", 4)
    code = VectorCode(spec, lm)
    seen = []

    def verify(codes, tokens):
        seen.extend(codes)
        decoded = decode_windows(lm, [len(t) for t in tokens], None, code.rebuild(codes))
        return [d == t for d, t in zip(decoded, tokens)]

    lr = 0.1 if spec.code == "full" else 0.3
    results = optimize_windows(lm, windows, OptimizerSettings(steps=60, lr=lr, batch=4), code, verify)
    done = [r for r in results if r.code is not None]
    assert done, "the tiny model should memorize at least one 4-token window"
    for r, window in zip(results, windows):
        if r.code is None:
            continue
        assert len(r.code) == spec.code_bytes(lm.hidden_size)
        assert r.code in seen  # returned exactly as verified
        vector = code.rebuild([r.code])
        assert decode_windows(lm, [len(window)], None, vector)[0] == window
        _, margins = teacher_forced(lm, vector, [window])
        assert margins.shape == (1, len(window)) and margins.min().item() > 0


def test_failed_verification_is_retried_then_given_up(lm):
    windows = _windows(lm, "The quick brown fox", 2)
    calls = []

    def never(vectors, tokens):
        calls.append(len(tokens))
        return [False] * len(tokens)

    settings = OptimizerSettings(steps=60, lr=0.3, batch=8)
    results = optimize_windows(lm, windows, settings, VectorCode(VectorSpec("full"), lm), never)
    assert all(r.code is None for r in results)
    assert all(r.steps <= settings.steps for r in results)
    assert sum(r.verify_failures for r in results) == sum(calls)


def test_step_budget_is_respected(lm):
    windows = _windows(lm, "compression is prediction; prediction is compression", 16)
    progress = []
    results = optimize_windows(
        lm, windows, OptimizerSettings(steps=5, lr=1e-6, batch=2), VectorCode(VectorSpec("compact"), lm),
        lambda v, t: [False] * len(t), on_progress=lambda finished, steps: progress.append((finished, steps)),
    )
    assert [r.code for r in results] == [None] * len(windows)
    assert all(r.steps == 5 for r in results)
    assert progress[-1][0] == len(windows)


def test_precision_auto_resolves_to_what_the_device_supports(monkeypatch):
    import memzip.vectors.optimizer as optimizer

    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(optimizer, "bf16_is_native", lambda device, native=native: native)
        assert resolved(OptimizerSettings(), "cpu").precision == expected
        assert resolved(OptimizerSettings(precision="fp32"), "cpu").precision == "fp32"  # explicit wins
    with pytest.raises(ValueError):
        OptimizerSettings(precision="fp8")


def test_bf16_teacher_forcing_is_autocast_and_close_to_fp32(lm):
    windows = _windows(lm, "The quick brown fox jumps over the lazy dog.", 4)[:3]
    vectors = lm.mean_embedding().expand(len(windows), -1).clone()
    loss32, margins32 = teacher_forced(lm, vectors, windows, "fp32")
    loss16, margins16 = teacher_forced(lm, vectors, windows, "bf16")
    assert not torch.equal(loss32, loss16)  # really computed in another precision
    assert torch.allclose(loss32, loss16, rtol=0.05, atol=0.05)
    assert torch.allclose(margins32, margins16, atol=0.25)


def test_candidates_are_proven_in_groups(lm):
    windows = _windows(lm, "The quick brown fox jumps over the lazy dog. Memory tokens let a model", 4)
    code = VectorCode(VectorSpec("full"), lm)
    calls = {}

    def verify_into(key):
        def verify(codes, tokens):
            calls.setdefault(key, []).append(len(tokens))
            decoded = decode_windows(lm, [len(t) for t in tokens], None, code.rebuild(codes))
            return [d == t for d, t in zip(decoded, tokens)]
        return verify

    base = OptimizerSettings(steps=60, lr=0.1, batch=len(windows), precision="fp32")
    grouped = optimize_windows(lm, windows, base, code, verify_into("grouped"))
    eager = optimize_windows(lm, windows, replace(base, verify_batch=1), code, verify_into("eager"))
    # grouping changes when a window is proven, not what it converges to (while no proof fails, every
    # window sees the same batches either way)
    clean = [i for i in range(len(windows)) if grouped[i].verify_failures == eager[i].verify_failures == 0]
    assert [grouped[i].code for i in clean] == [eager[i].code for i in clean] and clean
    assert sum(r.code is not None for r in grouped) >= 3
    assert sum(calls["grouped"]) == sum(calls["eager"])
    assert len(calls["grouped"]) < len(calls["eager"])  # fewer, larger replays
