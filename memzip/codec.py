"""compress() and decompress(): the pipeline from bytes to container and back.

compress: segment -> per window, either its tokens' ranks under the model (the default, no memory
vectors: ``predict``) or one optimized memory vector (``--vectors full|compact``) -> container -> read
the container back and check it with the decompressor's own functions: memory vectors are replayed
(_replay) and any window that does not come back exactly is demoted to the raw fallback and the check
runs again; ranks were computed by one pass that already decoded from them exactly as the
decompressor will (decoder.rank_tokens), so the ranks and rows read back must equal those, and the
decoded windows are assembled with the raw spans (_assemble). compress() only returns a container
that is proven to decode to the input.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import asdict, dataclass, replace

import torch

from . import __version__, container
from .codes import VectorCode, VectorSpec, basis_digest
from .container import KIND_PLACEHOLDER, KIND_RAW, KIND_WINDOW, Container
from .decoder import greedy_decode, rank_tokens, replay_threads, reproduces
from .errors import ContainerError, IntegrityError, ModelLoadError, ModelMismatchError, SettingsError
from .journal import Journal
from .model import LanguageModel, load_model
from .optimizer import OptimizerSettings, WindowResult, optimize_windows
from .progress import Progress
from .rankcoder import window_costs
from .windows import Segment, detokenize, segment

DEFAULT_WINDOW = 16  # tokens per memory-vector window
# Predicted windows (no vectors): more tokens give the model more context (better ratio), fewer give
# more rows to decode in parallel (speed). The default is the longest power of two in this range
# that still yields PARALLEL_ROWS windows, so small files are not decoded one slow row at a time.
PREDICT_WINDOW_RANGE = (64, 256)
PARALLEL_ROWS = 16
# Predicted windows: a token whose logit is within this of another token's is stored by its id, not its
# rank, so that numeric differences below half of it (another machine, library, batch) cannot change it.
# Measured between this CPU's AVX512 and AVX2 kernels (the paper text's replay, 20 rows x 64 steps): no
# logit within 1e-3 of a window's token moved by more than 2.1e-5 relative to it, and one rank of 1,280
# changed without a margin; 1e-4 leaves ~5x that, for 2.5-4.5% more rank bytes.
DEFAULT_RANK_MARGIN = 1e-4
STORE_POLICIES = ("smaller", "always")
DECODE_BATCH = 64


def decode_batch_for(window: int) -> int:
    """Rows replayed together: DECODE_BATCH, fewer for long windows (the format bounds batch x window)."""
    return max(1, min(DECODE_BATCH, container.MAX_TOKENS_IN_FLIGHT // window))


def default_window(spec: VectorSpec, tokens: int) -> int:
    """Window length when none is given: DEFAULT_WINDOW for memory vectors; for predicted windows see
    PREDICT_WINDOW_RANGE (``tokens``: about how many tokens the input has)."""
    if spec.code != "none":
        return DEFAULT_WINDOW
    low, window = PREDICT_WINDOW_RANGE
    while window > low and tokens < window * PARALLEL_ROWS:
        window //= 2
    return window


@dataclass(frozen=True)
class CompressSettings:
    window: int | None = None  # tokens per window; None: default_window()
    optimizer: OptimizerSettings = OptimizerSettings()
    vectors: VectorSpec = VectorSpec()  # none (predicted windows), or how memory vectors are stored
    # "smaller": a window is stored by the model (ranks or a vector) only when that is expected to be
    # smaller than the window's share of the input's zstd size (the fallback's cost), and the whole file
    # falls back to raw if that is smaller; "always": every window (the paper's setting for vectors)
    store: str = "smaller"
    rank_margin: float = DEFAULT_RANK_MARGIN  # predicted windows: see DEFAULT_RANK_MARGIN
    # CPU threads for the whole compression; recorded, and every replay of the file uses this count
    # (the kernels' arithmetic depends on it: see memzip.decoder). None: torch's current count.
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.store not in STORE_POLICIES:
            raise SettingsError(f"store policy must be one of {STORE_POLICIES}")
        if not self.rank_margin >= 0:
            raise SettingsError("rank margin must be non-negative")
        if self.threads is not None and not 1 <= self.threads <= container.MAX_THREADS:
            raise SettingsError(f"threads must be 1..{container.MAX_THREADS}")


def percentile(values: list, q: float):
    """The value at quantile ``q`` (nearest rank, lower) of ``values``; None when empty."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


@dataclass
class CompressReport:
    """What happened to each window: for `memzip c` output, the API and the benchmarks."""

    windows: int
    vectors: int  # windows stored as a memory vector
    fallback_windows: int
    steps: list[int]  # optimizer steps of each window that became a vector
    demoted_by_final_check: int
    resumed: int = 0  # windows taken from the journal of an interrupted run
    not_tried: int = 0  # windows stored raw without optimizing or predicting: expected to be larger
    predicted: int = 0  # windows stored as ranks under the model, without a vector

    def stats(self) -> dict:
        """The summary recorded in the container header (informative)."""
        return {
            "windows": self.windows,
            "vector_windows": self.vectors,
            "predicted_windows": self.predicted,
            "fallback_windows": self.fallback_windows,
            "demoted_by_final_check": self.demoted_by_final_check,
            "not_tried_windows": self.not_tried,
            "steps_median": percentile(self.steps, 0.5),
            "steps_p90": percentile(self.steps, 0.9),
        }


def _model(model, device=None, progress: Progress | None = None) -> LanguageModel:
    if isinstance(model, LanguageModel):
        return model
    say = progress.message if progress is not None else (lambda _text: None)
    return load_model(model, device=device, progress=say)


def resolved_settings(data: bytes, lm: LanguageModel, settings: CompressSettings) -> CompressSettings:
    """``settings`` with every default decided for this input and model: the window length and what
    the optimizer's "auto" means here, and the thread count (this is what the header and the journal record)."""
    window = settings.window
    if window is None and settings.vectors.code != "none":
        window = default_window(settings.vectors, 0)
    elif window is None:
        approx_tokens = len(lm.tokenizer(data.decode("utf-8", "replace"), add_special_tokens=False)["input_ids"])
        window = default_window(settings.vectors, approx_tokens)
    if not 1 <= window <= container.MAX_WINDOW_TOKENS:
        raise SettingsError(f"window must be 1..{container.MAX_WINDOW_TOKENS} tokens")
    threads = settings.threads or min(torch.get_num_threads(), container.MAX_THREADS)
    return replace(settings, window=window, optimizer=settings.optimizer.resolved(lm.device), threads=threads)


def journal_identity(data: bytes, lm: LanguageModel, settings: CompressSettings) -> dict:
    """What a journal must match to be resumed: the same input, model weights and settings."""
    settings = resolved_settings(data, lm, settings)
    return {
        "input_size": len(data),
        "input_sha256": hashlib.sha256(data).hexdigest(),
        "model_fingerprint": lm.fingerprint,
        "window": settings.window,
        "optimizer": asdict(settings.optimizer),
        "vectors": asdict(settings.vectors),
        "store": settings.store,
    }


def worth_storing(data: bytes, windows: list[Segment], costs: list[float], store: str) -> list[bool]:
    """Per window: can storing it by the model (a vector, or ranks) pay? Its cost is ``costs[i]`` bytes;
    the alternative is the window's share of zstd over the input (what the fallback would cost).
    Either way the window takes a segment-table entry (1-2 bytes)."""
    if store == "always" or not windows:
        return [True] * len(windows)
    fallback_ratio = len(container.zstd_frame(data)) / len(data)
    return [cost < fallback_ratio * len(s.data) for s, cost in zip(windows, costs)]


def compress(
    data: bytes,
    model: LanguageModel | str | None = None,
    settings: CompressSettings = CompressSettings(),
    progress: Progress | None = None,
    report: list | None = None,
    journal_path: str | None = None,
) -> bytes:
    """Compress ``data``; ``model`` is a loaded LanguageModel, a model ID/path, or None for the default.

    If ``report`` is a list, a CompressReport is appended to it. With ``journal_path``, windows whose
    memory vectors are optimized are journaled there as they complete, and a journal left by an
    interrupted run on the same input, model and settings is resumed; the caller deletes the journal
    once it has stored the result. Compression runs with ``settings.threads`` CPU threads (default:
    torch's current count), which the file records for every later replay.
    """
    progress = progress or Progress()
    lm = _model(model, progress=progress)
    settings = resolved_settings(data, lm, settings)
    with replay_threads(settings.threads):
        return _compress(data, lm, settings, progress, report, journal_path)


def _compress(data, lm, settings, progress, report, journal_path) -> bytes:
    segments = segment(data, lm.tokenizer, settings.window)
    windows = [s for s in segments if s.is_window]
    decode_batch = decode_batch_for(settings.window)
    code = VectorCode(settings.vectors, lm)
    predicted = code.spec.code == "none"
    if predicted:
        stored, ranked, not_tried, demoted = _predict(data, windows, settings, lm, decode_batch, progress)
        resumed = 0
    else:
        stored, resumed, not_tried = _memorize(data, lm, windows, settings, code, decode_batch, progress, journal_path)
        demoted = 0
    header = {
        "memzip_version": __version__,
        "model_id": lm.model_id,
        "model_fingerprint": lm.fingerprint,
        "prefix_id": lm.prefix_id,
        "hidden_size": lm.hidden_size,
        "window": settings.window,
        "vectors": code.spec.header(lm),
        "original_size": len(data),
        "original_sha256": hashlib.sha256(data).hexdigest(),
        "decode_batch": decode_batch,
        "threads": settings.threads,
        "settings": {"rank_margin": settings.rank_margin} if predicted else asdict(settings.optimizer),
        "environment": lm.environment(),
    }
    # predicted windows: the rows of every batch up to the last one holding a stored window stay rows
    last = max((i for i, s in enumerate(windows) if id(s) in stored), default=-1) if predicted else -1
    row_count = 0 if last < 0 else min(len(windows), (last // decode_batch + 1) * decode_batch)
    while True:  # prove the file with the decompressor's own functions before returning it
        kept = [s for s in windows if id(s) in stored]
        ranks = [ranked[id(s)][0] for s in kept] if predicted else None
        summary = _summary(code.spec, windows, stored, demoted, resumed, not_tried)
        blob = container.write(_build({**header, "stats": summary.stats()}, segments, stored, ranks, row_count))
        c = container.read(blob)
        if predicted:  # the ranking pass was the decoder's replay of these ranks, in these batches
            rows = [len(s.tokens) if id(s) in stored else 0 for s in windows[:row_count]]
            if c.window_ranks() != ranks or c.row_lengths != rows or c.header["decode_batch"] != decode_batch:
                raise IntegrityError("internal error: the container does not hold the rows it was proven with")
            tokens = [ranked[id(s)][1] for s in kept]
        else:
            tokens = _replay(c, lm, progress, "verifying the container")
        if _assemble(c, lm, tokens) == data:
            break
        bad = [s for s, t in zip(kept, tokens) if t != list(s.tokens)]
        if not bad or predicted:
            raise IntegrityError("internal error: the container does not reproduce the input")
        for s in bad:  # numerically fragile under the decompressor's batching: store raw instead
            del stored[id(s)]
        demoted += len(bad)
    if settings.store == "smaller" and stored:  # the whole file raw, if that is smaller after all
        plain = _summary(code.spec, windows, {}, demoted, resumed, not_tried)
        raw_blob = container.write(_build({**header, "stats": plain.stats()}, segments, {}, None, 0))
        if len(raw_blob) < len(blob):
            if _assemble(container.read(raw_blob), None, []) != data:
                raise IntegrityError("internal error: the raw container does not reproduce the input")
            blob, summary = raw_blob, plain
    if report is not None:
        report.append(summary)
    return blob


def _summary(spec: VectorSpec, windows, stored: dict, demoted: int, resumed: int, not_tried: int) -> CompressReport:
    steps = [r.steps for r in stored.values()] if spec.code != "none" else []
    vectors = len(stored) if spec.code != "none" else 0
    predicted = len(stored) if spec.code == "none" else 0
    return CompressReport(len(windows), vectors, len(windows) - len(stored), steps, demoted, resumed, not_tried, predicted)


def _predict(data, windows, settings, lm, decode_batch, progress) -> tuple[dict, dict, int, int]:
    """One replay of every window (``decoder.rank_tokens``), which ranks its tokens and decodes from
    those ranks as the decompressor will. Returns the windows to store as ranks (by id -> WindowResult
    with an empty code), every window's (ranks, decoded tokens) by id, how many are not worth storing
    and how many did not decode to themselves (demoted).

    Every window stays a decoding row: those stored raw become placeholder rows, so no batch changes
    and nothing needs ranking again (a row's logits depend on how many rows its batch has)."""
    progress.phase("predicting tokens", sum(len(s.tokens) for s in windows))
    ranks, decoded = rank_tokens(lm, None, [s.tokens for s in windows], decode_batch, lm.prefix_id,
                                 progress.update, settings.rank_margin)
    progress.done()
    ranked = {id(s): (r, t) for s, r, t in zip(windows, ranks, decoded)}
    worth = worth_storing(data, windows, window_costs(ranks), settings.store)
    exact = [t == list(s.tokens) for s, t in zip(windows, decoded)]
    stored = {id(s): WindowResult(b"", 0) for s, ok, same in zip(windows, worth, exact) if ok and same}
    return stored, ranked, worth.count(False), sum(ok and not same for ok, same in zip(worth, exact))


def _memorize(data, lm, windows, settings, code, decode_batch, progress, journal_path) -> tuple[dict, int, int]:
    """Optimize memory vectors: (verified windows by id -> WindowResult, resumed, not tried)."""
    journal = Journal(journal_path, journal_identity(data, lm, settings), code.size) if journal_path else None
    done = {i: r for i, r in (journal.done.items() if journal else ()) if i < len(windows)}
    if journal is not None:
        if journal.discarded_stale:
            progress.message(f"{journal_path}: left by a run on other input or settings; starting over")
        if done:
            progress.message(f"resuming: {len(done)} of {len(windows)} windows already done ({journal_path})")
        journal.open()
    worth = worth_storing(data, windows, [code.size] * len(windows), settings.store)
    skipped = {i: WindowResult(None, 0) for i, ok in enumerate(worth) if not ok}
    todo = [i for i in range(len(windows)) if i not in done and i not in skipped]
    progress.phase("optimizing memory vectors", len(windows))

    def verify(codes: list[bytes], tokens: list[list[int]]) -> list[bool]:
        return reproduces(lm, code.rebuild(codes), tokens, settings.optimizer.margin, decode_batch)

    def on_step(finished: int, steps: int) -> None:
        progress.update(len(done) + len(skipped) + finished, f"{steps} steps")

    def on_result(j: int, result: WindowResult) -> None:
        if journal is not None:
            journal.record(todo[j], result)

    try:
        fresh = optimize_windows(
            lm, [list(windows[i].tokens) for i in todo], settings.optimizer, code, verify, on_step, on_result
        )
    finally:
        if journal is not None:
            journal.close()
    progress.done()
    results = {**skipped, **done, **dict(zip(todo, fresh))}
    stored = {id(s): results[i] for i, s in enumerate(windows) if results[i].code is not None}
    return stored, len(done), len(skipped)


def _build(header: dict, segments: list[Segment], stored: dict, ranks: list[list[int]] | None,
           row_count: int) -> Container:
    """The container for ``segments`` with the windows in ``stored`` kept (ranks: one row per kept
    window, None for all 0) and every other window raw; of the first ``row_count`` windows, those
    stored raw stay decoding rows (placeholders)."""
    table: list[tuple[int, int]] = []
    codes = bytearray()
    raw = bytearray()
    pending = [0, 0]  # raw bytes and placeholder rows since the last window entry, in either order

    def flush() -> None:
        table.extend((kind, n) for kind, n in zip((KIND_RAW, KIND_PLACEHOLDER), pending) if n)
        pending[:] = [0, 0]

    window_index = 0
    for s in segments:
        result: WindowResult | None = stored.get(id(s))
        row = s.is_window and window_index < row_count
        window_index += s.is_window
        if result is not None:
            flush()
            table.append((KIND_WINDOW, len(s.tokens)))
            codes += result.code
        else:
            raw += s.data
            pending[0] += len(s.data)
            pending[1] += row
    flush()
    flat = [r for row in ranks for r in row] if ranks is not None else None
    return Container(dict(header), table, bytes(codes), bytes(raw), ranks=flat)


def _replay(c: Container, lm: LanguageModel | None, progress: Progress, what: str) -> list[list[int]]:
    """Decode every window of a container (placeholder rows included, results dropped), batched as
    its header says."""
    rows = c.row_lengths
    if not any(rows):
        return []
    progress.phase(what, sum(rows))
    h = c.header
    window_ranks = iter(c.window_ranks())
    ranks = [next(window_ranks) if n else [] for n in rows]
    tokens = greedy_decode(lm, stored_vectors(c, lm), rows, h["decode_batch"], h["prefix_id"], ranks, progress.update)
    progress.done()
    return [t for t, n in zip(tokens, rows) if n]


def stored_vectors(c: Container, lm: LanguageModel):
    """The memory vectors [windows, hidden] a container's codes stand for under ``lm``."""
    return VectorCode(c.vector_spec, lm).rebuild(c.codes)


def _model_for(c: Container, model, progress: Progress) -> LanguageModel:
    """The model a container needs, proven by fingerprint before any decoding."""
    need_id, need_fp = c.header["model_id"], c.header["model_fingerprint"]
    try:
        lm = _model(model if model is not None else need_id, progress=progress)
    except ModelLoadError as exc:
        hint = "" if model is not None else "; pass --model pointing to that model"
        raise ModelLoadError(f"{exc} (this file needs model '{need_id}', fingerprint {need_fp[:16]}{hint})") from None
    if lm.fingerprint != need_fp:
        raise ModelMismatchError(
            f"this file needs model '{need_id}' with fingerprint {need_fp[:16]}, "
            f"but '{lm.model_id}' has fingerprint {lm.fingerprint[:16]} (different weights or tokenizer)"
        )
    vocab = lm.model.get_input_embeddings().weight.shape[0]
    if lm.hidden_size != c.header["hidden_size"] or c.header["prefix_id"] >= vocab:
        raise ModelMismatchError(f"file parameters do not fit model '{lm.model_id}'")
    if c.ranks and max(max(c.ranks), -1 - min(c.ranks)) >= vocab:  # ranks >= 0, explicit ids < 0
        raise ContainerError(f"a stored rank or token id is beyond the vocabulary of model '{lm.model_id}' ({vocab} tokens)")
    return lm


def replay_differences(c: Container, lm: LanguageModel) -> list[str]:
    """What differs between the compressing and this decoding setup, as 'what recorded -> here'."""
    diff = environment_differences(c.header["environment"], lm.environment())
    spec = c.vector_spec
    if spec.code == "compact":
        recorded, here = c.header["vectors"]["basis_digest"], basis_digest(lm, spec.rank)
        if recorded != here:
            diff.append(f"basis digest {recorded} -> {here}")
    return diff


def environment_differences(recorded: dict, current: dict) -> list[str]:
    """'key recorded -> current' for every replay-relevant setting that differs."""
    return [f"{k} {recorded[k]} -> {current.get(k)}" for k in recorded if recorded[k] != current.get(k)]


def decompress(
    blob: bytes, model: LanguageModel | str | None = None, progress: Progress | None = None, warn=None
) -> bytes:
    """Restore the original bytes, or raise: never returns data that fails the recorded checksum.

    ``model`` overrides where the model comes from (its fingerprint must still match the file).
    ``warn(text)`` hears about a decoding environment that differs from the compressing one (default:
    ``warnings.warn``); the checksum still decides whether the result is right. The replay runs with the
    CPU thread count the file records (torch's count is restored afterwards).
    """
    progress = progress or Progress()
    c = container.read(blob)
    lm = _model_for(c, model, progress) if c.window_count else None
    if lm is not None:
        diff = replay_differences(c, lm)
        if diff:
            text = (
                "decoding environment differs from the one that wrote the file (" + ", ".join(diff)
                + "); the checksum will tell whether the replay is still exact"
            )
            (warn or (lambda t: warnings.warn(t, stacklevel=2)))(text)
    with replay_threads(c.header["threads"]):
        tokens = _replay(c, lm, progress, "decoding")
    out = _assemble(c, lm, tokens)
    if len(out) != c.header["original_size"] or hashlib.sha256(out).hexdigest() != c.header["original_sha256"]:
        raise IntegrityError("decoded data does not match the original checksum; nothing written")
    return out


def _assemble(c: Container, lm: LanguageModel | None, tokens: list[list[int]]) -> bytes:
    """The file's bytes: decoded windows and raw spans in table order."""
    out = bytearray()
    raw_pos, next_window = 0, iter(tokens)
    for kind, length in c.segments:
        if kind == KIND_WINDOW:
            out += detokenize(lm.tokenizer, next(next_window))
        elif kind == KIND_RAW:
            out += c.fallback[raw_pos : raw_pos + length]
            raw_pos += length
    return bytes(out)
