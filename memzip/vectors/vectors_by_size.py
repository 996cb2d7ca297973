"""Memory vectors chosen by total code length (``--vectors compact|full --objective size``; experimental).

Under probability coding a memory vector need not force greedy decoding: it pays when it makes its
row's tokens more probable by more bits than its code costs. Here every row (the level's rows, as
without vectors) gets one vector optimized with the model frozen for the smallest cross-entropy of its
tokens under the float model (memzip/vectors/optimizer.py ``optimize_for_size``: straight-through quantization,
so every forward sees the vector the decoder rebuilds), on the row's first TRAIN_TOKENS tokens (a
vector at the start of a row acts most on the tokens near it, and a step over a 4,096-token row costs
~8x one over 512 on a CPU); the whole rows' tokens are then coded given their
vectors on the exact engine, and the file keeps the vectors only if it is smaller with them than
without, framing included (the pipeline writes both: ``Outcome.alternative``). A file's windows either
all have vectors or none: the format records one vector code per file. The decoder is the one every file uses.

Measured (docs/RESULTS.md, ``python -m bench.vector_curve``): on SmolLM2-135M the bits a vector saves
stay far below the bits it costs, so files keep no vector; this strategy exists to measure that and to
make any model where vectors do pay usable.
"""

from __future__ import annotations

from dataclasses import asdict, replace

from ..encoder import code_windows
from ..format.vectors import VectorSpec
from ..strategies import Job, Outcome, Stored
from ..strategies.model_coded import ModelCoded
from .codes import VectorCode
from .optimizer import optimize_for_size


TRAIN_TOKENS = 512


class VectorsBySize:
    def store(self, job: Job) -> Outcome:
        plain = ModelCoded().store(job)  # the default's outcome: what the vectors must beat
        if not plain.stored:
            return plain
        lm, settings, progress = job.lm, job.settings, job.progress
        code = VectorCode(settings.vectors, lm)
        kept = sorted(plain.stored)
        rows = [list(job.windows[i].tokens) for i in kept]
        steps = settings.optimizer.steps
        progress.phase("optimizing memory vectors for size", len(rows) * steps)
        codes = []
        for r, tokens in enumerate(rows):
            best, _trace = optimize_for_size(lm, tokens[:TRAIN_TOKENS], settings.optimizer, code,
                                             on_step=lambda s, bits, r=r: progress.update(r * steps + s + 1, f"{bits:.0f} bits"))
            codes.append(best)
        progress.done()
        streams, _bits = code_windows(lm, rows, code.rebuild(codes))
        stored = {i: Stored(c, s, steps) for i, c, s in zip(kept, codes, streams)}
        # the pipeline keeps the file with vectors only if it is smaller than the default's, framing included
        return replace(plain, alternative=Outcome(stored, not_tried=plain.not_tried, spec=code.spec))

    def header_settings(self, job: Job, outcome: Outcome) -> dict:
        if outcome.spec == VectorSpec():
            return {}
        steps = job.settings.optimizer.steps
        return {"objective": "size", **asdict(job.settings.optimizer), "steps_median": steps, "steps_p90": steps}
