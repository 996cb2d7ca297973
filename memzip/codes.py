"""Vector codes: how a window's memory vector is parameterized, quantized and stored.

Three codes, recorded in the container header (``vectors``) and specified in docs/FORMAT.md:

* ``none`` -- no memory vectors: every window is decoded from the prefix token alone, its tokens
  given by their ranks under the model (see memzip/rankcoder.py). The default: on this model no
  vector is worth its bits (measured in the README).
* ``full`` -- the vector itself in bf16: ``hidden_size`` numbers x 16 bits (the paper's setting).
* ``compact`` -- ``e = mean + (scale * q) @ P``: ``q`` is ``rank`` signed integers of ``bits`` bits
  (|q| <= 2**(bits-1) - 1), ``scale`` one bf16 number per vector, ``mean`` the mean input embedding
  and ``P`` the top-``rank`` principal directions of the model's input embeddings, each scaled to the
  standard deviation along it. ``mean`` and ``P`` are computed from the weights by the decompressor
  (nothing of them is stored); the sign of each direction is fixed so that its largest entry is positive.

Every code is a fixed number of bytes per window (``code_bytes``). The optimizer trains a float
parameter row per window and sees, in every forward, exactly the vector the decompressor will rebuild
from the row's quantized code (straight-through rounding); ``rebuild`` is the one function both the
compressor's verification and the decompressor use to turn stored codes into vectors.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

BASIS_NAME = "embedding-pca-v1"
CODES = ("none", "full", "compact")
MIN_BITS, MAX_BITS = 2, 8
_SCALE_BYTES = 2  # one bf16 scale per compact vector


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

    def header(self, lm=None) -> dict:
        """The container's ``vectors`` field; compact needs the model for its basis digest."""
        if self.code != "compact":
            return {"code": self.code}
        return {"code": "compact", "rank": self.rank, "bits": self.bits, "basis": BASIS_NAME,
                "basis_digest": basis_digest(lm, self.rank)}

    def code_bytes(self, hidden: int) -> int:
        """Stored bytes per window (before the container's zstd pass over all codes)."""
        return {"none": 0, "full": hidden * 2}.get(self.code, _SCALE_BYTES + self.rank)

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


def check_codes(spec: VectorSpec, hidden: int, blob: bytes, windows: int) -> None:
    """Reject stored codes that no writer produces (needs no model): sizes, non-finite or
    non-positive scales, integers beyond the code's range."""
    size = spec.code_bytes(hidden)
    if len(blob) != windows * size:
        raise ValueError(f"vector codes hold {len(blob)} bytes, {windows} windows need {windows * size}")
    if not windows or spec.code == "none":
        return
    if spec.code == "full":
        values = torch.frombuffer(bytearray(blob), dtype=torch.bfloat16)
        if not torch.isfinite(values).all():
            raise ValueError("vectors contain non-finite values")
        return
    rows = torch.frombuffer(bytearray(blob), dtype=torch.uint8).view(windows, size)
    scales = rows[:, :_SCALE_BYTES].contiguous().view(torch.bfloat16).float()
    if not (torch.isfinite(scales).all() and (scales > 0).all()):
        raise ValueError("compact vector scales must be finite and positive")
    if rows[:, _SCALE_BYTES:].contiguous().view(torch.int8).abs().amax() > spec.levels:
        raise ValueError(f"compact vector codes exceed {spec.bits} bits")


def embedding_basis(lm, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [d], P [rank, d]) in float64, from the model's input embeddings, deterministic up to
    floating-point summation order: float64 covariance, symmetric eigendecomposition, directions by
    decreasing variance, each scaled to its standard deviation and signed so its largest entry is > 0.
    Cached on the model object (the decomposition takes seconds)."""
    cache = lm.__dict__.setdefault("_pca_cache", {})
    if "full" not in cache:
        weight = lm.model.get_input_embeddings().weight
        vocab, d = weight.shape
        total = torch.zeros(d, dtype=torch.float64)
        gram = torch.zeros((d, d), dtype=torch.float64)
        with torch.no_grad():
            for i in range(0, vocab, 8192):
                rows = lm.embed(torch.arange(i, min(i + 8192, vocab), device=lm.device)).double().cpu()
                total += rows.sum(dim=0)
                gram += rows.T @ rows
        mean = total / vocab
        cov = gram / vocab - torch.outer(mean, mean)
        values, vectors = torch.linalg.eigh(cov)  # ascending
        order = torch.argsort(values, descending=True, stable=True)
        values, vectors = values[order].clamp_min(0), vectors[:, order].T.contiguous()  # rows = directions
        biggest = vectors.abs().argmax(dim=1)
        signs = torch.sign(vectors.gather(1, biggest.unsqueeze(1)))
        cache["full"] = (mean, vectors * signs * values.sqrt().unsqueeze(1))
    mean, basis = cache["full"]
    return mean, basis[:rank]


def basis_digest(lm, rank: int) -> str:
    """Short digest of the float32-rounded basis: lets a decoder say that its basis differs."""
    mean, basis = embedding_basis(lm, rank)
    h = hashlib.sha256(mean.float().numpy().tobytes())
    h.update(basis.float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class VectorCode:
    """A spec bound to a model: trainable parameters <-> stored codes <-> vectors."""

    def __init__(self, spec: VectorSpec, lm):
        self.hidden = lm.hidden_size
        self.spec, self.lm = spec.fitted(self.hidden), lm
        spec = self.spec
        self.size = spec.code_bytes(self.hidden)
        if spec.code == "compact":
            mean, basis = embedding_basis(lm, spec.rank)
            self.mean64, self.basis64 = mean, basis
            self.basis32 = basis.float().to(lm.device)

    @property
    def dim(self) -> int:
        """Trainable numbers per window."""
        return self.hidden if self.spec.code == "full" else self.spec.rank

    @property
    def default_lr(self) -> float:
        """Adam step that suits the parameterization: vector units for full, std units for compact."""
        return 0.01 if self.spec.code == "full" else 0.05

    def initial(self) -> torch.Tensor:
        """Start point of every window: the mean input embedding (full) or zero (compact: e = mean)."""
        if self.spec.code == "full":
            return self.lm.mean_embedding().clone()
        return torch.zeros(self.spec.rank, device=self.lm.device)

    def quantize(self, params: torch.Tensor) -> list[bytes]:
        """Stored code of each parameter row."""
        params = params.detach().float().cpu()
        if self.spec.code == "full":
            raw = params.to(torch.bfloat16).contiguous().view(torch.uint8).numpy().tobytes()
        else:
            scale, q = self._quantized(params)
            raw = torch.cat([scale.unsqueeze(1).contiguous().view(torch.uint8),
                             q.to(torch.int8).view(torch.uint8)], dim=1).numpy().tobytes()
        return [raw[i * self.size : (i + 1) * self.size] for i in range(params.shape[0])]

    def _quantized(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(bf16 scale [n], integer codes as float [n, rank]): absmax scale, rounded to bf16."""
        levels = self.spec.levels
        absmax = params.abs().amax(dim=1).clamp_min(1e-6)
        scale = (absmax / levels).to(torch.bfloat16)
        q = torch.round(params / scale.float().unsqueeze(1)).clamp(-levels, levels)
        return scale, q

    def rebuild(self, codes: bytes | list[bytes]) -> torch.Tensor | None:
        """Vectors [n, hidden] (float32) from stored codes: what the decoder feeds the model (None for
        the code ``none``: the decoder then feeds no vector)."""
        if self.spec.code == "none":
            return None
        blob = b"".join(codes) if isinstance(codes, list) else codes
        n = len(blob) // self.size
        if n * self.size != len(blob):
            raise ValueError("codes are not a whole number of windows")
        if n == 0:
            return torch.zeros((0, self.hidden), device=self.lm.device)
        raw = torch.frombuffer(bytearray(blob), dtype=torch.uint8).view(n, self.size)
        if self.spec.code == "full":
            return raw.contiguous().view(torch.bfloat16).float().to(self.lm.device)
        scale = raw[:, :_SCALE_BYTES].contiguous().view(torch.bfloat16).double()
        q = raw[:, _SCALE_BYTES:].contiguous().view(torch.int8).double()
        # float64, row by row: the result cannot depend on how many windows are rebuilt together
        vectors = torch.stack([self.mean64 + (q[i] * scale[i]) @ self.basis64 for i in range(n)])
        return vectors.float().to(self.lm.device)

    def train_view(self, params: torch.Tensor) -> torch.Tensor:
        """Vectors the optimizer forwards: their values are exactly ``rebuild(quantize(params))``,
        their gradient flows to ``params`` as if rounding were the identity (straight-through)."""
        exact = self.rebuild(self.quantize(params))
        smooth = params if self.spec.code == "full" else params @ self.basis32
        return exact + (smooth - smooth.detach())
