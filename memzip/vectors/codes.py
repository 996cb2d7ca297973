"""Vector codes: how a window's memory vector is parameterized, quantized and stored.

Three codes, recorded in the container header (``vectors``) and specified in docs/FORMAT.md:

* ``none`` -- no memory vectors: every window is decoded from the prefix token alone, its tokens
  arithmetic-coded with the model's probabilities (see memzip/format/tokencoder.py). The default: on this model no
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

import torch

from ..format.vectors import SCALE_BYTES, VectorSpec

BASIS_BITS = 24  # the mean and basis are stored on a grid of 2**-24: rebuilding is then exact integer work
_BASES: dict = {}  # model fingerprint -> (mean, basis) as integers on the grid, float64 [d] and [hidden, d]


def embedding_basis(lm, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [d], P [rank, d]) as float64 integers on the grid 2**-BASIS_BITS, from the model's input
    embeddings (the engine's exact table): float64 covariance, symmetric eigendecomposition, directions by
    decreasing variance, each scaled to its standard deviation and signed so that its largest entry is
    positive, then rounded to the grid. The float64 steps may differ in their last bits between machines
    (summation order, LAPACK); rounding to the grid removes that except within ~1e-9 of a grid midpoint,
    and ``basis_digest`` (recorded in the file) tells a decoder whether its basis is the same.
    Computed once per model (seconds) and kept by fingerprint."""
    if lm.fingerprint not in _BASES:
        table = lm.embedding_table()
        vocab, d = table.shape
        total = torch.zeros(d, dtype=torch.float64)
        gram = torch.zeros((d, d), dtype=torch.float64)
        for i in range(0, vocab, 8192):
            rows = table[i : i + 8192].double().cpu()
            total += rows.sum(dim=0)
            gram += rows.T @ rows
        mean = total / vocab
        cov = gram / vocab - torch.outer(mean, mean)
        values, vectors = torch.linalg.eigh(cov)  # ascending
        order = torch.argsort(values, descending=True, stable=True)
        values, vectors = values[order].clamp_min(0), vectors[:, order].T.contiguous()  # rows = directions
        biggest = vectors.abs().argmax(dim=1)
        signs = torch.sign(vectors.gather(1, biggest.unsqueeze(1)))
        grid = float(1 << BASIS_BITS)
        _BASES[lm.fingerprint] = (torch.round(mean * grid), torch.round(vectors * signs * values.sqrt().unsqueeze(1) * grid))
    mean, basis = _BASES[lm.fingerprint]
    return mean, basis[:rank]


def basis_digest(lm, rank: int) -> str:
    """Short digest of the grid integers of the mean and the first ``rank`` directions."""
    mean, basis = embedding_basis(lm, rank)
    h = hashlib.sha256(mean.to(torch.int64).numpy().tobytes())
    h.update(basis.to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class VectorCode:
    """A spec bound to a model: trainable parameters <-> stored codes <-> vectors."""

    def __init__(self, spec: VectorSpec, lm):
        self.hidden = lm.hidden_size
        self.spec, self.lm = spec.fitted(self.hidden), lm
        spec = self.spec
        self.size = spec.code_bytes(self.hidden)
        if spec.code == "compact":
            self.mean_grid, self.basis_grid = embedding_basis(lm, spec.rank)
            self.basis32 = (self.basis_grid / float(1 << BASIS_BITS)).float().to(lm.device)

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
            return self.lm.mean_embedding()
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
        scale = raw[:, :SCALE_BYTES].contiguous().view(torch.bfloat16).double()  # [n, 1]
        q = raw[:, SCALE_BYTES:].contiguous().view(torch.int8).double()
        # exact: sum_k q_k P_k is a sum of integers below 2**53 in any order; then one rounding per
        # operation, row by row: scale, move to the grid's unit (a power of two), add the mean
        total = q @ self.basis_grid
        unit = torch.tensor(1.0 / (1 << BASIS_BITS), dtype=torch.float64)
        vectors = torch.add(torch.mul(self.mean_grid, unit), torch.mul(torch.mul(total, scale), unit))
        return vectors.float().to(self.lm.device)

    def train_view(self, params: torch.Tensor) -> torch.Tensor:
        """Vectors the optimizer forwards: their values are exactly ``rebuild(quantize(params))``,
        their gradient flows to ``params`` as if rounding were the identity (straight-through)."""
        exact = self.rebuild(self.quantize(params))
        smooth = params if self.spec.code == "full" else params @ self.basis32
        return exact + (smooth - smooth.detach())


def header_field(spec: VectorSpec, lm) -> dict:
    """The container's ``vectors`` field for ``spec`` on model ``lm`` (compact codes name their basis)."""
    return spec.header(basis_digest(lm, spec.rank) if spec.code == "compact" else None)


def stored_vectors(c, lm) -> torch.Tensor | None:
    """The memory vectors [windows, hidden] a container's codes (``c``, a memzip.format.container.Container)
    stand for under ``lm`` (None for the code ``none``)."""
    return VectorCode(c.vector_spec, lm).rebuild(c.codes)
