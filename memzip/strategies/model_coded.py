"""Model-coded windows (the default): every token arithmetic-coded with the model's own distribution.

Each window is one row ``[prefix, tokens]`` (every window but the first after the shared context: the
first window's first ``job.context`` tokens) evaluated all at once per batch of windows on the exact
engine (memzip/encoder.py ``code_windows``). With the store policy "smaller", a probe of the first
PROBE_TOKENS tokens decides first whether the model can pay at all: binary or incompressible input is
then stored raw in seconds, without the full pass.
"""

from __future__ import annotations

from .. import rows
from ..encoder import code_windows
from ..format import container
from . import Job, Outcome, Stored, worth_storing

PROBE_TOKENS = 512
PROBE_MARGIN = 0.9  # the model must beat zstd's ratio by 10% on the probe to be tried on the whole input


def model_can_pay(job: Job) -> bool:
    """Does the model code the first PROBE_TOKENS window tokens clearly smaller than zstd codes their
    bytes? Inputs with fewer tokens than that are always tried in full."""
    windows, lm = job.windows, job.lm
    if sum(len(s.tokens) for s in windows) <= PROBE_TOKENS:
        return True
    sample, left = [], PROBE_TOKENS
    for s in windows:
        if left <= 0:
            break
        sample.append(list(s.tokens[:left]))
        left -= len(sample[-1])
    _streams, bits = code_windows(lm, sample, start=job.dictionary)
    sample_bytes = b"".join(lm.detokenize(t) for t in sample)
    # against zstd on the same bytes: on the whole input zstd would also see what the model's rows see
    # later (a log's repeats), which the probe's first tokens cannot show
    return sum(bits) / 8 < PROBE_MARGIN * len(container.zstd_frame(sample_bytes))


class ModelCoded:
    def store(self, job: Job) -> Outcome:
        windows = job.windows
        if job.streams is not None:  # coded already, with other files' windows (codec.compress_many); none:
            if not job.streams:  # not worth trying
                return Outcome(not_tried=len(windows))
            streams = job.streams
        elif job.settings.store == "always" or model_can_pay(job):
            job.progress.phase("coding tokens", sum(len(s.tokens) for s in windows))
            tokens = [s.tokens for s in windows]
            streams, _bits = code_windows(job.lm, tokens, on_progress=job.progress.update,
                                          context=rows.context_of(tokens, job.context), start=job.dictionary)
            job.progress.done()
        else:
            return Outcome(not_tried=len(windows))
        costs = [len(stream) + len(container.varint(len(stream))) for stream in streams]
        worth = worth_storing(job, costs)
        stored = {i: Stored(b"", stream) for i, (stream, ok) in enumerate(zip(streams, worth)) if ok}
        return Outcome(stored, not_tried=worth.count(False))

    def header_settings(self, job: Job, outcome: Outcome) -> dict:
        return {}
