"""memzip: lossless text compression with a frozen language model, evaluated by an exact engine whose
logits are the same bits on every machine: each token arithmetic-coded with the model's probabilities
(the default), or memory tokens (one optimized embedding per window).

The public API (``compress``, ``decompress``, the settings and errors) is imported on first use, so that
reading a container or printing help does not load torch.
"""

__version__ = "0.7.0"

__all__ = ["compress", "compress_with_report", "decompress", "CompressSettings", "CompressReport", "OptimizerSettings",
           "MemzipError", "compress_files", "decompress_files"]


def __getattr__(name):
    if name in ("CompressSettings", "OptimizerSettings"):
        from . import settings

        return getattr(settings, name)
    if name in ("compress", "compress_with_report", "decompress", "CompressReport"):
        from . import codec

        return getattr(codec, name)
    if name in ("compress_files", "decompress_files"):
        from . import batch

        return getattr(batch, name)
    if name == "MemzipError":
        from .errors import MemzipError

        return MemzipError
    raise AttributeError(f"module 'memzip' has no attribute {name!r}")
