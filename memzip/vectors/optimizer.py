"""Optimization of one memory vector per window, with the model frozen.

Layout of a training row (the decoder replays the same prefix)::

    position:  0              1                2 ..  n
    input:     embed(prefix)  q(vector)        embed(t_0) .. embed(t_{n-2})
    predicts:  -              t_0              t_1 .. t_{n-1}

Each window trains a parameter row of its vector code (memzip/vectors/codes.py: the bf16 vector itself, or a
small quantized code in a basis); ``q(vector)`` is the vector the decompressor will rebuild from that
row's stored code, with a straight-through gradient, so every forward sees exactly what the container
will hold.

Continuous batching: ``batch`` windows are optimized at once, each with its own parameters and its own
Adam state (``RowAdam``). A window whose teacher-forced argmax is right at every position by at least
``margin + CANDIDATE_SLACK`` logits is frozen at once -- the exact code that passed, not one more Adam
step -- and its slot is given to the next waiting window. Frozen candidates are then proven by
``verify`` (the exact engine every decoder runs, which must reproduce the window greedily with every
position's top logit ahead of the runner-up by ``margin``), in groups: ``verify_batch`` (by default
``batch``) of them, or, once nothing is waiting, as many as are still optimizing. A candidate that fails
goes back to optimization with a doubled target. A window still unproven after ``steps`` steps is
returned without a code (the caller stores it raw).

``precision`` is the arithmetic of the optimizer's own passes only: "bf16" runs them under bfloat16
autocast (faster on CUDA and on CPUs with native bf16), "fp32" in float32, "auto" picks bf16 where the
device supports it (``resolved``: the pipeline resolves it once per compression and records what it
chose). It cannot make a stored code inexact: verification is the exact engine's replay.
The optimizer's float model and the engine differ by the engine's quantization (its logits move by up
to a few tenths of a logit), so a candidate's float margin is a guess the engine then confirms.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..settings import OptimizerSettings
from .codes import VectorCode
from .results import WindowResult


def bf16_is_native(device) -> bool:
    """Does ``device`` compute bfloat16 matmuls natively (CUDA with bf16, or a CPU with AVX512-BF16/AMX)?"""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolved(settings: OptimizerSettings, device) -> OptimizerSettings:
    """``settings`` with ``precision`` "auto" replaced by what it means on ``device`` (bf16 where it is
    native, else fp32); settings with an explicit precision are returned as they are."""
    if settings.precision != "auto":
        return settings
    return replace(settings, precision="bf16" if bf16_is_native(device) else "fp32")


# Teacher-forced logits (one parallel forward) and the decoder's cached replay differ by numeric noise;
# aiming a little above the required margin keeps the replay check from failing by a hair.
CANDIDATE_SLACK = 0.1


class RowAdam:
    """Adam where each row of the parameter matrix is an independent problem with its own step count."""

    def __init__(self, settings: OptimizerSettings, lr: float):
        self.lr = lr
        self.b1, self.b2 = settings.betas
        self.eps = settings.eps

    def step(self, x: torch.Tensor, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor, t: torch.Tensor):
        """Return updated (x, m, v, t) for rows; t is a float tensor [rows]."""
        m = self.b1 * m + (1 - self.b1) * grad
        v = self.b2 * v + (1 - self.b2) * grad * grad
        t = t + 1
        m_hat = m / (1 - self.b1 ** t).unsqueeze(1)
        v_hat = v / (1 - self.b2 ** t).unsqueeze(1)
        return x - self.lr * m_hat / (v_hat.sqrt() + self.eps), m, v, t


@dataclass
class _Window:
    index: int
    tokens: list[int]
    params: torch.Tensor  # fp32 master copy of the code's parameters [dim]
    m: torch.Tensor
    v: torch.Tensor
    t: float = 0.0
    steps: int = 0
    margin: float = 0.0
    verify_failures: int = 0
    candidate: bytes | None = field(default=None, repr=False)


def _row_logits(lm, vectors: torch.Tensor, ids: torch.Tensor, precision: str) -> torch.Tensor:
    """Float-model logits [n, L, V] of rows ``[prefix, vector, ids[:, :-1]]``: position 1 + k predicts
    ``ids[:, k]`` (float32, or under bf16 autocast)."""
    n = ids.shape[0]
    prefix = lm.float_embed(torch.full((n, 1), lm.prefix_id, dtype=torch.long, device=lm.device))
    embeds = torch.cat([prefix, vectors.view(n, 1, -1), lm.float_embed(ids[:, :-1])], dim=1)
    with torch.autocast(lm.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        return lm.float_model(inputs_embeds=embeds, logits_to_keep=ids.shape[1]).logits.float()


def teacher_forced(lm, vectors: torch.Tensor, windows: Sequence[Sequence[int]], precision: str = "fp32"):
    """Forward a batch of rows, each ``[prefix, vector, tokens[:-1]]``, in float32 or under bf16 autocast.

    ``vectors`` are used as given (the caller has already made them what the decoder will see).
    Returns (per-row mean cross-entropy [B], per-position margins [B, L]): the target's logit minus the
    best other logit (> 0 where the argmax is right; +inf on padding).
    """
    device = lm.device
    n, longest = len(windows), max(len(w) for w in windows)
    ids = torch.zeros((n, longest), dtype=torch.long, device=device)
    mask = torch.zeros((n, longest), dtype=torch.bool, device=device)
    for row, w in enumerate(windows):
        ids[row, : len(w)] = torch.tensor(w, dtype=torch.long)
        mask[row, : len(w)] = True
    logits = _row_logits(lm, vectors, ids, precision)  # [n, longest, V]
    ce = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none")
    loss = (ce * mask).sum(dim=1) / mask.sum(dim=1)
    with torch.no_grad():
        target = logits.gather(2, ids.unsqueeze(2)).squeeze(2)
        others = logits.scatter(2, ids.unsqueeze(2), float("-inf")).amax(dim=2)
        margins = (target - others).masked_fill(~mask, float("inf"))
    return loss, margins


def optimize_windows(
    lm,
    windows: Sequence[Sequence[int]],
    settings: OptimizerSettings,
    code: VectorCode,
    verify: Callable[[list[bytes], list[list[int]]], list[bool]],
    *,
    on_progress: Callable[[int, int], None] | None = None,
    on_result: Callable[[int, WindowResult], None] | None = None,
) -> list[WindowResult]:
    """Find a verified stored code for every window that converges within the step budget.

    ``verify(codes, windows)`` must return, per row, whether decoding reproduces the window exactly
    (with the required safety margin). ``on_progress(windows_finished, total_steps)`` is called after
    every optimizer step, ``on_result(index, result)`` the moment a window is finished. A precision
    "auto" is resolved for ``lm.device`` (``resolved``).
    """
    results: list[WindowResult | None] = [None] * len(windows)
    if not windows:
        return []
    settings = resolved(settings, lm.device)
    init = code.initial()
    adam = RowAdam(settings, settings.lr if settings.lr is not None else code.default_lr)
    group = settings.verify_batch or settings.batch
    waiting: deque[_Window] = deque(
        _Window(i, list(w), init.clone(), torch.zeros_like(init), torch.zeros_like(init),
                margin=settings.margin + CANDIDATE_SLACK)
        for i, w in enumerate(windows)
    )
    active: list[_Window] = []
    candidates: list[_Window] = []
    finished = total_steps = 0

    def finish(w: _Window, stored: bytes | None) -> None:
        nonlocal finished
        last = stored if stored is not None else code.quantize(w.params.unsqueeze(0))[0]
        results[w.index] = WindowResult(stored, w.steps, w.verify_failures, last)
        finished += 1
        if on_result is not None:
            on_result(w.index, results[w.index])

    def verify_candidates() -> None:
        codes = [w.candidate for w in candidates]
        for w, ok in zip(candidates, verify(codes, [w.tokens for w in candidates])):
            if ok:
                finish(w, w.candidate)
            else:
                w.verify_failures += 1
                w.margin = max(2 * w.margin, 0.5)
                w.candidate = None
                if w.steps < settings.steps:
                    waiting.appendleft(w)
                else:
                    finish(w, None)
        candidates.clear()

    while waiting or active or candidates:
        while waiting and len(active) < settings.batch:
            active.append(waiting.popleft())
        # one replay of many candidates costs little more than one of a few: prove them in groups of
        # verify_batch, or, once no window is waiting, when they are at least as many as those still
        # optimizing (a few replays in all, and finished windows reach the journal soon)
        if candidates and (len(candidates) >= group or (not waiting and len(candidates) >= len(active))):
            verify_candidates()
            continue
        if not active:
            continue
        x = torch.stack([w.params for w in active]).requires_grad_(True)
        loss, margins = teacher_forced(lm, code.train_view(x), [w.tokens for w in active], settings.precision)
        margin = margins.amin(dim=1)
        (grad,) = torch.autograd.grad(loss.sum(), x)
        new_x, new_m, new_v, new_t = adam.step(
            x.detach(),
            grad,
            torch.stack([w.m for w in active]),
            torch.stack([w.v for w in active]),
            torch.tensor([w.t for w in active], dtype=x.dtype, device=x.device),
        )
        total_steps += 1
        still_active = []
        for row, w in enumerate(active):
            if margin[row].item() >= w.margin:
                w.candidate = code.quantize(x[row : row + 1])[0]  # exactly the code that passed
                candidates.append(w)
                continue
            w.params, w.m, w.v, w.t = new_x[row], new_m[row], new_v[row], float(new_t[row])
            w.steps += 1
            if w.steps >= settings.steps:
                finish(w, None)
            else:
                still_active.append(w)
        active = still_active
        if on_progress is not None:
            on_progress(finished, total_steps)
    if on_progress is not None:
        on_progress(finished, total_steps)
    return [r for r in results]  # type: ignore[misc]


def sequence_bits(lm, vector: torch.Tensor, tokens: Sequence[int], precision: str = "fp32") -> torch.Tensor:
    """Cross-entropy in bits of ``tokens`` in one row ``[prefix, vector, tokens[:-1]]`` under the float
    model, summed over the tokens (differentiable in ``vector``)."""
    ids = torch.tensor([list(tokens)], dtype=torch.long, device=lm.device)
    logits = _row_logits(lm, vector, ids, precision)
    return F.cross_entropy(logits[0], ids[0], reduction="sum") / math.log(2)


def optimize_for_size(lm, tokens: Sequence[int], settings: OptimizerSettings, code: VectorCode,
                      on_step: Callable[[int, float], None] | None = None) -> tuple[bytes, list[float]]:
    """The stored code whose vector makes ``tokens`` most probable under the float model (the lowest
    cross-entropy seen in ``settings.steps`` Adam steps (``RowAdam``, one row), each forward seeing
    exactly the vector the decoder rebuilds, straight-through), and the loss in bits at every step. The
    caller measures the real size on the exact engine: the float model only guides the search. A
    precision "auto" is resolved for ``lm.device`` (``resolved``)."""
    settings = resolved(settings, lm.device)
    params = code.initial().clone().unsqueeze(0)
    m, v = torch.zeros_like(params), torch.zeros_like(params)
    t = torch.zeros(1, dtype=params.dtype, device=params.device)
    adam = RowAdam(settings, settings.lr if settings.lr is not None else code.default_lr)
    best, best_code, trace = float("inf"), code.quantize(params)[0], []
    for step in range(settings.steps):
        x = params.requires_grad_(True)
        bits = sequence_bits(lm, code.train_view(x)[0], tokens, settings.precision)
        trace.append(float(bits.detach()))
        if trace[-1] < best:
            best, best_code = trace[-1], code.quantize(x)[0]
        (grad,) = torch.autograd.grad(bits, x)
        params, m, v, t = adam.step(x.detach(), grad, m, v, t)
        if on_step is not None:
            on_step(step, trace[-1])
    return best_code, trace
