"""memzip: lossless text compression with a frozen language model: memory tokens (one optimized embedding per
token window) or, by default, the ranks of each token under the model's own prediction."""

__version__ = "0.4.0"

from .codec import CompressReport, CompressSettings, compress, decompress  # noqa: E402
from .errors import MemzipError  # noqa: E402
from .optimizer import OptimizerSettings  # noqa: E402

__all__ = ["compress", "decompress", "CompressSettings", "CompressReport", "OptimizerSettings", "MemzipError"]
