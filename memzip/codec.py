"""compress() and decompress(): the pipeline from bytes to container and back.

compress: resolve the settings for this input -> segment it into windows (rows of up to the level's
length) and raw spans -> one storage strategy (memzip/strategies/: model-coded windows by default,
memory vectors on request) returns each window it keeps as a vector code and a token stream -> the
container, read back strictly: its streams and codes must be the ones computed and its segments must
make up the input. Every replay runs on the exact engine (memzip.engine), whose logits are the same
bits on every machine and whether a window is evaluated all at once or one token at a time, so the
distributions coded with are exactly those the decompressor decodes with. ``CompressSettings.verify``
also decodes the finished file the way ``decompress`` does.

decompress: read strictly -> check the model's fingerprint and engine version -> decode every window
one token per step from its stream (and its memory vector, if the file has them) -> reassemble with the
raw spans -> check length and checksum.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from . import __version__, strategies
from .codes import VectorCode, basis_digest, header_field
from .decoder import decode_windows
from .engine import ENGINE_VERSION
from .errors import ContainerError, IntegrityError, ModelLoadError, ModelMismatchError, SettingsError
from .format import container
from .format.container import KIND_RAW, KIND_WINDOW, Container
from .model import LanguageModel, load_model
from .progress import Progress
from .settings import CompressSettings, default_window
from .strategies import Job, Outcome, Stored, percentile
from .windows import Segment, segment


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
    if window is None and not settings.rows_by_level:
        window = default_window(False, 0)
    elif window is None:
        approx_tokens = len(lm.tokenizer(data.decode("utf-8", "replace"), add_special_tokens=False)["input_ids"])
        window = default_window(True, approx_tokens, settings.level)
    if not 1 <= window <= container.MAX_WINDOW_TOKENS:
        raise SettingsError(f"window must be 1..{container.MAX_WINDOW_TOKENS} tokens")
    return replace(settings, window=window, optimizer=settings.optimizer.resolved(lm.device))


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
    job = Job(data, [s for s in segments if s.is_window], settings, lm, progress, journal_path)
    strategy = strategies.for_settings(settings)
    outcome = strategy.store(job)
    blob, summary = None, None
    for candidate in (outcome, outcome.alternative):
        if candidate is None:
            continue
        header = {
            "memzip_version": __version__,
            "model_id": lm.model_id,
            "model_fingerprint": lm.fingerprint,
            "engine": ENGINE_VERSION,
            "prefix_id": lm.prefix_id,
            "hidden_size": lm.hidden_size,
            "window": settings.window,
            "vectors": header_field(candidate.spec, lm),
            "original_size": len(data),
            "settings": strategy.header_settings(job, candidate),
        }
        written = _write(header, segments, candidate.stored, lm.token_bytes, data)
        if blob is None or len(written) < len(blob):
            blob, summary, kept, kept_header = written, _summary(job, candidate.stored, candidate), candidate, header
    if settings.store == "smaller" and kept.stored:  # the whole file raw, if that is smaller after all
        raw_blob = _write(kept_header, segments, {}, lm.token_bytes, data)
        if len(raw_blob) < len(blob):
            blob, summary = raw_blob, _summary(job, {}, kept)
    if settings.verify:
        if decompress(blob, lm, progress) != data:  # decompress raises first; this cannot happen
            raise IntegrityError("internal error: the container does not decode to the input")
    if report is not None:
        report.append(summary)
    return blob


def _write(header: dict, segments: list[Segment], stored: dict[int, Stored], token_bytes, data: bytes) -> bytes:
    """The container, read back strictly: it must hold exactly the streams and codes computed, and its
    raw spans and windows (their tokens' bytes) must make up the input."""
    windows = [s for s in segments if s.is_window]
    kept = sorted(stored)
    c = _build(header, segments, stored)
    c.checksum = container.original_checksum(data)
    blob = container.write(c)
    c = container.read(blob)
    if c.streams != [stored[i].stream for i in kept] or c.codes != b"".join(stored[i].code for i in kept):
        raise IntegrityError("internal error: the container does not hold the streams and codes computed")
    if _assemble(c, [list(windows[i].tokens) for i in kept], token_bytes) != data:
        raise IntegrityError("internal error: the container's segments do not make up the input")
    return blob


def _summary(job: Job, stored: dict[int, Stored], outcome: Outcome) -> CompressReport:
    """The report of a file that keeps the windows in ``stored`` (the outcome's, or none at all)."""
    vectors = outcome.spec.code != "none"
    return CompressReport(len(job.windows), len(stored) if vectors else 0, len(job.windows) - len(stored),
                          [r.steps for r in stored.values()] if vectors else [], outcome.resumed,
                          outcome.not_tried, 0 if vectors else len(stored))


def _build(header: dict, segments: list[Segment], stored: dict[int, Stored]) -> Container:
    """The container for ``segments`` with the windows in ``stored`` (by window index) kept and every
    other window raw."""
    table: list[tuple[int, int]] = []
    codes, raw, streams = bytearray(), bytearray(), []
    window = 0
    for s in segments:
        kept = stored.get(window) if s.is_window else None
        window += s.is_window
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
