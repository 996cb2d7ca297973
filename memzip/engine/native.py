"""The exact engine's C implementation (memzip/engine/csrc/), behind a small typed interface.

``NativeEngine(weights)`` packs the int8 weights into the layout the C products read (blocks of 16
outputs x 4 inputs), hands them and the tables to ``_native.Model``, and exposes the same operations as
the PyTorch reference (memzip/engine/reference.py), with the same bits. Arrays cross into C as numpy
arrays whose element kind and length the C side checks.

Threads follow ``torch.get_num_threads()``; the instruction-set level is the best this CPU allows,
capped by ``MEMZIP_ISA`` (baseline, avx2, avx512, amx) or ``set_isa``: every level gives the same bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import tables
from .weights import EngineWeights

try:
    from . import _native
except ImportError:  # no C compiler at install time: the PyTorch reference runs instead
    _native = None

MAX_POSITIONS_PER_CALL = 1024  # positions of all rows per C forward call (bounds its buffers)


def available() -> bool:
    return _native is not None


def isa() -> str:
    """The kernel level in use: baseline, avx2, avx512 or amx."""
    return _native.isa()


def available_isa() -> str:
    return _native.available_isa()


def set_isa(name: str) -> str:
    """Use kernels up to ``name`` (ValueError above what this CPU allows); returns the level in use."""
    return _native.set_isa(name)


def read_bandwidth(nbytes: int, rounds: int = 5) -> float:
    """Best bytes per second over ``rounds`` reads of an ``nbytes`` buffer by the engine's threads."""
    _sync_threads()
    return _native.read_bandwidth(int(nbytes), int(rounds))


def _sync_threads() -> None:
    want = torch.get_num_threads()
    if _native.threads() != want:
        _native.set_threads(want)


def pack(w: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(packed codes, row sums) of int8 matrices [..., n, k]: zero-padded to n, k multiples of 16, 64,
    in blocks [n / 16][k / 4][16][4]; sums int32 [..., n padded]."""
    *lead, n, k = w.shape
    np_, kp = -(-n // 16) * 16, -(-k // 64) * 64
    a = np.zeros((*lead, np_, kp), dtype=np.int8)
    a[..., :n, :k] = w.numpy()
    sums = a.astype(np.int32).sum(axis=-1, dtype=np.int32)
    blocks = a.reshape(*lead, np_ // 16, 16, kp // 4, 4)
    order = tuple(range(len(lead))) + tuple(len(lead) + i for i in (0, 2, 1, 3))
    return np.ascontiguousarray(blocks.transpose(order)), sums


def _padded(scale: torch.Tensor) -> np.ndarray:
    *lead, n = scale.shape
    out = np.zeros((*lead, -(-n // 16) * 16), dtype=np.float64)
    out[..., :n] = scale.numpy()
    return out


@dataclass
class NativeCache:
    handle: object  # _native.Cache

    @property
    def length(self) -> int:
        return self.handle.length

    @property
    def rows(self) -> int:
        return self.handle.rows

    @property
    def capacity(self) -> int:
        return self.handle.capacity


@dataclass
class NativeHidden:
    """The final norm's product activations: bytes [2m, hidden_p] (high rows over low rows) and the row
    factors [m]."""

    final: np.ndarray
    factor: np.ndarray
    shape: tuple  # (rows, positions)

    @property
    def count(self) -> int:
        return self.factor.shape[0]


class NativeEngine:
    def __init__(self, weights: EngineWeights):
        c = self.config = weights.config
        arrays: dict[str, np.ndarray] = {}
        for name in ("qkv", "out", "gate_up", "down"):
            arrays[name + "_packed"], arrays[name + "_sums"] = pack(getattr(weights, name))
            arrays[name + "_scale"] = _padded(getattr(weights, name + "_scale"))
        arrays["head_packed"], arrays["head_sums"] = pack(weights.head)
        arrays["head_scale"] = _padded(weights.head_scale)
        arrays["attn_gain"] = weights.attn_gain.numpy()
        arrays["ffn_gain"] = weights.ffn_gain.numpy()
        arrays["final_gain"] = weights.final_gain.numpy()
        cos, sin = tables.rope_tables(c.rope_base, c.head_dim)
        arrays["cos"], arrays["sin"] = cos.numpy(), sin.numpy()
        for name, table in (("sig", tables.sigmoid_table()), ("code", tables.code_table())):
            arrays[name] = table.numpy()
            arrays[name + "_steps"] = (table[1:] - table[:-1]).contiguous().numpy()
        arrays["att_table"] = tables.attention_table().numpy()
        config = (c.layers, c.hidden, c.heads, c.kv_heads, c.head_dim, c.ffn, c.vocab, float(c.norm_eps),
                  tables.inverse_sqrt(c.head_dim), tables.MAX_POSITIONS)
        self.model = _native.Model(config, arrays)
        self.hidden_p = self.model.config["hidden_p"]

    def new_cache(self, rows: int, capacity: int) -> NativeCache:
        return NativeCache(self.model.cache(rows, capacity))

    def fork_cache(self, cache: NativeCache, row: int, rows: int, capacity: int) -> NativeCache:
        """A cache of ``rows`` rows, each holding what row ``row`` of ``cache`` holds."""
        out = self.new_cache(rows, capacity)
        for r in range(rows):
            self.model.copy_row(cache.handle, row, out.handle, r)
        return out

    def forward(self, x: torch.Tensor, cache: NativeCache) -> NativeHidden:
        """x: float64 [rows, n, hidden] input embeddings; appends n positions to every row of the cache."""
        rows, n, hidden = x.shape
        if rows != cache.rows or cache.length + n > cache.capacity:
            raise ValueError("the cache does not fit these rows and positions")
        _sync_threads()
        x = x.to("cpu", torch.float64)
        m = rows * n
        final = np.empty((2 * m, self.hidden_p), dtype=np.uint8)
        factor = np.empty(m, dtype=np.float64)
        step = max(1, MAX_POSITIONS_PER_CALL // rows)
        for t0 in range(0, n, step):  # chunks of positions: the same bits as all at once
            t1 = min(n, t0 + step)
            part = x[:, t0:t1].contiguous().numpy().copy().reshape(rows * (t1 - t0), hidden)
            if t1 - t0 == n:
                self.model.forward(part, cache.handle, rows, n, final, factor)
                break
            mc = rows * (t1 - t0)
            f = np.empty((2 * mc, self.hidden_p), dtype=np.uint8)
            r = np.empty(mc, dtype=np.float64)
            self.model.forward(part, cache.handle, rows, t1 - t0, f, r)
            index = (np.arange(rows)[:, None] * n + np.arange(t0, t1)[None, :]).reshape(-1)
            final[index], final[m + index], factor[index] = f[:mc], f[mc:], r
        return NativeHidden(final, factor, (rows, n))

    def logits(self, hidden: NativeHidden, rows: torch.Tensor | None = None) -> torch.Tensor:
        positions = self._positions(hidden, rows)
        out = np.empty((positions.shape[0], self.config.vocab), dtype=np.float64)
        _sync_threads()
        self.model.logits(hidden.final, hidden.factor, hidden.count, positions, out)
        return torch.from_numpy(out)

    def frequencies(self, hidden: NativeHidden, rows: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(int32 [k, vocab] frequencies, int64 [k] totals) of positions ``rows``."""
        positions = self._positions(hidden, rows)
        freq = np.empty((positions.shape[0], self.config.vocab), dtype=np.int32)
        total = np.empty(positions.shape[0], dtype=np.int64)
        _sync_threads()
        self.model.frequencies(hidden.final, hidden.factor, hidden.count, positions, freq, total)
        return freq, total

    def intervals(self, hidden: NativeHidden, rows: torch.Tensor, tokens: torch.Tensor):
        """(lo, hi, total) int64 arrays: the coding interval of tokens[i] at position rows[i]."""
        positions = self._positions(hidden, rows)
        tokens = np.ascontiguousarray(tokens.reshape(-1).to(torch.int64).numpy())
        lo, hi, total = (np.empty(positions.shape[0], dtype=np.int64) for _ in range(3))
        _sync_threads()
        self.model.intervals(hidden.final, hidden.factor, hidden.count, positions, tokens, lo, hi, total)
        return lo, hi, total

    @staticmethod
    def _positions(hidden: NativeHidden, rows: torch.Tensor | None) -> np.ndarray:
        if rows is None:
            return np.arange(hidden.count, dtype=np.int64)
        return np.ascontiguousarray(rows.reshape(-1).to("cpu", torch.int64).numpy())


def find(freq: np.ndarray, total: np.ndarray, targets) -> list[tuple[int, int, int]]:
    """(token, lo, hi) for each row of ``freq`` [k, vocab]: the token whose interval holds targets[i]."""
    targets = np.asarray(targets, dtype=np.int64)
    tokens, lo, hi = (np.empty(targets.shape[0], dtype=np.int64) for _ in range(3))
    _native.find(freq, freq.shape[1], targets, tokens, lo, hi)
    return list(zip(tokens.tolist(), lo.tolist(), hi.tolist()))
