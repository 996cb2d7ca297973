"""compress() and decompress(): the pipeline from bytes to container and back.

compress: segment into windows (rows of up to the level's length) -> per window, its tokens coded with
the model's own distribution at every position (the default, no memory vectors: ``_predict``, one
all-at-once evaluation per batch of windows), or one optimized memory vector (``--vectors
full|compact``: ``_memorize``, each vector accepted only when the engine's greedy replay regenerates its
window) with its tokens coded given the vector -> container -> read back strictly, and its streams and
codes must be the ones computed. Every replay runs on the exact engine (memzip.engine), whose logits are
the same bits on every machine and whether a window is evaluated all at once or one token at a time, so
the distributions coded with here are exactly those the decompressor decodes with.
``CompressSettings.verify`` also decodes the finished file the way ``decompress`` does.

decompress: read strictly -> check the model's fingerprint and engine version -> decode every window
one token per step from its stream -> reassemble with the raw spans -> check length and checksum.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace

from . import __version__
from .format import container
from .codes import VectorCode, VectorSpec, basis_digest, header_field
from .format.container import KIND_RAW, KIND_WINDOW, Container
from .decoder import code_windows, decode_windows, reproduces
from .engine import ENGINE_VERSION
from .errors import ContainerError, IntegrityError, ModelLoadError, ModelMismatchError, SettingsError
from .journal import Journal
from .model import LanguageModel, load_model
from .optimizer import WindowResult, optimize_windows
from .settings import CompressSettings, default_window
from .progress import Progress
from .windows import Segment, segment

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
    resumed: int = 0  # windows taken from the journal of an interrupted run
    not_tried: int = 0  # windows stored raw without optimizing or predicting: expected to be larger
    predicted: int = 0  # windows coded with the model's distribution, without a vector

    def stats(self) -> dict:
        """The summary recorded in the container header (informative)."""
        return {
            "windows": self.windows,
            "vector_windows": self.vectors,
            "predicted_windows": self.predicted,
            "fallback_windows": self.fallback_windows,
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
    the optimizer's "auto" means here (this is what the header and the journal record)."""
    window = settings.window
    if window is None and settings.vectors.code != "none":
        window = default_window(settings.vectors, 0)
    elif window is None:
        approx_tokens = len(lm.tokenizer(data.decode("utf-8", "replace"), add_special_tokens=False)["input_ids"])
        window = default_window(settings.vectors, approx_tokens, settings.level)
    if not 1 <= window <= container.MAX_WINDOW_TOKENS:
        raise SettingsError(f"window must be 1..{container.MAX_WINDOW_TOKENS} tokens")
    return replace(settings, window=window, optimizer=settings.optimizer.resolved(lm.device))


def journal_identity(data: bytes, lm: LanguageModel, settings: CompressSettings) -> dict:
    """What a journal must match to be resumed: the same input, model and settings."""
    settings = resolved_settings(data, lm, settings)
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


def worth_storing(data: bytes, windows: list[Segment], costs: list[float], store: str) -> list[bool]:
    """Per window: can storing it by the model (a vector, or its coded tokens) pay? Its cost is ``costs[i]`` bytes;
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
    once it has stored the result.
    """
    progress = progress or Progress()
    lm = _model(model, progress=progress)
    settings = resolved_settings(data, lm, settings)
    segments = segment(data, lm.tokenizer, lm.token_bytes, settings.window)
    windows = [s for s in segments if s.is_window]
    code = VectorCode(settings.vectors, lm)
    predicted = code.spec.code == "none"
    if predicted:
        stored, not_tried = _predict(data, windows, settings, lm, progress)
        resumed = 0
    else:
        stored, resumed, not_tried = _memorize(data, lm, windows, settings, code, progress, journal_path)
    header = {
        "memzip_version": __version__,
        "model_id": lm.model_id,
        "model_fingerprint": lm.fingerprint,
        "engine": ENGINE_VERSION,
        "prefix_id": lm.prefix_id,
        "hidden_size": lm.hidden_size,
        "window": settings.window,
        "vectors": header_field(code.spec, lm),
        "original_size": len(data),
        "settings": {} if predicted else asdict(settings.optimizer),
    }
    summary = _summary(code.spec, windows, stored, resumed, not_tried)
    if not predicted:
        header["settings"].update(steps_median=summary.stats()["steps_median"], steps_p90=summary.stats()["steps_p90"])
    blob = _write(header, segments, stored, lm.token_bytes, data)
    if settings.store == "smaller" and stored:  # the whole file raw, if that is smaller after all
        plain = _summary(code.spec, windows, {}, resumed, not_tried)
        raw_blob = _write(header, segments, {}, lm.token_bytes, data)
        if len(raw_blob) < len(blob):
            blob, summary = raw_blob, plain
    if settings.verify:
        if decompress(blob, lm, progress) != data:  # decompress raises first; this cannot happen
            raise IntegrityError("internal error: the container does not decode to the input")
    if report is not None:
        report.append(summary)
    return blob


def _write(header: dict, segments: list[Segment], stored: dict, token_bytes, data: bytes) -> bytes:
    """The container, read back strictly: it must hold exactly the streams and codes computed, and its
    raw spans and windows (their tokens' bytes) must make up the input."""
    kept = [s for s in segments if s.is_window and id(s) in stored]
    c = _build(header, segments, stored)
    c.checksum = container.original_checksum(data)
    blob = container.write(c)
    c = container.read(blob)
    if c.streams != [stored[id(s)].stream for s in kept] or c.codes != b"".join(stored[id(s)].code for s in kept):
        raise IntegrityError("internal error: the container does not hold the streams and codes computed")
    if _assemble(c, [list(s.tokens) for s in kept], token_bytes) != data:
        raise IntegrityError("internal error: the container's segments do not make up the input")
    return blob


@dataclass(frozen=True)
class Stored:
    """A window stored by the model: its vector code (empty without vectors) and its token stream."""

    code: bytes
    stream: bytes
    steps: int = 0


def _summary(spec: VectorSpec, windows, stored: dict, resumed: int, not_tried: int) -> CompressReport:
    vectors = spec.code != "none"
    steps = [r.steps for r in stored.values()] if vectors else []
    return CompressReport(len(windows), len(stored) if vectors else 0, len(windows) - len(stored), steps, resumed,
                          not_tried, 0 if vectors else len(stored))


PROBE_TOKENS = 512
PROBE_MARGIN = 0.9  # the model must beat zstd's ratio by 10% on the probe to be tried on the whole input


def _model_can_pay(data: bytes, windows: list[Segment], lm) -> bool:
    """Does the model code the first PROBE_TOKENS window tokens clearly smaller than zstd codes their
    bytes? Inputs with fewer tokens than that are always tried in full."""
    if sum(len(s.tokens) for s in windows) <= PROBE_TOKENS:
        return True
    sample, left = [], PROBE_TOKENS
    for s in windows:
        if left <= 0:
            break
        sample.append(list(s.tokens[:left]))
        left -= len(sample[-1])
    _streams, bits = code_windows(lm, sample)
    sample_bytes = b"".join(lm.detokenize(t) for t in sample)
    # against zstd on the same bytes: on the whole input zstd would also see what the model's rows see
    # later (a log's repeats), which the probe's first tokens cannot show
    return sum(bits) / 8 < PROBE_MARGIN * len(container.zstd_frame(sample_bytes))


def _predict(data, windows, settings, lm, progress) -> tuple[dict, int]:
    """Every window's token stream, by one all-at-once evaluation per batch of windows. Returns the
    windows to store (by id -> Stored) and how many are not worth storing (kept raw). With the store
    policy "smaller", a probe of the first PROBE_TOKENS tokens decides first whether the model can pay
    at all: binary or incompressible input is then stored raw in seconds, without the full pass."""
    if settings.store == "smaller" and not _model_can_pay(data, windows, lm):
        return {}, len(windows)
    progress.phase("coding tokens", sum(len(s.tokens) for s in windows))
    streams, _bits = code_windows(lm, [s.tokens for s in windows], on_progress=progress.update)
    progress.done()
    costs = [len(stream) + len(container.varint(len(stream))) for stream in streams]
    worth = worth_storing(data, windows, costs, settings.store)
    stored = {id(s): Stored(b"", stream) for s, stream, ok in zip(windows, streams, worth) if ok}
    return stored, worth.count(False)


def _memorize(data, lm, windows, settings, code, progress, journal_path) -> tuple[dict, int, int]:
    """Optimize memory vectors: (verified windows by id -> Stored, resumed, not tried). A vector is
    accepted only when the engine's greedy replay regenerates its window with the required margin."""
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
        return reproduces(lm, code.rebuild(codes), tokens, settings.optimizer.margin)

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
    kept = [i for i, s in enumerate(windows) if results[i].code is not None]
    streams, _bits = code_windows(lm, [windows[i].tokens for i in kept], code.rebuild([results[i].code for i in kept])) \
        if kept else ([], [])
    stored = {id(windows[i]): Stored(results[i].code, stream, results[i].steps) for i, stream in zip(kept, streams)}
    return stored, len(done), len(skipped)


def _build(header: dict, segments: list[Segment], stored: dict) -> Container:
    """The container for ``segments`` with the windows in ``stored`` kept and every other window raw."""
    table: list[tuple[int, int]] = []
    codes, raw, streams = bytearray(), bytearray(), []
    for s in segments:
        kept = stored.get(id(s))
        if kept is not None:
            table.append((KIND_WINDOW, len(s.tokens)))
            codes += kept.code
            streams.append(kept.stream)
        else:
            raw += s.data
            if table and table[-1][0] == KIND_RAW:
                table[-1] = (KIND_RAW, table[-1][1] + len(s.data))
            else:
                table.append((KIND_RAW, len(s.data)))
    return Container(dict(header), table, bytes(codes), bytes(raw), streams)


def stored_vectors(c: Container, lm: LanguageModel):
    """The memory vectors [windows, hidden] a container's codes stand for under ``lm`` (None: none)."""
    return VectorCode(c.vector_spec, lm).rebuild(c.codes)


def _model_for(c: Container, model, progress: Progress) -> LanguageModel:
    """The model a container needs, proven by fingerprint and engine version before any decoding."""
    need_id, need_fp = c.header["model_id"], c.header["model_fingerprint"]
    if c.header["engine"] != ENGINE_VERSION:
        raise ModelMismatchError(
            f"this file was made by engine '{c.header['engine']}'; this memzip runs engine '{ENGINE_VERSION}'"
        )
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
    if lm.hidden_size != c.header["hidden_size"] or c.header["prefix_id"] >= lm.vocab_size:
        raise ModelMismatchError(f"file parameters do not fit model '{lm.model_id}'")
    spec = c.vector_spec
    if spec.code == "compact":
        recorded, here = c.header["vectors"]["basis_digest"], basis_digest(lm, spec.rank)
        if recorded != here:
            raise ModelMismatchError(
                f"this file's compact vectors use basis {recorded}, but this machine computes {here} for "
                f"'{lm.model_id}' (its eigendecomposition rounds differently); decode it where it was made"
            )
    return lm


def decompress(blob: bytes, model: LanguageModel | str | None = None, progress: Progress | None = None) -> bytes:
    """Restore the original bytes, or raise: never returns data that fails the recorded checksum.

    ``model`` overrides where the model comes from (its fingerprint must still match the file)."""
    progress = progress or Progress()
    c = container.read(blob)
    tokens: list[list[int]] = []
    lm = None
    if c.window_count:
        lm = _model_for(c, model, progress)
        lengths = c.window_lengths
        progress.phase("decoding", sum(lengths))
        try:
            tokens = decode_windows(lm, lengths, c.streams, stored_vectors(c, lm), progress.update)
        except ValueError as exc:  # a stream that is not exactly what the encoder writes
            raise ContainerError(str(exc)) from None
        progress.done()
    out = _assemble(c, tokens, lm.token_bytes if lm is not None else None)
    if len(out) != c.header["original_size"] or container.original_checksum(out) != c.checksum:
        raise IntegrityError("decoded data does not match the original checksum; nothing written")
    return out


def _assemble(c: Container, tokens: list[list[int]], token_bytes) -> bytes:
    """The file's bytes: the windows' tokens' bytes and the raw spans, in table order."""
    out = bytearray()
    raw_pos, next_window = 0, iter(tokens)
    for kind, length in c.segments:
        if kind == KIND_WINDOW:
            out += b"".join(token_bytes[i] for i in next(next_window))
        else:
            out += c.fallback[raw_pos : raw_pos + length]
            raw_pos += length
    return bytes(out)
