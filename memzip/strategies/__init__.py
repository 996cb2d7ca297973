"""Storage strategies: how the windows of a file are stored by the model.

The pipeline (memzip/codec.py) cuts the input into windows and hands them to one strategy, chosen by
the settings (``for_settings``). A strategy returns, per window it keeps, a ``Stored`` record (its
vector code, empty without vectors, and its arithmetic-coded token stream); every other window stays
raw. A strategy is an object with

* ``store(job) -> Outcome``: the windows it keeps, by index into ``job.windows``, and the vector code
  their codes are in (``VectorSpec()``, none, for windows without vectors);
* ``header_settings(job, outcome) -> dict``: what the container header records of how it ran.

The decoder needs none of this: a file names its vector code, and every window is decoded the same way
(memzip/decoder.py). A new strategy is a module and one line in ``for_settings``.

* ``model_coded`` (here) -- every window's tokens coded with the model's own distribution (the default);
* ``memzip.vectors.memory_vectors`` -- one optimized memory vector per window, accepted only when the
  engine's greedy replay regenerates the window (the paper's setting), its tokens then coded given the
  vector;
* ``memzip.vectors.vectors_by_size`` -- one memory vector per row, chosen to make the file smallest
  (vector code + token stream), kept only if the file is smaller with it (experimental).

The memory-vector strategies are imported only when the settings ask for them: the default path never
loads memzip.vectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from ..format import container
from ..format.vectors import VectorSpec
from ..progress import Progress
from ..settings import CompressSettings
from ..windows import Segment


@dataclass(frozen=True)
class Stored:
    """A window stored by the model: its vector code (empty without vectors) and its token stream."""

    code: bytes
    stream: bytes
    steps: int = 0  # optimizer steps spent on its vector


@dataclass(frozen=True)
class Job:
    """What a strategy gets: the input, its windows, the resolved settings, the model, where to report
    progress and journal (``journal_path``: None for none), and the shared context: how many tokens of
    the first window every later window is coded after (0: none; memzip/rows.py ``context_of``)."""

    data: bytes
    windows: list[Segment]
    settings: CompressSettings
    lm: object
    progress: Progress
    journal_path: str | None = None
    context: int = 0
    dictionary: object = None  # memzip.dictionary.Dictionary every row starts after, or None
    segments: list = field(default_factory=list)  # the input's windows and raw spans, in order
    # the windows' token streams when the pipeline already coded them with other files' (codec.compress_many;
    # empty: the model is not worth trying); None when the strategy codes them itself
    streams: list | None = None

    @cached_property
    def zstd_frame(self) -> bytes:
        """The whole input as the container's fallback stores it (zstd -19): computed once per job, for
        the estimates (``worth_storing``) and for the file that stores everything raw."""
        return container.zstd_frame(self.data)


@dataclass
class Outcome:
    """The windows a strategy keeps (index into ``Job.windows`` -> Stored); the rest are stored raw."""

    stored: dict[int, Stored] = field(default_factory=dict)
    resumed: int = 0  # windows taken from the journal of an interrupted run
    not_tried: int = 0  # windows left raw without being tried: expected to be larger stored by the model
    spec: VectorSpec = VectorSpec()  # the vector code of the stored windows (none: no vectors)
    # another way to store the same input: the pipeline writes both files and keeps the smaller (this
    # one on a tie), so a strategy need not guess header and framing sizes
    alternative: "Outcome | None" = None
    context: int | None = None  # the shared context these windows were coded after, when not the job's


def percentile(values: list, q: float):
    """The value at quantile ``q`` (nearest rank, lower) of ``values``; None when empty."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


def worth_storing(job: Job, costs: list[float]) -> list[bool]:
    """Per window of ``job``: can storing it by the model (a vector, or its coded tokens) pay? Its cost
    is ``costs[i]`` bytes; the alternative is the window's share of zstd over the input (what the
    fallback would cost). Either way the window takes a segment-table entry (1-2 bytes)."""
    windows = job.windows
    if job.settings.store == "always" or not windows:
        return [True] * len(windows)
    fallback_ratio = len(job.zstd_frame) / len(job.data)
    return [cost < fallback_ratio * len(s.data) for s, cost in zip(windows, costs)]


def for_settings(settings: CompressSettings):
    """The strategy the settings ask for."""
    if settings.vectors.code == "none":
        from .model_coded import ModelCoded

        return ModelCoded()
    if settings.objective == "size":
        from ..vectors.vectors_by_size import VectorsBySize

        return VectorsBySize()
    from ..vectors.memory_vectors import MemoryVectors

    return MemoryVectors()
