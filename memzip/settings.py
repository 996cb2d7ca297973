"""Compression settings, validated here and only here: pure data, torch-free (the CLI's help and
parsing use it; tests/test_layout.py checks that importing it loads no torch).

A setting that cannot work raises SettingsError (a MemzipError: one line for the user), its message
starting with the setting's name, when the settings object is made; everything downstream trusts it.
What a default means for one input and model (the window, the optimizer's "auto" precision) is decided
by the pipeline, once per compression (memzip/codec.py ``resolved_settings``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SettingsError
from .format.vectors import VectorSpec

DEFAULT_WINDOW = 16  # tokens per memory-vector window
# Levels: the longest row (window) of tokens, each decoded as one sequence, all rows together. Longer
# rows give every token more context (smaller files); more rows decode in parallel (faster restores: a
# decoding step streams the weights once for all rows). Below level 9, a file of more than SPLIT_TOKENS
# tokens gets at least two rows. Every row after the first starts after the file's first
# LEVEL_CONTEXT[level] tokens (the shared context, decoded first by the first row), which gives back
# most of what a row loses by starting without context; the first row is longer by that much, so that
# all rows finish together. Measured per level: docs/RESULTS.md (bench.levels).
LEVEL_ROWS = {1: 64, 2: 128, 3: 256, 4: 512, 5: 1024, 6: 2048, 7: 4096, 8: 8192, 9: 8192}
LEVEL_CONTEXT = {1: 0, 2: 0, 3: 64, 4: 128, 5: 256, 6: 512, 7: 512, 8: 512, 9: 512}
SPLIT_TOKENS = 768
DEFAULT_LEVEL = 7
STORE_POLICIES = ("smaller", "always")
# What a memory vector is chosen for: "greedy" (the paper's setting: greedy decoding regenerates the
# window exactly) or "size" (the smallest vector code + token stream; experimental, see
# memzip/vectors/vectors_by_size.py). "size" optimizes a whole row per step: fewer steps by default.
OBJECTIVES = ("greedy", "size")
SIZE_STEPS = 40
PRECISIONS = ("auto", "fp32", "bf16")


def default_steps(objective: str) -> int:
    """The optimizer's step budget per window when none is given: SIZE_STEPS for ``size``."""
    return SIZE_STEPS if objective == "size" else OptimizerSettings.steps


MAX_ROW = 8192  # tokens of a row, context included (the engine's positions per row)


def row_plan(tokens: int, level: int = DEFAULT_LEVEL, room: int = MAX_ROW) -> tuple[int, int]:
    """(window, context) for ``tokens`` tokens at ``level``: one row when the level's longest row holds
    them (and, below level 9, there are at most SPLIT_TOKENS), else rows of ``window - context`` tokens
    after a first row of ``window`` tokens whose first ``context`` tokens every other row starts after.
    ``room``: the tokens a row may hold (less than MAX_ROW after a dictionary)."""
    longest = min(LEVEL_ROWS[level], room)
    if tokens <= longest and (level == 9 or tokens <= SPLIT_TOKENS):
        return max(1, tokens), 0
    context = LEVEL_CONTEXT[level]
    context = min(context, longest // 2)
    rows = max(2, -(-(tokens - context) // min(longest, room - context)))
    later = -(-(tokens - context) // rows)
    return later + context, context


@dataclass(frozen=True)
class OptimizerSettings:
    """How memory vectors are optimized (unused by the default, which stores none)."""

    steps: int = 300  # optimizer steps per window before it is given up
    lr: float | None = None  # Adam step; None: the vector code's own default (VectorCode.default_lr)
    batch: int = 16  # windows optimized together
    margin: float = 0.0  # required logit margin (top-1 minus runner-up) at every position of the engine's replay
    betas: tuple[float, float] = (0.8, 0.95)  # shorter memories than torch's default: ~20% fewer steps
    eps: float = 1e-8
    precision: str = "auto"  # "fp32", "bf16" or "auto": bf16 where the device has it natively (memzip/vectors/optimizer.py)
    verify_batch: int | None = None  # candidates proven together while windows are waiting; None: batch

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "verify_batch"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1")
        if self.lr is not None and not self.lr > 0:
            raise SettingsError("lr must be positive")
        if not self.margin >= 0:
            raise SettingsError("margin must be non-negative")
        if self.precision not in PRECISIONS:
            raise SettingsError(f"precision must be one of {PRECISIONS}")


@dataclass(frozen=True)
class CompressSettings:
    window: int | None = None  # tokens of the first window (the longest); None: the level's (row_plan)
    # tokens of the first window that every later window is coded after (the shared context); later windows
    # hold window - context tokens. None: the level's with window None, else 0
    context: int | None = None
    optimizer: OptimizerSettings = OptimizerSettings()
    vectors: VectorSpec = VectorSpec()  # none (predicted windows), or how memory vectors are stored
    # "smaller": a window is stored by the model (coded tokens or a vector) only when that is expected to be
    # smaller than the window's share of the input's zstd size (the fallback's cost), and the whole file
    # falls back to raw if that is smaller; "always": every window (the paper's setting for vectors)
    store: str = "smaller"
    verify: bool = False  # decode the finished container (as decompress does) before returning it
    level: int = DEFAULT_LEVEL  # 1..9: rows of up to LEVEL_ROWS[level] tokens (without memory vectors)
    objective: str = "greedy"  # what memory vectors are chosen for (OBJECTIVES); unused without vectors

    def __post_init__(self) -> None:
        if self.store not in STORE_POLICIES:
            raise SettingsError(f"store policy must be one of {STORE_POLICIES}")
        if self.level not in LEVEL_ROWS:
            raise SettingsError(f"level must be one of {sorted(LEVEL_ROWS)}")
        if self.window is not None and self.window < 1:
            raise SettingsError("window must be at least 1")
        if self.context is not None and (self.context < 0 or (self.window is not None and self.context >= self.window)):
            raise SettingsError("context must be at least 0 and below the window")
        if self.context and self.vectors.code != "none":
            raise SettingsError("context applies to model-coded rows, not to memory vectors")
        if self.objective not in OBJECTIVES:
            raise SettingsError(f"objective must be one of {OBJECTIVES}")
        if self.objective == "size" and self.vectors.code == "none":
            raise SettingsError("objective size chooses memory vectors: it needs --vectors compact or full")

    @property
    def rows_by_level(self) -> bool:
        """Are windows the level's rows (model-coded, or vectors chosen by size), not DEFAULT_WINDOW?"""
        return self.vectors.code == "none" or self.objective == "size"


def vector_spec(code: str, rank: int, bits: int) -> VectorSpec:
    """The VectorSpec for user-given values (rank and bits checked whatever the code: a wrong value is
    a mistake even where it is not used), or SettingsError saying what is wrong."""
    try:
        compact = VectorSpec("compact", rank, bits)
        return compact if code == "compact" else VectorSpec(code)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
