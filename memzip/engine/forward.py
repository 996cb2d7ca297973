"""The exact engine: a Llama model whose logits are the same bits on every machine (docs/ENGINE.md).

``Engine(weights, device, kernels)`` evaluates the model with one of two implementations of the same
arithmetic: the C engine (``kernels="c"``, memzip/engine/native.py, the default on CPU where it was
built) and the PyTorch reference (``kernels="torch"``, memzip/engine/reference.py, any device). Both
give the same bits, and so does any evaluation shape: ``forward(x, cache)`` appends positions to every
row of a KV cache, all at once or a few at a time, in any batch of rows, with any thread count.

From the final hidden state the engine gives logits (``logits``), the integer token distributions files
are coded with (``frequencies``, ``distributions`` for decoding, ``intervals`` for coding: the one place
token intervals come from), the greedy token and ranks (memory-vector checks).
"""

from __future__ import annotations

import torch

from . import native, tables
from .reference import CODE_BITS, ReferenceEngine, token_frequencies
from .weights import EngineWeights

__all__ = ["Engine", "Distributions", "FloatEnvironmentError", "kernels_available", "CODE_BITS", "token_frequencies"]


def kernels_available() -> bool:
    """Was the C engine built (memzip/engine/csrc/)?"""
    return native.available()


class FloatEnvironmentError(RuntimeError):
    """The process's floating-point settings would change the engine's arithmetic."""


def check_float_environment(kernels: str, device: torch.device) -> None:
    """The preconditions of docs/ENGINE.md, *Preconditions*: IEEE arithmetic rounding to nearest, without
    flushing subnormals to zero; for the PyTorch reference also float32 products at full precision. (The
    C engine sets the rounding and subnormal controls itself in every thread it computes on.)"""
    tiny = torch.tensor([2.0**-1060], dtype=torch.float64, device=device)
    if not bool((tiny * 2.0 > 0).item()) or not bool((tiny.float() * 0.0 == 0).item()):
        raise FloatEnvironmentError("subnormal numbers are flushed to zero in this process "
                                    "(torch.set_flush_denormal(True)?); the exact engine needs them")
    if kernels == "torch":
        if torch.get_float32_matmul_precision() != "highest":
            raise FloatEnvironmentError("float32 matrix products run at reduced precision "
                                        f"('{torch.get_float32_matmul_precision()}'); the exact engine needs "
                                        "torch.set_float32_matmul_precision('highest')")
        if device.type == "cuda" and (torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32):
            raise FloatEnvironmentError("TF32 products are enabled; the exact engine needs "
                                        "torch.backends.cuda.matmul.allow_tf32 = False")


class Engine:
    HEAD_ROWS = 256  # positions per head evaluation by callers that keep every logit (a [256, vocab] buffer)

    def __init__(self, weights: EngineWeights, device: str | torch.device = "cpu", kernels: str = "auto"):
        self.weights = weights
        self.config = weights.config
        self.device = torch.device(device)
        if kernels not in ("auto", "torch", "c"):
            raise ValueError("kernels must be auto, torch or c")
        native_here = native.available() and self.device.type == "cpu"
        if kernels == "c" and not native_here:
            raise ValueError("the C engine is not available here (CPU only, built at install)")
        self.kernels = "c" if native_here and kernels != "torch" else "torch"
        check_float_environment(self.kernels, self.device)
        self.impl = native.NativeEngine(weights) if self.kernels == "c" else ReferenceEngine(weights, self.device)
        self._embed = weights.embed.to(self.device)

    @property
    def fingerprint(self) -> str:
        return self.weights.fingerprint

    def new_cache(self, rows: int, capacity: int):
        if capacity > tables.MAX_POSITIONS:
            raise ValueError(f"the exact engine evaluates at most {tables.MAX_POSITIONS} positions per row")
        return self.impl.new_cache(rows, capacity)

    def fork_cache(self, cache, row: int, rows: int, capacity: int):
        """A new cache of ``rows`` rows (``capacity`` positions each), every row holding what row ``row``
        of ``cache`` holds: rows that share a context evaluate it once."""
        if capacity > tables.MAX_POSITIONS or capacity < cache.length or not 0 <= row < cache.rows:
            raise ValueError("fork_cache: a row of the cache and a capacity that holds it are required")
        return self.impl.fork_cache(cache, row, rows, capacity)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings (float64, exact) of token ids of any shape."""
        return self._embed[ids.to(self.device)].to(torch.float64)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, cache):
        """Run ``x`` [rows, positions, hidden] (float64 input embeddings) through every layer, appending
        its positions to ``cache``; returns the final hidden state of every position."""
        if x.shape[0] != cache.rows or cache.length + x.shape[1] > cache.capacity:
            raise ValueError("the cache does not fit these rows and positions")
        return self.impl.forward(x, cache)

    @torch.no_grad()
    def logits(self, hidden, rows: torch.Tensor | None = None) -> torch.Tensor:
        """float64 logits [k, vocab] of the positions ``rows`` (indices into rows * positions; all by default)."""
        return self.impl.logits(hidden, rows)

    @torch.no_grad()
    def frequencies(self, hidden, rows: torch.Tensor) -> torch.Tensor:
        """The integer token distributions at positions ``rows`` (int64 [k, vocab]): every token at least
        1, total at most 2**CODE_BITS (docs/FORMAT.md, *Token distribution*)."""
        if self.kernels == "c":
            freq, _total = self.impl.frequencies(hidden, rows)
            return torch.from_numpy(freq).to(torch.int64)
        return self.impl.frequencies(hidden, rows)

    @torch.no_grad()
    def intervals(self, hidden, rows: torch.Tensor, tokens: torch.Tensor) -> list[tuple[int, int, int]]:
        """The coding interval ``(lo, hi, total)`` of ``tokens[i]`` under the token distribution of
        position ``rows[i]``: what the encoder narrows by (``lo`` = the frequencies of lower ids)."""
        rows, tokens = rows.reshape(-1).long(), tokens.reshape(-1).long()
        if self.kernels == "c":
            lo, hi, total = self.impl.intervals(hidden, rows, tokens)
            return list(zip(lo.tolist(), hi.tolist(), total.tolist()))
        out: list[tuple[int, int, int]] = []
        for start in range(0, rows.shape[0], self.HEAD_ROWS):
            part = slice(start, start + self.HEAD_ROWS)
            out += self.distributions(hidden, rows[part]).intervals(tokens[part])
        return out

    @torch.no_grad()
    def distributions(self, hidden, rows: torch.Tensor) -> "Distributions":
        """The token distributions of positions ``rows``, for decoding (totals, and the token whose
        interval holds a target)."""
        if self.kernels == "c":
            return Distributions(*self.impl.frequencies(hidden, rows))
        freq = self.impl.frequencies(hidden, rows).cpu()
        return Distributions(freq.to(torch.int32).numpy(), freq.sum(dim=1).numpy())

    @torch.no_grad()
    def greedy(self, hidden, rows: torch.Tensor) -> torch.Tensor:
        """The top token of each position ``rows[i]`` (the lowest id among equal top logits)."""
        return self.logits(hidden, rows.reshape(-1).long()).argmax(dim=-1)

    @torch.no_grad()
    def ranks(self, hidden, rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Rank of ``tokens[i]`` in the logits of position ``rows[i]``: how many logits are greater, plus
        how many equal ones have a lower id (int64 [k])."""
        return rank_of(self.logits(hidden, rows.reshape(-1).long()), tokens.reshape(-1).long().to(self.device))


class Distributions:
    """Integer token distributions of k positions (Engine.distributions): ``total(k)``, and
    ``find(k, target)``, the token whose interval ``[lo, hi)`` holds ``target`` (0 <= target < total)."""

    def __init__(self, freq, total):
        self.freq = freq  # numpy int32 [k, vocab]
        self.totals = [int(t) for t in total]

    def total(self, k: int) -> int:
        return self.totals[k]

    def find(self, k: int, target: int) -> tuple[int, int, int]:
        return self.find_many([target], [k])[0]

    def find_many(self, targets, rows=None) -> list[tuple[int, int, int]]:
        """(token, lo, hi) for targets[i] in distribution rows[i] (default: distribution i)."""
        import numpy as np

        freq = self.freq if rows is None else np.ascontiguousarray(self.freq[list(rows)])
        if native.available():
            return native.find(freq, None, targets)
        out = []
        for f, target in zip(freq, targets):
            cum = np.cumsum(f.astype(np.int64))
            token = int(np.searchsorted(cum, target, side="right"))
            out.append((token, int(cum[token] - f[token]), int(cum[token])))
        return out

    def intervals(self, tokens: torch.Tensor) -> list[tuple[int, int, int]]:
        """``(lo, hi, total)`` of ``tokens[k]`` in distribution k, for every k."""
        out = []
        for k, t in enumerate(tokens.reshape(-1).tolist()):
            lo = int(self.freq[k, :t].astype("int64").sum())
            out.append((lo, lo + int(self.freq[k, t]), self.totals[k]))
        return out


def rank_of(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Per row, the rank of ``tokens`` in ``logits`` [n, vocab]: how many logits are greater, plus how
    many equal ones have a lower token id."""
    chosen = logits.gather(1, tokens.unsqueeze(1))
    ids = torch.arange(logits.shape[1], device=logits.device).unsqueeze(0)
    return (logits > chosen).sum(1) + ((logits == chosen) & (ids < tokens.unsqueeze(1))).sum(1)
