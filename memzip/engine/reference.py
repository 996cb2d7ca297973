"""The exact engine in PyTorch operations: the reference of docs/ENGINE.md, one operation per step.

Used where the C engine (memzip/engine/csrc/) was not built, on devices other than the CPU, and by the
tests, which check that both give the same bits. Every step is an exact integer sum (integer-valued
float32/float64 products whose partial sums stay exact in any order), or one IEEE operation per
element (memzip/engine/arith.py), or a table read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import arith, tables
from .arith import F64, _c
from .weights import EngineWeights

F32 = torch.float32


@dataclass
class ReferenceCache:
    """Keys and values of every layer: int8 values, float32 scales per position."""

    keys: torch.Tensor  # int8 [layers, rows, kv_heads, capacity, head_dim]
    values: torch.Tensor  # int8 [layers, rows, kv_heads, capacity, head_dim]
    key_scale: torch.Tensor  # float32 [layers, rows, kv_heads, capacity]
    value_scale: torch.Tensor
    length: int = 0  # positions filled, the same for every row

    @property
    def capacity(self) -> int:
        return self.values.shape[3]

    @property
    def rows(self) -> int:
        return self.values.shape[1]


@dataclass
class ReferenceHidden:
    """The final hidden state quantized for the head: int8 halves [2m, hidden] (hi over lo, xq = 256 hi +
    lo) and the row factor [m, 1]."""

    halves: torch.Tensor
    factor: torch.Tensor
    shape: tuple  # (rows, positions)


class ReferenceEngine:
    def __init__(self, weights: EngineWeights, device: torch.device):
        self.config = weights.config
        self.device = device
        for name, tensor in weights.tensors().items():
            setattr(self, "_" + name, tensor.to(device))
        cos, sin = tables.rope_tables(self.config.rope_base, self.config.head_dim)
        self._cos, self._sin = cos.to(device), sin.to(device)
        self._att = tables.attention_table().to(device, torch.int64)
        self._code = tables.code_table().to(device)
        self._code_steps = (self._code[1:] - self._code[:-1]).contiguous()
        self._sig = tables.sigmoid_table().to(device)
        self._sig_steps = (self._sig[1:] - self._sig[:-1]).contiguous()

    def new_cache(self, rows: int, capacity: int) -> ReferenceCache:
        c = self.config
        shape = (c.layers, rows, c.kv_heads, capacity, c.head_dim)
        return ReferenceCache(
            torch.zeros(shape, dtype=torch.int8, device=self.device),
            torch.zeros(shape, dtype=torch.int8, device=self.device),
            torch.zeros(shape[:4], dtype=F32, device=self.device),
            torch.zeros(shape[:4], dtype=F32, device=self.device),
        )

    def fork_cache(self, cache: ReferenceCache, row: int, rows: int, capacity: int) -> ReferenceCache:
        """A cache of ``rows`` rows, each holding what row ``row`` of ``cache`` holds."""
        out = self.new_cache(rows, capacity)
        n = cache.length
        for mine, theirs in ((out.keys, cache.keys), (out.values, cache.values), (out.key_scale, cache.key_scale),
                             (out.value_scale, cache.value_scale)):
            mine[:, :, :, :n] = theirs[:, row : row + 1, :, :n]
        out.length = n
        return out

    @torch.no_grad()
    def forward(self, x: torch.Tensor, cache: ReferenceCache) -> ReferenceHidden:
        c = self.config
        rows, n, hidden = x.shape
        start = cache.length
        x = x.to(self.device, F64).reshape(rows * n, hidden).contiguous()
        cos, sin = self._cos[start : start + n], self._sin[start : start + n]
        q_rows, kv_rows = c.heads * c.head_dim, c.kv_heads * c.head_dim
        for layer in range(c.layers):
            halves, factor = arith.normalize(x, self._attn_gain[layer], c.norm_eps)
            qkv = arith.linear(halves, self._qkv[layer], self._qkv_scale[layer], factor)
            q = rope(qkv[:, :q_rows].reshape(rows, n, c.heads, c.head_dim), cos, sin)
            k = rope(qkv[:, q_rows : q_rows + kv_rows].reshape(rows, n, c.kv_heads, c.head_dim), cos, sin)
            v = qkv[:, q_rows + kv_rows :].reshape(rows, n, c.kv_heads, c.head_dim)
            for store, scales, t in ((cache.keys, cache.key_scale, k), (cache.values, cache.value_scale, v)):
                values, scale = arith.quantize_heads(t)  # [rows, n, kv_heads, d], [rows, n, kv_heads]
                store[layer, :, :, start : start + n] = values.transpose(1, 2).to(torch.int8)
                scales[layer, :, :, start : start + n] = scale.transpose(1, 2).to(F32)
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
        return ReferenceHidden(halves, factor, (rows, n))

    def _sigmoid(self, x: torch.Tensor) -> torch.Tensor:
        r = tables.SIGMOID_RANGE
        position = torch.mul(torch.add(x.clamp(-r, r), _c(r, x)), _c(tables.SIGMOID_STEP, x))
        return arith.interpolate(self._sig, self._sig_steps, position)

    def _attention(self, q: torch.Tensor, cache: ReferenceCache, layer: int, start: int, n: int) -> torch.Tensor:
        """Causal attention of ``n`` new positions (q [rows, n, heads, d]) over the cache's first
        ``start + n`` positions; float64 [rows * n, heads * d] (docs/ENGINE.md, *Attention*)."""
        c = self.config
        rows, group, keys = q.shape[0], c.heads // c.kv_heads, start + n
        qv, qs = arith.quantize_heads(q)  # [rows, n, heads, d] (float32 integers), [rows, n, heads] float64
        # one batch entry per (row, kv head), holding its group of query heads x positions
        qv = qv.reshape(rows, n, c.kv_heads, group, c.head_dim).permute(0, 2, 3, 1, 4)
        qv = qv.reshape(rows * c.kv_heads, group * n, c.head_dim)
        gap_factor = torch.mul(torch.mul(qs, _c(tables.inverse_sqrt(c.head_dim), qs)), _c(tables.ATT_STEP, qs)).to(F32)
        gap_factor = gap_factor.reshape(rows, n, c.kv_heads, group).permute(0, 2, 3, 1).reshape(-1, group * n, 1)
        kv = cache.keys[layer, :, :, :keys].reshape(rows * c.kv_heads, keys, c.head_dim).to(F32)
        vv = cache.values[layer, :, :, :keys].reshape(rows * c.kv_heads, keys, c.head_dim).to(F64)
        ks = cache.key_scale[layer, :, :, :keys].reshape(rows * c.kv_heads, 1, keys)
        vs = cache.value_scale[layer, :, :, :keys].reshape(rows * c.kv_heads, 1, keys)
        dot = torch.bmm(qv, kv.transpose(1, 2))  # integers, |sum| <= d * 127**2 < 2**24: exact in float32
        scores = torch.mul(dot, ks)
        # query position start + t sees keys 0 .. start + t
        visible = torch.arange(keys, device=q.device)[None, :] <= (start + torch.arange(n, device=q.device))[:, None]
        visible = visible.repeat(group, 1)[None]  # [1, group * n, keys]
        top = scores.masked_fill(~visible, float("-inf")).amax(dim=-1, keepdim=True)
        # (keys not yet visible may score above the top: their gaps are clamped at 0, then their weights zeroed)
        gap = torch.clamp(torch.mul(torch.sub(top, scores), gap_factor), 0.0, float(tables.ATT_POINTS - 1))
        e = torch.where(visible, self._att[gap.to(torch.int64)], torch.zeros((), dtype=torch.int64, device=q.device))
        total = e.sum(dim=-1, keepdim=True)  # exact integers
        u = torch.mul(e.to(F32), vs)
        top_u = u.amax(dim=-1, keepdim=True)
        scale = torch.div(torch.full_like(top_u, float(WEIGHT_LEVELS)), torch.where(top_u > 0, top_u, torch.ones_like(top_u)))
        w = torch.clamp_max(torch.round(torch.mul(u, scale)), float(WEIGHT_LEVELS))
        o = torch.bmm(w.to(F64), vv)  # integers below 2**53: exact in float64
        o = torch.div(o, torch.mul(scale.to(F64), total.to(F64)))
        o = o.reshape(rows, c.kv_heads, group, n, c.head_dim).permute(0, 3, 1, 2, 4)
        return o.reshape(rows * n, c.heads * c.head_dim)

    HEAD_ROWS = 256  # positions per head product (an int32 [2 x 256, vocab] buffer)

    @torch.no_grad()
    def logits(self, hidden: ReferenceHidden, rows: torch.Tensor | None = None) -> torch.Tensor:
        halves, factor = self._head_input(hidden, rows)
        return arith.linear(halves, self._head, self._head_scale, factor)

    @torch.no_grad()
    def frequencies(self, hidden: ReferenceHidden, rows: torch.Tensor) -> torch.Tensor:
        rows = rows.reshape(-1).long()
        out = torch.empty((rows.shape[0], self.config.vocab), dtype=torch.int64, device=self.device)
        spare = (1 << CODE_BITS) - self.config.vocab
        for start in range(0, rows.shape[0], self.HEAD_ROWS):
            part = slice(start, start + self.HEAD_ROWS)
            out[part] = token_frequencies(self.logits(hidden, rows[part]), self._code, self._code_steps, spare)
        return out

    def _head_input(self, hidden: ReferenceHidden, rows: torch.Tensor | None):
        m = hidden.factor.shape[0]
        if rows is None:
            return hidden.halves, hidden.factor
        rows = rows.to(hidden.halves.device)
        return torch.cat([hidden.halves[:m][rows], hidden.halves[m:][rows]]), hidden.factor[rows].contiguous()


WEIGHT_LEVELS = 32767  # attention value weights: integers 0..32767
CODE_BITS = 24  # token frequencies sum to at most 2**24


def token_frequencies(logits: torch.Tensor, table: torch.Tensor, steps: torch.Tensor, spare: int) -> torch.Tensor:
    """The integer token distribution of float64 logits [k, vocab] (docs/FORMAT.md, *Token
    distribution*): e_j = rnd(interp(CODE, min((top - l_j) * 256, 8192))), F_j = 1 + e_j * spare // sum e."""
    top = logits.amax(dim=-1, keepdim=True)
    position = torch.mul(torch.sub(top, logits), _c(tables.EXP_STEP, logits)).clamp_(max=tables.EXP_RANGE * tables.EXP_STEP)
    e = torch.round(arith.interpolate(table, steps, position)).to(torch.int64)
    total = e.sum(dim=-1, keepdim=True)  # exact: below 2**32 * vocab
    return torch.div(e * spare, total, rounding_mode="floor") + 1


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs (2i, 2i + 1) of x [rows, n, heads, d] by the position's angles [n, d/2]."""
    a, b = x[..., 0::2], x[..., 1::2]
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    first = torch.sub(torch.mul(a, cos), torch.mul(b, sin))
    second = torch.add(torch.mul(a, sin), torch.mul(b, cos))
    return torch.stack([first, second], dim=-1).flatten(-2)
