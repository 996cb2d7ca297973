"""Memory-vector codes as the file format sees them: which code (``none``, ``full``, ``compact``), its
size per window, the header field that names it, and the byte checks of stored codes. Turning codes
into vectors needs the model: memzip/codes.py.
"""

from __future__ import annotations

import array
import math
import struct
import sys
from dataclasses import dataclass

BASIS_NAME = "embedding-pca-v2"  # v2: mean and basis on a 2**-24 grid, exact rebuild
CODES = ("none", "full", "compact")
MIN_BITS, MAX_BITS = 2, 8
SCALE_BYTES = 2  # one bf16 scale per compact vector


@dataclass(frozen=True)
class VectorSpec:
    """Which code the memory vectors use: ``none``, ``full`` bf16, or ``compact`` (rank, bits)."""

    code: str = "none"
    rank: int = 256  # at most this many numbers (capped at the model's width)
    bits: int = 4

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"vector code must be one of {CODES}")
        if self.code == "compact":
            if self.rank < 1:
                raise ValueError("rank must be at least 1")
            if not MIN_BITS <= self.bits <= MAX_BITS:
                raise ValueError(f"bits must be {MIN_BITS}..{MAX_BITS}")

    def fitted(self, hidden: int) -> "VectorSpec":
        """This spec for a model of width ``hidden``: a rank beyond the width is capped at it."""
        if self.code == "compact" and self.rank > hidden:
            return VectorSpec("compact", hidden, self.bits)
        return self

    def header(self, basis_digest: str | None = None) -> dict:
        """The container's ``vectors`` field; compact codes name their basis by its digest
        (memzip.codes.basis_digest, which needs the model)."""
        if self.code != "compact":
            return {"code": self.code}
        return {"code": "compact", "rank": self.rank, "bits": self.bits, "basis": BASIS_NAME,
                "basis_digest": basis_digest}

    def code_bytes(self, hidden: int) -> int:
        """Stored bytes per window (before the container's zstd pass over all codes)."""
        return {"none": 0, "full": hidden * 2}.get(self.code, SCALE_BYTES + self.rank)

    def stored_bits(self, hidden: int) -> int:
        """Information stored per window: the bits the code really uses (16 per bf16 number)."""
        return {"none": 0, "full": hidden * 16}.get(self.code, 16 + self.rank * self.bits)

    @property
    def levels(self) -> int:
        return 2 ** (self.bits - 1) - 1

    def describe(self) -> str:
        if self.code == "compact":
            return f"rank {self.rank}, {self.bits}-bit"
        return {"none": "no memory vectors", "full": "full bf16"}[self.code]


def spec_from_header(value, hidden: int) -> VectorSpec:
    """The spec a container header names; ValueError on anything not exactly as specified."""
    if not isinstance(value, dict):
        raise ValueError("'vectors' must be an object")
    if value in ({"code": "none"}, {"code": "full"}):
        return VectorSpec(value["code"])
    if set(value) != {"code", "rank", "bits", "basis", "basis_digest"} or value["code"] != "compact":
        raise ValueError(f"unknown vector code {value!r}")
    digest = value["basis_digest"]
    if not isinstance(digest, str) or len(digest) != 16 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError("'basis_digest' must be 16 hex digits")
    rank, bits = value["rank"], value["bits"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (rank, bits)):
        raise ValueError("'vectors' rank and bits must be integers")
    if value["basis"] != BASIS_NAME:
        raise ValueError(f"unknown basis {value['basis']!r}")
    if not 1 <= rank <= hidden:
        raise ValueError(f"rank {rank} out of range (1..{hidden})")
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits {bits} out of range ({MIN_BITS}..{MAX_BITS})")
    return VectorSpec("compact", rank, bits)


def _bf16(raw: bytes) -> list[float]:
    """bf16 numbers (little-endian) as floats: each is the upper half of a float32."""
    words = array.array("H", raw)
    if sys.byteorder != "little":
        words.byteswap()
    return list(struct.unpack(f"<{len(words)}f", b"".join(struct.pack("<I", w << 16) for w in words)))


def check_codes(spec: VectorSpec, hidden: int, blob: bytes, windows: int) -> None:
    """Reject stored codes that no writer produces: sizes, non-finite or non-positive scales, integers
    beyond the code's range."""
    size = spec.code_bytes(hidden)
    if len(blob) != windows * size:
        raise ValueError(f"vector codes hold {len(blob)} bytes, {windows} windows need {windows * size}")
    if not windows or spec.code == "none":
        return
    if spec.code == "full":
        if not all(math.isfinite(v) for v in _bf16(blob)):
            raise ValueError("vectors contain non-finite values")
        return
    rows = [blob[k * size : (k + 1) * size] for k in range(windows)]
    scales = _bf16(b"".join(row[:SCALE_BYTES] for row in rows))
    if not all(math.isfinite(v) and v > 0 for v in scales):
        raise ValueError("compact vector scales must be finite and positive")
    if max(abs(q) for row in rows for q in array.array("b", row[SCALE_BYTES:])) > spec.levels:
        raise ValueError(f"compact vector codes exceed {spec.bits} bits")
