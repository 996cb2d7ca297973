"""The exact engine's forward pass: a Llama model evaluated with memzip.engine.arith operations only.

``Engine.forward(x, cache)`` appends positions to every row of a KV cache and returns the final hidden
state, quantized for the output head; ``Engine.logits`` applies the head. Evaluating a window all at
once (prefill) or one position at a time gives the same bits, and so does any batch of rows, because
every row is computed on its own (per-row quantization) and every reduction across positions is an
exact integer sum. The arithmetic, step by step, is specified in docs/ENGINE.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import arith, tables
from .arith import F64, _c
from .weights import EngineWeights


@dataclass
class KVCache:
    """Keys and values of every layer: int8 values (float32 storage) and float64 scales per position."""

    keys: torch.Tensor  # [layers, rows, kv_heads, capacity, head_dim]
    values: torch.Tensor
    key_scale: torch.Tensor  # [layers, rows, kv_heads, capacity]
    value_scale: torch.Tensor
    length: int = 0  # positions filled, the same for every row

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]


@dataclass
class Hidden:
    """The final hidden state, quantized for the head: int8 halves [2m, hidden] and the row factor [m, 1]."""

    halves: torch.Tensor
    factor: torch.Tensor
    shape: tuple  # leading dims of the rows (rows, positions)


class Engine:
    def __init__(self, weights: EngineWeights, device: str | torch.device = "cpu"):
        self.weights = weights
        self.config = weights.config
        self.device = torch.device(device)
        w = weights.tensors()
        for name, tensor in w.items():
            setattr(self, "_" + name, tensor.to(self.device))
        cos, sin = tables.rope_tables(self.config.rope_base, self.config.head_dim)
        self._cos, self._sin = cos.to(self.device), sin.to(self.device)
        self._exp = tables.exp_table().to(self.device)
        self._exp_steps = (self._exp[1:] - self._exp[:-1]).contiguous()
        self._sig = tables.sigmoid_table().to(self.device)
        self._sig_steps = (self._sig[1:] - self._sig[:-1]).contiguous()

    @property
    def fingerprint(self) -> str:
        return self.weights.fingerprint

    def new_cache(self, rows: int, capacity: int) -> KVCache:
        c = self.config
        if capacity > tables.MAX_POSITIONS:
            raise ValueError(f"the exact engine evaluates at most {tables.MAX_POSITIONS} positions per row")
        shape = (c.layers, rows, c.kv_heads, capacity, c.head_dim)
        return KVCache(
            torch.zeros(shape, dtype=torch.float32, device=self.device),
            torch.zeros(shape, dtype=torch.float32, device=self.device),
            torch.zeros(shape[:4], dtype=F64, device=self.device),
            torch.zeros(shape[:4], dtype=F64, device=self.device),
        )

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings (float64, exact) of token ids of any shape."""
        return self._embed[ids.to(self.device)].to(F64)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, cache: KVCache) -> Hidden:
        """Run ``x`` [rows, positions, hidden] (float64 input embeddings) through every layer, appending
        its positions to ``cache``; returns the final hidden state of every position."""
        c = self.config
        rows, n, hidden = x.shape
        start = cache.length
        if rows != cache.keys.shape[1] or start + n > cache.capacity:
            raise ValueError("the cache does not fit these rows and positions")
        x = x.to(self.device, F64).reshape(rows * n, hidden)
        cos, sin = self._cos[start : start + n], self._sin[start : start + n]
        q_rows, kv_rows = c.heads * c.head_dim, c.kv_heads * c.head_dim
        for layer in range(c.layers):
            halves, factor = arith.normalize(x, self._attn_gain[layer], c.norm_eps)
            qkv = arith.linear(halves, self._qkv[layer], self._qkv_scale[layer], factor)
            q = _rope(qkv[:, :q_rows].reshape(rows, n, c.heads, c.head_dim), cos, sin)
            k = _rope(qkv[:, q_rows : q_rows + kv_rows].reshape(rows, n, c.kv_heads, c.head_dim), cos, sin)
            v = qkv[:, q_rows + kv_rows :].reshape(rows, n, c.kv_heads, c.head_dim)
            for store, scales, t in ((cache.keys, cache.key_scale, k), (cache.values, cache.value_scale, v)):
                values, scale = arith.quantize_heads(t)
                store[layer, :, :, start : start + n] = values.transpose(1, 2)
                scales[layer, :, :, start : start + n] = scale.transpose(1, 2)
            o = self._attention(q, cache, layer, start, n)
            halves, _, unit = arith.quantize_activations(o)
            x = torch.add(x, arith.linear(halves, self._out[layer], self._out_scale[layer], unit))
            halves, factor = arith.normalize(x, self._ffn_gain[layer], c.norm_eps)
            gu = arith.linear(halves, self._gate_up[layer], self._gate_up_scale[layer], factor)
            gate, up = gu[:, : c.ffn], gu[:, c.ffn :]
            mid = torch.mul(torch.mul(gate, self._sigmoid(gate)), up)
            halves, _, unit = arith.quantize_activations(mid)
            x = torch.add(x, arith.linear(halves, self._down[layer], self._down_scale[layer], unit))
        cache.length = start + n
        halves, factor = arith.normalize(x, self._final_gain, c.norm_eps)
        return Hidden(halves, factor, (rows, n))

    @torch.no_grad()
    def logits(self, hidden: Hidden, select: slice | None = None) -> torch.Tensor:
        """float64 logits [rows * positions, vocab] of the final hidden state (or of rows ``select`` of it)."""
        m = hidden.factor.shape[0]
        halves, factor = hidden.halves, hidden.factor
        if select is not None:
            idx = torch.arange(m, device=halves.device)[select]
            halves, factor = torch.cat([halves[:m][idx], halves[m:][idx]]), factor[idx]
        return arith.linear(halves, self._head, self._head_scale, factor)

    def _sigmoid(self, x: torch.Tensor) -> torch.Tensor:
        r = tables.SIGMOID_RANGE
        position = torch.mul(torch.add(x.clamp(-r, r), _c(r, x)), _c(tables.SIGMOID_STEP, x))
        return arith.interpolate(self._sig, self._sig_steps, position)

    def _attention(self, q: torch.Tensor, cache: KVCache, layer: int, start: int, n: int) -> torch.Tensor:
        """Causal attention of ``n`` new positions (q [rows, n, heads, d]) over the cache's first
        ``start + n`` positions; float64 [rows * n, heads * d]."""
        c = self.config
        rows, group, keys = q.shape[0], c.heads // c.kv_heads, start + n
        qv, qs = arith.quantize_heads(q)  # [rows, n, heads, d], [rows, n, heads]
        # one batch entry per (row, kv head), holding its group of query heads x positions
        qv = qv.reshape(rows, n, c.kv_heads, group, c.head_dim).permute(0, 2, 3, 1, 4)
        qv = qv.reshape(rows * c.kv_heads, group * n, c.head_dim)
        qs = qs.reshape(rows, n, c.kv_heads, group).permute(0, 2, 3, 1).reshape(rows * c.kv_heads, group * n, 1)
        kv = cache.keys[layer, :, :, :keys].reshape(rows * c.kv_heads, keys, c.head_dim)
        vv = cache.values[layer, :, :, :keys].reshape(rows * c.kv_heads, keys, c.head_dim)
        ks = cache.key_scale[layer, :, :, :keys].reshape(rows * c.kv_heads, 1, keys)
        vs = cache.value_scale[layer, :, :, :keys].reshape(rows * c.kv_heads, 1, keys)
        dot = arith.exact_bmm(qv, kv.transpose(1, 2))  # |sum| <= d * 127**2 < 2**24
        scores = torch.mul(torch.mul(dot, torch.mul(qs, _c(tables.inverse_sqrt(c.head_dim), qs))), ks)
        # query position start + t sees keys 0 .. start + t
        visible = torch.arange(keys, device=q.device)[None, :] <= (start + torch.arange(n, device=q.device))[:, None]
        visible = visible.repeat(group, 1)[None]  # [1, group * n, keys]
        scores = torch.where(visible, scores, torch.full_like(scores, float("-inf")))
        top = scores.amax(dim=-1, keepdim=True)
        gap = torch.sub(top, scores).clamp_(max=tables.EXP_RANGE)
        e = torch.round(arith.interpolate(self._exp, self._exp_steps, torch.mul(gap, _c(tables.EXP_STEP, gap))))
        total = e.sum(dim=-1, keepdim=True)  # integers: exact
        u = torch.mul(e, vs)
        scale = torch.div(_c(arith.WEIGHT_LEVELS, u), arith.safe(u.amax(dim=-1, keepdim=True)))
        w = torch.round(torch.mul(u, scale))
        o = arith.weighted_values(w, vv)
        o = torch.div(o, torch.mul(scale, total))
        o = o.reshape(rows, c.kv_heads, group, n, c.head_dim).permute(0, 3, 1, 2, 4)
        return o.reshape(rows * n, c.heads * c.head_dim)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs (2i, 2i + 1) of x [rows, n, heads, d] by the position's angles [n, d/2]."""
    a, b = x[..., 0::2], x[..., 1::2]
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    first = torch.sub(torch.mul(a, cos), torch.mul(b, sin))
    second = torch.add(torch.mul(a, sin), torch.mul(b, cos))
    return torch.stack([first, second], dim=-1).flatten(-2)
