"""memzip: lossless text compression with a frozen language model, evaluated by an exact engine whose
logits are the same bits on every machine: each token stored by its rank under the model's prediction
(the default), or memory tokens (one optimized embedding per window).

The public API (``compress``, ``decompress``, the settings and errors) is imported on first use, so that
reading a container or printing help does not load torch.
"""

__version__ = "0.6.0"

__all__ = ["compress", "decompress", "CompressSettings", "CompressReport", "OptimizerSettings", "MemzipError"]


def __getattr__(name):
    if name in ("compress", "decompress", "CompressSettings", "CompressReport"):
        from . import codec

        return getattr(codec, name)
    if name == "OptimizerSettings":
        from .optimizer import OptimizerSettings

        return OptimizerSettings
    if name == "MemzipError":
        from .errors import MemzipError

        return MemzipError
    raise AttributeError(f"module 'memzip' has no attribute {name!r}")
