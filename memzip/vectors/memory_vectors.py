"""Memory vectors (``--vectors full|compact``, the paper's setting): one optimized vector per window.

Each window's vector is optimized with the model frozen (memzip/vectors/optimizer.py) and accepted only when
the exact engine's greedy replay regenerates the window with the required margin; the window's tokens
are then arithmetic-coded given its vector. Finished windows are journaled as they complete
(memzip/vectors/journal.py), so an interrupted run resumes; a window that does not converge is stored raw.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict

from ..encoder import code_windows
from ..engine import ENGINE_VERSION
from ..settings import CompressSettings
from ..strategies import Job, Outcome, Stored, percentile, worth_storing
from .codes import VectorCode
from .greedy import reproduces
from .journal import Journal
from .optimizer import optimize_windows
from .results import WindowResult


def journal_identity(data: bytes, lm, settings: CompressSettings) -> dict:
    """What a journal must match to be resumed: the same input, model and (resolved) settings."""
    return {
        "input_size": len(data),
        "input_sha256": hashlib.sha256(data).hexdigest(),
        "model_fingerprint": lm.fingerprint,
        "engine": ENGINE_VERSION,
        "window": settings.window,
        "optimizer": asdict(settings.optimizer),
        "vectors": asdict(settings.vectors),
        "store": settings.store,
    }


class MemoryVectors:
    def store(self, job: Job) -> Outcome:
        data, lm, windows, settings, progress = job.data, job.lm, job.windows, job.settings, job.progress
        code = VectorCode(settings.vectors, lm)
        journal = None
        if job.journal_path:
            journal = Journal(job.journal_path, journal_identity(data, lm, settings), code.size)
        done = {i: r for i, r in (journal.done.items() if journal else ()) if i < len(windows)}
        if journal is not None:
            if journal.discarded_stale:
                progress.message(f"{job.journal_path}: left by a run on other input or settings; starting over")
            if done:
                progress.message(f"resuming: {len(done)} of {len(windows)} windows already done ({job.journal_path})")
            journal.open()
        worth = worth_storing(job, [code.size] * len(windows))
        skipped = {i: WindowResult(None, 0) for i, ok in enumerate(worth) if not ok}
        todo = [i for i in range(len(windows)) if i not in done and i not in skipped]
        progress.phase("optimizing memory vectors", len(windows))

        def verify(codes: list[bytes], tokens: list[list[int]]) -> list[bool]:
            return reproduces(lm, code.rebuild(codes), tokens, settings.optimizer.margin)

        def on_step(finished: int, steps: int) -> None:
            progress.update(len(done) + len(skipped) + finished, f"{steps} steps")

        def on_result(j: int, result: WindowResult) -> None:
            if journal is not None:
                journal.record(todo[j], result)

        try:
            fresh = optimize_windows(lm, [list(windows[i].tokens) for i in todo], settings.optimizer, code, verify,
                                     on_progress=on_step, on_result=on_result)
        finally:
            if journal is not None:
                journal.close()
        progress.done()
        results = {**skipped, **done, **dict(zip(todo, fresh))}
        kept = [i for i in range(len(windows)) if results[i].code is not None]
        streams = []
        if kept:
            vectors = code.rebuild([results[i].code for i in kept])
            streams, _bits = code_windows(lm, [windows[i].tokens for i in kept], vectors)
        stored = {i: Stored(results[i].code, stream, results[i].steps) for i, stream in zip(kept, streams)}
        return Outcome(stored, resumed=len(done), not_tried=len(skipped), spec=code.spec)

    def header_settings(self, job: Job, outcome: Outcome) -> dict:
        steps = [s.steps for s in outcome.stored.values()]
        return {**asdict(job.settings.optimizer), "steps_median": percentile(steps, 0.5),
                "steps_p90": percentile(steps, 0.9)}
