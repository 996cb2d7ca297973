"""Compression methods measured side by side: classic compressors, memzip, and the model's limit."""

from __future__ import annotations

import bz2
import gzip
import lzma
import resource
import statistics
import time

import brotli
import pyppmd
import zstandard

from memzip import CompressSettings, codec

CLASSIC = {
    "gzip -9": (lambda d: gzip.compress(d, 9, mtime=0), gzip.decompress),
    "bzip2 -9": (lambda d: bz2.compress(d, 9), bz2.decompress),
    "xz -9e": (lambda d: lzma.compress(d, preset=9 | lzma.PRESET_EXTREME), lzma.decompress),
    "zstd -19": (lambda d: zstandard.ZstdCompressor(level=19).compress(d), lambda b: zstandard.ZstdDecompressor().decompress(b)),
    "brotli -q 11": (lambda d: brotli.compress(d, quality=11), brotli.decompress),
    "PPMd order 8": (lambda d: pyppmd.compress(d, max_order=8, mem_size=64 << 20),
                     lambda b: pyppmd.decompress(b, max_order=8, mem_size=64 << 20)),
}


def row(corpus, method: str, output_bytes: int, compress_s: float, decompress_s: float | None, exact, **extra) -> dict:
    n = len(corpus.data)
    return {
        "corpus": corpus.name,
        "method": method,
        "input_bytes": n,
        "output_bytes": output_bytes,
        "ratio": output_bytes / n if n else None,
        "bits_per_byte": 8 * output_bytes / n if n else None,
        "compress_s": round(compress_s, 4),
        "decompress_s": None if decompress_s is None else round(decompress_s, 4),
        "compress_bytes_per_s": round(n / compress_s, 1) if n and compress_s > 0 else None,
        "decompress_bytes_per_s": round(n / decompress_s, 1) if n and decompress_s else None,
        "exact": exact,
        **extra,
    }


def classic(corpus) -> list[dict]:
    rows = []
    for name, (comp, decomp) in CLASSIC.items():
        t0 = time.perf_counter()
        blob = comp(corpus.data)
        t1 = time.perf_counter()
        back = decomp(blob)
        t2 = time.perf_counter()
        rows.append(row(corpus, name, len(blob), t1 - t0, t2 - t1, back == corpus.data))
    return rows


def memzip(corpus, lm, settings: CompressSettings, label: str = "memzip") -> dict:
    t0 = time.perf_counter()
    blob, r = codec.compress_with_report(corpus.data, lm, settings)
    t1 = time.perf_counter()
    back = codec.decompress(blob, lm)
    t2 = time.perf_counter()
    code = settings.vectors.fitted(lm.hidden_size)
    return row(
        corpus, label, len(blob), t1 - t0, t2 - t1, back == corpus.data,
        windows=r.windows, vectors=r.vectors, predicted=r.predicted, fallbacks=r.fallback_windows,
        steps_median=statistics.median(r.steps) if r.steps else None,
        steps_p90=r.steps_p90,
        settings={"window": r.settings.window, "vectors": code.describe(),
                  **{k: list(v) if isinstance(v, tuple) else v
                     for k, v in vars(r.settings.optimizer).items()  # as resolved for this input
                     if k in ("steps", "lr", "batch", "margin", "betas", "precision", "verify_batch")}},
        sections=dict(r.sizes),  # header, segments, vectors, tokens, fallback; + preamble, lengths, trailer
        bits_per_vector=code.stored_bits(lm.hidden_size),
        optimizer_steps=sum(r.steps),  # window-steps spent on windows that became vectors
        # the bench process's peak resident memory so far (model included): an upper bound for this row
        process_peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    )
