import torch

from memzip.decoder import STORED_DTYPE, greedy_decode
from memzip.optimizer import OptimizerSettings, RowAdam, optimize_windows, teacher_forced


def test_row_adam_matches_torch_adam_per_row():
    torch.manual_seed(0)
    settings = OptimizerSettings(lr=0.05)
    x0 = torch.randn(3, 5)
    ref = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([ref], lr=settings.lr, betas=settings.betas, eps=settings.eps)
    x, m, v, t = x0.clone(), torch.zeros(3, 5), torch.zeros(3, 5), torch.zeros(3)
    adam = RowAdam(settings)
    for step in range(6):
        grad = torch.randn(3, 5)
        opt.zero_grad()
        ref.grad = grad.clone()
        opt.step()
        x, m, v, t = adam.step(x, grad, m, v, t)
    assert torch.allclose(x, ref.detach(), atol=1e-6)


def test_row_adam_rows_are_independent():
    settings = OptimizerSettings(lr=0.1)
    adam = RowAdam(settings)
    grad = torch.ones(2, 4)
    x, m, v, t = adam.step(torch.zeros(2, 4), grad, torch.zeros(2, 4), torch.zeros(2, 4), torch.tensor([0.0, 10.0]))
    assert not torch.allclose(x[0], x[1])  # different step counts give different bias corrections
    assert t.tolist() == [1.0, 11.0]


def _windows(lm, text, size):
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def test_converged_windows_keep_the_exact_vector_that_passed(lm):
    windows = _windows(lm, "The quick brown fox jumps over the lazy dog. Memory tokens", 4)
    seen = []

    def verify(vectors, tokens):
        seen.append(vectors.clone())
        decoded = greedy_decode(lm, vectors, [len(t) for t in tokens], 64, lm.prefix_id)
        return [d == t for d, t in zip(decoded, tokens)]

    results = optimize_windows(lm, windows, OptimizerSettings(steps=60, lr=0.1, batch=4), verify)
    done = [r for r in results if r.vector is not None]
    assert done, "the tiny model should memorize at least one 4-token window"
    verified_rows = torch.cat(seen)
    for r, window in zip(results, windows):
        if r.vector is None:
            continue
        assert r.vector.dtype == STORED_DTYPE
        assert any(torch.equal(r.vector, row) for row in verified_rows)  # returned exactly as verified
        assert greedy_decode(lm, r.vector[None], [len(window)], 1, lm.prefix_id)[0] == window
        _, margins = teacher_forced(lm, r.vector.float()[None], [window])
        assert margins.shape == (1, len(window)) and margins.min().item() > 0


def test_failed_verification_is_retried_then_given_up(lm):
    windows = _windows(lm, "The quick brown fox", 2)
    calls = []

    def never(vectors, tokens):
        calls.append(len(tokens))
        return [False] * len(tokens)

    settings = OptimizerSettings(steps=60, lr=0.3, batch=8)
    results = optimize_windows(lm, windows, settings, never)
    assert all(r.vector is None for r in results)
    assert all(r.steps <= settings.steps for r in results)
    assert sum(r.verify_failures for r in results) == sum(calls)


def test_step_budget_is_respected(lm):
    windows = _windows(lm, "compression is prediction; prediction is compression", 16)
    progress = []
    results = optimize_windows(
        lm, windows, OptimizerSettings(steps=5, lr=1e-6, batch=2), lambda v, t: [False] * len(t),
        lambda finished, steps: progress.append((finished, steps)),
    )
    assert [r.vector for r in results] == [None] * len(windows)
    assert all(r.steps == 5 for r in results)
    assert progress[-1][0] == len(windows)
