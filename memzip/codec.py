"""compress() and decompress(): the pipeline from bytes to container and back.

compress: segment -> optimize one vector per window -> verify -> container -> read the container back
and replay it with the decompressor's own functions (_replay, _assemble); any window that does not
come back exactly is demoted to the raw fallback and the check runs again, so compress() only returns
a container that is proven to decode to the input.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import torch

from . import __version__, container
from .container import KIND_RAW, KIND_WINDOW, Container
from .decoder import STORED_DTYPE, greedy_decode
from .errors import IntegrityError, ModelLoadError, ModelMismatchError
from .model import LanguageModel, load_model
from .optimizer import OptimizerSettings, WindowResult, optimize_windows
from .progress import Progress
from .windows import Segment, detokenize, segment

DEFAULT_WINDOW = 16
DECODE_BATCH = 64


@dataclass(frozen=True)
class CompressSettings:
    window: int = DEFAULT_WINDOW  # tokens per window
    optimizer: OptimizerSettings = OptimizerSettings()


def percentile(values: list, q: float):
    """The value at quantile ``q`` (nearest rank, lower) of ``values``; None when empty."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


@dataclass
class CompressReport:
    """What happened to each window: for `memzip c` output, the API and the benchmarks."""

    windows: int
    vectors: int
    fallback_windows: int
    steps: list[int]  # optimizer steps of each window that became a vector
    demoted_by_final_check: int

    def stats(self) -> dict:
        """The summary recorded in the container header (informative)."""
        return {
            "windows": self.windows,
            "vector_windows": self.vectors,
            "fallback_windows": self.fallback_windows,
            "demoted_by_final_check": self.demoted_by_final_check,
            "steps_median": percentile(self.steps, 0.5),
            "steps_p90": percentile(self.steps, 0.9),
        }


def _model(model, device=None, progress: Progress | None = None) -> LanguageModel:
    if isinstance(model, LanguageModel):
        return model
    say = progress.message if progress is not None else (lambda _text: None)
    return load_model(model, device=device, progress=say)


def compress(
    data: bytes,
    model: LanguageModel | str | None = None,
    settings: CompressSettings = CompressSettings(),
    progress: Progress | None = None,
    report: list | None = None,
) -> bytes:
    """Compress ``data``; ``model`` is a loaded LanguageModel, a model ID/path, or None for the default.

    If ``report`` is a list, a CompressReport is appended to it.
    """
    progress = progress or Progress()
    lm = _model(model, progress=progress)
    segments = segment(data, lm.tokenizer, settings.window)
    windows = [s for s in segments if s.is_window]
    progress.phase("optimizing memory vectors", len(windows))

    def verify(vectors: torch.Tensor, tokens: list[list[int]]) -> list[bool]:
        decoded = greedy_decode(lm, vectors, [len(t) for t in tokens], DECODE_BATCH, lm.prefix_id)
        return [d == t for d, t in zip(decoded, tokens)]

    def on_step(finished: int, steps: int) -> None:
        progress.update(finished, f"{steps} steps")

    results = optimize_windows(lm, [list(s.tokens) for s in windows], settings.optimizer, verify, on_step)
    progress.done()
    vector_of = {id(s): r for s, r in zip(windows, results) if r.vector is not None}
    header = {
        "memzip_version": __version__,
        "model_id": lm.model_id,
        "model_fingerprint": lm.fingerprint,
        "prefix_id": lm.prefix_id,
        "hidden_size": lm.hidden_size,
        "window": settings.window,
        "vector_dtype": container.VECTOR_DTYPE,
        "original_size": len(data),
        "original_sha256": hashlib.sha256(data).hexdigest(),
        "decode_batch": DECODE_BATCH,
        "settings": asdict(settings.optimizer),
    }
    demoted = 0
    while True:  # prove the file with the decompressor's own replay and assembly before returning it
        steps = [r.steps for r in vector_of.values()]
        summary = CompressReport(len(windows), len(vector_of), len(windows) - len(vector_of), steps, demoted)
        blob = container.write(_build({**header, "stats": summary.stats()}, segments, vector_of, lm.hidden_size))
        c = container.read(blob)
        tokens = _replay(c, lm, progress, "verifying the container")
        if _assemble(c, lm, tokens) == data:
            break
        stored = [s for s in segments if id(s) in vector_of]
        bad = [s for s, t in zip(stored, tokens) if t != list(s.tokens)]
        if not bad:
            raise IntegrityError("internal error: the container does not reproduce the input")
        for s in bad:  # numerically fragile under the decompressor's batching: store raw instead
            del vector_of[id(s)]
        demoted += len(bad)
    if report is not None:
        report.append(summary)
    return blob


def _build(header: dict, segments: list[Segment], vector_of: dict, hidden: int) -> Container:
    table: list[tuple[int, int]] = []
    vectors: list[torch.Tensor] = []
    raw = bytearray()
    for s in segments:
        result: WindowResult | None = vector_of.get(id(s))
        if result is not None:
            table.append((KIND_WINDOW, len(s.tokens)))
            vectors.append(result.vector.to(STORED_DTYPE).cpu())
        else:
            raw += s.data
            if table and table[-1][0] == KIND_RAW:
                table[-1] = (KIND_RAW, table[-1][1] + len(s.data))
            else:
                table.append((KIND_RAW, len(s.data)))
    stacked = torch.stack(vectors) if vectors else torch.zeros((0, hidden), dtype=STORED_DTYPE)
    return Container(dict(header), table, stacked, bytes(raw))


def _replay(c: Container, lm: LanguageModel | None, progress: Progress, what: str) -> list[list[int]]:
    """Greedy-decode every window of a container, batched as its header says."""
    lengths = [n for kind, n in c.segments if kind == KIND_WINDOW]
    if not lengths:
        return []
    progress.phase(what, len(lengths))
    h = c.header
    tokens = greedy_decode(lm, c.vectors, lengths, h["decode_batch"], h["prefix_id"], on_batch=progress.update)
    progress.done()
    return tokens


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
    return lm


def decompress(blob: bytes, model: LanguageModel | str | None = None, progress: Progress | None = None) -> bytes:
    """Restore the original bytes, or raise: never returns data that fails the recorded checksum.

    ``model`` overrides where the model comes from (its fingerprint must still match the file).
    """
    progress = progress or Progress()
    c = container.read(blob)
    lm = _model_for(c, model, progress) if c.window_count else None
    out = _assemble(c, lm, _replay(c, lm, progress, "decoding memory vectors"))
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
        else:
            out += c.fallback[raw_pos : raw_pos + length]
            raw_pos += length
    return bytes(out)
