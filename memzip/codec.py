"""compress() and decompress(): the pipeline from bytes to container and back.

compress: tokenize the input once -> resolve the settings for it, once (the window from its tokens; for
memory vectors the optimizer's "auto" precision) -> cut it into windows (rows of up to the level's
length) and raw spans -> one storage strategy (memzip/strategies/: model-coded windows by default,
memory vectors on request) returns each window it keeps as a vector code and a token stream -> each
candidate file (the strategy's outcome, its alternative if it has one, and with the store policy
"smaller" the whole input raw, whose zstd frame the estimates already computed) is built once and the
smallest is kept -> that file is read back strictly, once: its streams and codes must be the ones
computed and its segments must make up the input. Every replay runs on the exact engine
(memzip.engine), whose logits are the same bits on every machine and whether a window is evaluated all
at once or one token at a time, so the distributions coded with are exactly those the decompressor
decodes with. ``CompressSettings.verify`` also decodes the finished file the way ``decompress`` does.

decompress: read strictly (``decompress_container`` takes a container already read) -> check the
model's fingerprint and engine version -> decode every window one token per step from its stream (and
its memory vector, if the file has them) -> reassemble with the raw spans -> check length and checksum.

Memory-vector code (memzip.vectors) is imported only for settings or files that use vectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from . import __version__, rows, strategies
from .decoder import decode_windows
from .encoder import code_windows
from .engine import ENGINE_VERSION
from .errors import ContainerError, IntegrityError, ModelLoadError, ModelMismatchError, SettingsError
from .format import container
from .format.container import KIND_RAW, KIND_WINDOW, Container
from .format.vectors import VectorSpec
from .model import LanguageModel, load_model
from .progress import Progress
from .settings import DEFAULT_WINDOW, MAX_ROW, CompressSettings, row_plan
from .strategies import Job, Outcome, Stored, percentile
from .windows import Segment, Tokenized, tokenize


@dataclass(kw_only=True)
class CompressReport:
    """What one compression did with the input's windows: for `memzip c`'s summary, the API and the
    benchmarks."""

    windows: int  # windows the input was cut into
    settings: CompressSettings  # the settings as resolved for this input (window; optimizer precision with vectors)
    vectors: int = 0  # windows stored as a memory vector
    predicted: int = 0  # windows coded with the model's distribution, without a vector
    fallback_windows: int = 0  # windows stored raw
    not_tried: int = 0  # windows stored raw without optimizing or predicting: expected to be larger
    resumed: int = 0  # windows taken from the journal of an interrupted run
    steps: list[int] = field(default_factory=list)  # optimizer steps of each window that became a vector
    sizes: dict = field(default_factory=dict)  # the file's section sizes in bytes (container.Container.sizes)

    @property
    def steps_median(self) -> int | None:
        return percentile(self.steps, 0.5)

    @property
    def steps_p90(self) -> int | None:
        return percentile(self.steps, 0.9)


def _model(model, progress: Progress) -> LanguageModel:
    if isinstance(model, LanguageModel):
        return model
    return load_model(model, progress=progress.message)


def resolved_settings(data: bytes, lm: LanguageModel, settings: CompressSettings,
                      tokenized: Tokenized | None = None, dictionary=None) -> CompressSettings:
    """``settings`` with every default decided for this input and model, once per compression (the
    header and the journal record them): the window length, from the input's tokens (``tokenized``,
    ``data`` tokenized by ``lm``, is made here if needed and not given), and for memory vectors what the
    optimizer's "auto" precision means on ``lm``'s device."""
    window, context = settings.window, settings.context
    if window is None and not settings.rows_by_level:
        window, context = DEFAULT_WINDOW, 0
    elif window is None:
        tokenized = tokenized if tokenized is not None else tokenize(data, lm.tokenizer)
        room = MAX_ROW - (dictionary.positions if dictionary is not None else 1)
        window, planned = row_plan(_tokens_for_rows(tokenized, lm), settings.level, room)
        # the rows' own length stays the plan's; a context other than the level's lengthens the first
        wanted = planned if context is None and settings.vectors.code == "none" else context or 0
        window, context = window - planned + wanted, wanted
    context = context or 0
    longest = container.MAX_WINDOW_TOKENS - (dictionary.positions - 1 if dictionary is not None else 0)
    if not 1 <= window <= longest or context >= window:
        raise SettingsError(f"window must be 1..{longest} tokens, more than the context")
    if dictionary is not None and settings.vectors.code != "none":
        raise SettingsError("vectors: a dictionary applies to model-coded rows, not to memory vectors")
    optimizer = settings.optimizer
    if settings.vectors.code != "none":
        from .vectors.optimizer import resolved

        optimizer = resolved(optimizer, lm.device)
    return replace(settings, window=window, context=context, optimizer=optimizer)


def _tokens_for_rows(tokenized: Tokenized, lm: LanguageModel) -> int:
    """How many tokens the level's rows are sized for: the input's. An input with bytes that are not
    UTF-8 is counted, as memzip always has, as its text with those bytes replaced by U+FFFD (so that the
    window, which the file records, stays what it was): for such inputs only, a second tokenizer pass."""
    if tokenized.is_utf8:
        return tokenized.tokens
    return len(lm.tokenizer(tokenized.data.decode("utf-8", "replace"), add_special_tokens=False)["input_ids"])


def compress(data: bytes, model: LanguageModel | str | None = None, settings: CompressSettings = CompressSettings(),
             progress: Progress | None = None, journal_path: str | None = None, dictionary=None) -> bytes:
    """Compress ``data``; ``model`` is a loaded LanguageModel, a model ID/path, or None for the default;
    ``dictionary`` a memzip.dictionary.Dictionary for that model (every row starts after it). What
    happened to the windows: ``compress_with_report``."""
    return compress_with_report(data, model, settings, progress, journal_path, dictionary)[0]


def compress_with_report(data: bytes, model: LanguageModel | str | None = None,
                         settings: CompressSettings = CompressSettings(), progress: Progress | None = None,
                         journal_path: str | None = None, dictionary=None) -> tuple[bytes, CompressReport]:
    """``compress``, and the report of what it did with the input's windows.

    With ``journal_path``, windows whose memory vectors are optimized are journaled there as they
    complete, and a journal left by an interrupted run on the same input, model and settings is resumed;
    the caller deletes the journal once it has stored the result.
    """
    progress = progress or Progress()
    lm = _model(model, progress)
    job = _prepare(data, lm, settings, progress, journal_path, dictionary)
    return _finish(job, _store(job))


def compress_many(inputs: list[bytes], model: LanguageModel | str | None = None,
                  settings: CompressSettings = CompressSettings(), progress: Progress | None = None,
                  dictionary=None) -> list[tuple[bytes, CompressReport]]:
    """``compress_with_report`` of every input, with the windows of all the inputs evaluated by the
    engine together (rows of different files in one batch: many small files cost about what one file of
    their total size does). Each file is exactly what ``compress_with_report`` makes of it alone."""
    progress = progress or Progress()
    lm = _model(model, progress)
    jobs = [_prepare(data, lm, settings, progress, None, dictionary) for data in inputs]
    if settings.vectors.code != "none":  # memory vectors are optimized per file
        return [_finish(job, _store(job)) for job in jobs]
    from .strategies.model_coded import model_can_pay

    tried = [j for j, job in enumerate(jobs) if job.windows and (settings.store == "always" or model_can_pay(job))]
    windows, before, owner = [], [], []
    for j in tried:
        tokens = [s.tokens for s in jobs[j].windows]
        context = rows.context_of(tokens, jobs[j].context)
        windows += tokens
        before += [list(context) if i else [] for i in range(len(tokens))]
        owner += [j] * len(tokens)
    streams = code_windows(lm, windows, start=dictionary, before=before)[0] if windows else []
    coded: dict[int, list[bytes]] = {j: [] for j in tried}
    for j, stream in zip(owner, streams):
        coded[j].append(stream)
    results = []
    for j, job in enumerate(jobs):
        job = replace(job, streams=coded.get(j, []))
        results.append(_finish(job, _store(job)))
    return results


def _prepare(data: bytes, lm: LanguageModel, settings: CompressSettings, progress: Progress,
             journal_path: str | None, dictionary) -> Job:
    """Tokenize once, resolve the settings for this input, cut it into windows: the job a strategy gets."""
    if dictionary is not None and dictionary.lm is not lm:
        raise SettingsError("dictionary: bound to another model than the one compressing (memzip.dictionary.bind)")
    tokenized = tokenize(data, lm.tokenizer)
    settings = resolved_settings(data, lm, settings, tokenized, dictionary)
    segments = tokenized.segments(lm.token_bytes, settings.window, settings.window - settings.context)
    windows = [s for s in segments if s.is_window]
    context = min(settings.context, len(windows[0].tokens)) if len(windows) > 1 else 0
    return Job(data, windows, settings, lm, progress, journal_path, context, dictionary, segments=segments)


def _store(job: Job) -> Outcome:
    """The strategy's outcome for the job; when the window holding the shared context is stored raw (a
    decoder would not have its tokens), the windows are coded again without a shared context."""
    strategy = strategies.for_settings(job.settings)
    outcome = strategy.store(job)
    if job.context and outcome.stored and 0 not in outcome.stored:
        outcome = strategy.store(replace(job, context=0, streams=None))
        outcome.context = 0
    return outcome


def _finish(job: Job, outcome: Outcome) -> tuple[bytes, CompressReport]:
    """The smallest file the outcome (or its alternative, or storing everything raw) makes, checked."""
    data, lm, settings, dictionary, segments = job.data, job.lm, job.settings, job.dictionary, job.segments
    strategy = strategies.for_settings(settings)
    context = job.context if outcome.context is None else outcome.context
    checksum = container.original_checksum(data)
    best = None
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
            "dictionary": dictionary.id if dictionary is not None and candidate.stored else "",
            "window": settings.window,
            "context": context if candidate.stored and candidate.spec.code == "none" else 0,
            "vectors": _vectors_field(candidate.spec, lm),
            "original_size": len(data),
            "settings": strategy.header_settings(job, candidate),
        }
        blob = container.write(_build(header, segments, candidate.stored, checksum))
        built = _File(header, candidate.stored, candidate, blob)
        if best is None or len(built.blob) < len(best.blob):
            best = built
    if settings.store == "smaller" and best.stored:  # the whole file raw, if that is smaller after all
        header = {**best.header, "context": 0, "dictionary": ""}
        raw = _build(header, segments, {}, checksum)
        raw_file = _File(header, {}, best.outcome, container.write(raw, packed_fallback=job.zstd_frame))
        if len(raw_file.blob) < len(best.blob):
            best = raw_file
    c = _checked(best, job.windows, data, lm.token_bytes)
    if settings.verify:
        if decompress_container(c, lm, job.progress, dictionary=dictionary) != data:  # decompress raises first; this cannot happen
            raise IntegrityError("internal error: the container does not decode to the input")
    return best.blob, _report(job, best.stored, best.outcome, c.sizes)


@dataclass(frozen=True)
class _File:
    """A candidate file: its header, the windows it keeps (index into the job's windows -> Stored), the
    outcome they come from, and its bytes."""

    header: dict
    stored: dict[int, Stored]
    outcome: Outcome
    blob: bytes


def _vectors_field(spec: VectorSpec, lm: LanguageModel) -> dict:
    """The header's ``vectors`` field (compact codes name their basis, computed from the model)."""
    if spec.code == "none":
        return spec.header()
    from .vectors.codes import header_field

    return header_field(spec, lm)


def _checked(file: _File, windows: list[Segment], data: bytes, token_bytes) -> Container:
    """The file, read back strictly: it must hold exactly the streams and codes computed, and its raw
    spans and windows (their tokens' bytes) must make up the input."""
    kept = sorted(file.stored)
    c = container.read(file.blob)
    if c.streams != [file.stored[i].stream for i in kept] or c.codes != b"".join(file.stored[i].code for i in kept):
        raise IntegrityError("internal error: the container does not hold the streams and codes computed")
    if _assemble(c, [list(windows[i].tokens) for i in kept], token_bytes) != data:
        raise IntegrityError("internal error: the container's segments do not make up the input")
    return c


def _report(job: Job, stored: dict[int, Stored], outcome: Outcome, sizes: dict) -> CompressReport:
    """The report of a file that keeps the windows in ``stored`` (the outcome's, or none at all)."""
    vectors = outcome.spec.code != "none"
    return CompressReport(
        windows=len(job.windows), settings=job.settings, vectors=len(stored) if vectors else 0,
        predicted=0 if vectors else len(stored), fallback_windows=len(job.windows) - len(stored),
        not_tried=outcome.not_tried, resumed=outcome.resumed,
        steps=[r.steps for r in stored.values()] if vectors else [], sizes=dict(sizes),
    )


def _build(header: dict, segments: list[Segment], stored: dict[int, Stored], checksum: bytes) -> Container:
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
    return Container(dict(header), table, bytes(codes), bytes(raw), streams, checksum)


def _model_for(c: Container, model, progress: Progress, load: Callable[[str | None], LanguageModel] | None) -> LanguageModel:
    """The model a container needs, proven by fingerprint and engine version before any decoding."""
    need_id, need_fp = c.header["model_id"], c.header["model_fingerprint"]
    if c.header["engine"] != ENGINE_VERSION:
        raise ModelMismatchError(
            f"this file was made by engine '{c.header['engine']}'; this memzip runs engine '{ENGINE_VERSION}'"
        )
    spec = model if model is not None else need_id
    try:
        lm = spec if isinstance(spec, LanguageModel) else load(spec) if load is not None else _model(spec, progress)
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
    vectors = c.vector_spec
    if vectors.code == "compact":
        from .vectors.codes import basis_digest

        recorded, here = c.header["vectors"]["basis_digest"], basis_digest(lm, vectors.rank)
        if recorded != here:
            raise ModelMismatchError(
                f"this file's compact vectors use basis {recorded}, but this machine computes {here} for "
                f"'{lm.model_id}' (its eigendecomposition rounds differently); decode it where it was made"
            )
    return lm


def decompress(blob: bytes, model: LanguageModel | str | None = None, progress: Progress | None = None,
               dictionary=None) -> bytes:
    """Restore the original bytes, or raise: never returns data that fails the recorded checksum.

    ``model`` overrides where the model comes from (its fingerprint must still match the file);
    ``dictionary`` is the dictionary a file made with one needs (memzip.dictionary)."""
    return decompress_container(container.read(blob), model, progress, dictionary=dictionary)


def decompress_container(c: Container, model: LanguageModel | str | None = None, progress: Progress | None = None,
                         load: Callable[[str | None], LanguageModel] | None = None, dictionary=None) -> bytes:
    """``decompress`` for a container already read (``container.read``). When ``model`` is not a loaded
    model, ``load(model ID or path)`` loads the one needed (default: ``load_model``); a file whose every
    segment is raw loads none. ``dictionary``: a memzip.dictionary.Dictionary, or a callable giving the
    Dictionary for a loaded model (the CLI's -D, which binds it once the model is known)."""
    progress = progress or Progress()
    tokens: list[list[int]] = []
    lm = None
    if c.window_count:
        lm = _model_for(c, model, progress, load)
        start = _dictionary_for(c, lm, dictionary)
        lengths = c.window_lengths
        progress.phase("decoding", sum(lengths))
        try:
            tokens = decode_windows(lm, lengths, c.streams, _stored_vectors(c, lm), progress.update,
                                    context=c.header["context"], start=start)
        except ValueError as exc:  # a stream that is not exactly what the encoder writes
            raise ContainerError(str(exc)) from None
        progress.done()
    return _verified(c, tokens, lm.token_bytes if lm is not None else None)


def decompress_many(blobs: list[bytes], model: LanguageModel | str | None = None, progress: Progress | None = None,
                    load: Callable[[str | None], LanguageModel] | None = None, dictionary=None) -> list[bytes]:
    """``decompress`` of every file; the single-window files made by one model are decoded together
    (their rows in every engine step: many small files restore at about the speed of one). ``model``,
    ``load`` and ``dictionary`` as for ``decompress_container``. Raises on the first file that fails."""
    progress = progress or Progress()
    parsed = [container.read(b) for b in blobs]
    single = [i for i, c in enumerate(parsed)
              if c.window_count == 1 and c.header["context"] == 0 and c.vector_spec.code == "none"]
    out: list[bytes | None] = [None] * len(parsed)
    if single:
        lm = _model_for(parsed[single[0]], model, progress, load)
        same = (parsed[single[0]].header["engine"], lm.fingerprint)
        groups: dict = {}  # the files of this model, by the dictionary their rows start after
        for i in single:
            if (parsed[i].header["engine"], parsed[i].header["model_fingerprint"]) == same:
                start = _dictionary_for(parsed[i], lm, dictionary)
                groups.setdefault(id(start), (start, []))[1].append(i)
        for start, members in groups.values():
            lengths = [parsed[i].window_lengths[0] for i in members]
            progress.phase("decoding", sum(lengths))
            try:
                tokens = decode_windows(lm, lengths, [parsed[i].streams[0] for i in members], None, progress.update,
                                        start=start)
            except ValueError as exc:
                raise ContainerError(f"one of the files is corrupt: {exc}") from None
            progress.done()
            for i, t in zip(members, tokens):
                out[i] = _verified(parsed[i], [t], lm.token_bytes)
        if model is None or isinstance(model, str):
            loaded = lm
            load = (lambda spec, _load=load: loaded if spec == model or spec == loaded.model_id
                    else _load(spec) if _load is not None else _model(spec, progress))
    for i, c in enumerate(parsed):
        if out[i] is None:
            out[i] = decompress_container(c, model, progress, load=load, dictionary=dictionary)
    return out


def _verified(c: Container, tokens: list[list[int]], token_bytes) -> bytes:
    out = _assemble(c, tokens, token_bytes)
    if len(out) != c.header["original_size"] or container.original_checksum(out) != c.checksum:
        raise IntegrityError("decoded data does not match the original checksum; nothing written")
    return out


def _dictionary_for(c: Container, lm: LanguageModel, dictionary):
    """The dictionary the file needs, proven by ID before decoding (None for a file made without one)."""
    need = c.header["dictionary"]
    if callable(dictionary):
        dictionary = dictionary(lm)
    if not need:
        return None
    if dictionary is None:
        raise ModelMismatchError(f"this file needs dictionary {need} (memzip -d -D DICTIONARY.mzd)")
    if dictionary.id != need:
        raise ModelMismatchError(f"this file needs dictionary {need}, not {dictionary.id}")
    if max(c.window_lengths) + dictionary.positions - 1 > MAX_ROW:
        raise ContainerError("windows and dictionary exceed the engine's positions per row")
    return dictionary


def _stored_vectors(c: Container, lm: LanguageModel):
    """The memory vectors [windows, hidden] a container's codes stand for under ``lm`` (None: none)."""
    if c.vector_spec.code == "none":
        return None
    from .vectors.codes import stored_vectors

    return stored_vectors(c, lm)


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
