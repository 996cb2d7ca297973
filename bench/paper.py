"""Reproduction of the memory-token paper's Tables 3-4 / Appendix A on our models.

The corpus is split into non-overlapping chunks of N characters; the first 20 of each length are
memorized one vector per chunk (full bf16, the paper's setting). Per model and length we report the
average teacher-forced token accuracy at the final vector (the paper's metric), how many chunks the real
decoder reproduces exactly, the average optimizer steps, and steps per second.
"""

from __future__ import annotations

import statistics
import time

import torch

from memzip.format.vectors import VectorSpec
from memzip.settings import OptimizerSettings
from memzip.vectors.codes import VectorCode
from memzip.vectors.greedy import reproduces
from memzip.vectors.optimizer import optimize_windows, teacher_forced


def chunks(text: str, size: int, count: int = 20) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text) - size + 1, size)][:count]


def _accuracy(lm, vector: torch.Tensor, tokens: list[int]) -> float:
    with torch.no_grad():
        _, margins = teacher_forced(lm, vector, [tokens])
    return (margins > 0).float().mean().item()


def reproduce(lm, model_name: str, text: str, size: int, settings: OptimizerSettings, count: int = 20) -> dict:
    pieces = chunks(text, size, count)
    windows = [lm.tokenizer(p, add_special_tokens=False)["input_ids"] for p in pieces]

    code = VectorCode(VectorSpec("full"), lm)

    def verify(codes, tokens):
        return reproduces(lm, code.rebuild(codes), tokens, settings.margin)

    total_steps = [0]
    t0 = time.perf_counter()
    results = optimize_windows(lm, windows, settings, code, verify,
                               on_progress=lambda _done, steps: total_steps.__setitem__(0, steps))
    elapsed = time.perf_counter() - t0
    accuracy = [_accuracy(lm, code.rebuild([r.last]), w) for r, w in zip(results, windows)]
    exact = [r.code is not None for r in results]
    converged_steps = [r.steps for r in results if r.code is not None]
    return {
        "model": model_name,
        "chunk_chars": size,
        "chunks": len(pieces),
        "tokens_mean": statistics.mean(len(w) for w in windows),
        "token_accuracy": statistics.mean(accuracy),
        "exact": sum(exact),
        "steps_mean_converged": statistics.mean(converged_steps) if converged_steps else None,
        "steps_mean_all": statistics.mean(r.steps for r in results),
        "step_budget": settings.steps,
        "batch": settings.batch,
        "batch_steps": total_steps[0],
        "batch_steps_per_s": total_steps[0] / elapsed,
        "window_steps_per_s": sum(r.steps for r in results) / elapsed,
        "wall_s": elapsed,
    }
