"""The exact engine's forward pass: a Llama model evaluated with memzip.engine.arith operations only.

``Engine.forward(x, cache)`` appends positions to every row of a KV cache and returns the final hidden
state, quantized for the output head; ``Engine.logits`` applies the head. Evaluating a window all at
once (prefill) or one position at a time gives the same bits, and so does any batch of rows, because
every row is computed on its own (per-row quantization) and every reduction across positions is an
exact integer sum. The arithmetic, step by step, is specified in docs/ENGINE.md.

Two implementations of the elementwise work give the same bits: PyTorch operations (the reference,
``kernels="torch"``) and the fused C kernels of ``memzip.engine._kernels`` (``kernels="c"``, the default
on CPU where the extension was built), which perform the same IEEE operations in the same order. The
integer matrix products are torch's either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import arith, tables
from .arith import F64, _c
from .weights import EngineWeights


try:
    from . import _kernels
except ImportError:  # no C compiler at install time: the PyTorch reference runs instead
    _kernels = None


def kernels_available() -> bool:
    return _kernels is not None


_POOL: list = []


def _split(rows: int, run, min_rows: int = 8) -> None:
    """``run(a, b)`` over [0, rows) in up to torch.get_num_threads() disjoint ranges of at least
    ``min_rows`` rows, on a thread pool (the C kernels release the GIL)."""
    parts = max(1, min(torch.get_num_threads(), rows // max(min_rows, 1)))
    if parts == 1:
        run(0, rows)
        return
    if not _POOL or _POOL[0]._max_workers < parts - 1:
        from concurrent.futures import ThreadPoolExecutor

        _POOL[:] = [ThreadPoolExecutor(max_workers=parts - 1, thread_name_prefix="memzip")]
    bounds = [rows * i // parts for i in range(parts + 1)]
    futures = [_POOL[0].submit(run, a, b) for a, b in zip(bounds[1:-1], bounds[2:])]
    run(bounds[0], bounds[1])
    for f in futures:
        f.result()


@dataclass
class KVCache:
    """Keys and values of every layer: int8 values and float64 scales per position."""

    keys: torch.Tensor  # [layers, rows, kv_heads, head_dim, capacity] (transposed: dot products run along keys)
    values: torch.Tensor  # [layers, rows, kv_heads, capacity, head_dim]
    key_scale: torch.Tensor  # [layers, rows, kv_heads, capacity]
    value_scale: torch.Tensor
    length: int = 0  # positions filled, the same for every row

    @property
    def capacity(self) -> int:
        return self.values.shape[3]


@dataclass
class Hidden:
    """The final hidden state, quantized for the head: int8 halves [2m, hidden] and the row factor [m, 1]."""

    halves: torch.Tensor
    factor: torch.Tensor
    shape: tuple  # leading dims of the rows (rows, positions)


class Engine:
    def __init__(self, weights: EngineWeights, device: str | torch.device = "cpu", kernels: str = "auto"):
        self.weights = weights
        self.config = weights.config
        self.device = torch.device(device)
        if kernels not in ("auto", "torch", "c"):
            raise ValueError("kernels must be auto, torch or c")
        if kernels == "c" and (_kernels is None or self.device.type != "cpu"):
            raise ValueError("the C kernels are not available here (CPU only, built at install)")
        self.kernels = "c" if kernels == "c" or (kernels == "auto" and _kernels and self.device.type == "cpu") else "torch"
        w = weights.tensors()
        for name, tensor in w.items():
            setattr(self, "_" + name, tensor.to(self.device))
        cos, sin = tables.rope_tables(self.config.rope_base, self.config.head_dim)
        self._cos, self._sin = cos.to(self.device), sin.to(self.device)
        self._exp = tables.exp_table().to(self.device)
        self._exp_steps = (self._exp[1:] - self._exp[:-1]).contiguous()
        self._code = tables.code_table().to(self.device)
        self._code_steps = (self._code[1:] - self._code[:-1]).contiguous()
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
            torch.zeros((c.layers, rows, c.kv_heads, c.head_dim, capacity), dtype=torch.int8, device=self.device),
            torch.zeros(shape, dtype=torch.int8, device=self.device),
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
        x = x.to(self.device, F64).reshape(rows * n, hidden).contiguous()
        if self.kernels == "c":
            return self._forward_c(x, cache, rows, n)
        cos, sin = self._cos[start : start + n], self._sin[start : start + n]
        q_rows, kv_rows = c.heads * c.head_dim, c.kv_heads * c.head_dim
        for layer in range(c.layers):
            halves, factor = arith.normalize(x, self._attn_gain[layer], c.norm_eps)
            qkv = arith.linear(halves, self._qkv[layer], self._qkv_scale[layer], factor)
            q = _rope(qkv[:, :q_rows].reshape(rows, n, c.heads, c.head_dim), cos, sin)
            k = _rope(qkv[:, q_rows : q_rows + kv_rows].reshape(rows, n, c.kv_heads, c.head_dim), cos, sin)
            v = qkv[:, q_rows + kv_rows :].reshape(rows, n, c.kv_heads, c.head_dim)
            for store, scales, t in ((cache.keys, cache.key_scale, k), (cache.values, cache.value_scale, v)):
                values, scale = arith.quantize_heads(t)  # [rows, n, kv_heads, d], [rows, n, kv_heads]
                if store is cache.keys:
                    store[layer, :, :, :, start : start + n] = values.permute(0, 2, 3, 1).to(torch.int8)
                else:
                    store[layer, :, :, start : start + n] = values.transpose(1, 2).to(torch.int8)
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

    HEAD_ROWS = 256  # positions per head product (an int32 [2 x 256, vocab] buffer)

    @torch.no_grad()
    def logits(self, hidden: Hidden, rows: torch.Tensor | None = None) -> torch.Tensor:
        """float64 logits [k, vocab] of the positions ``rows`` (indices into rows * positions; all by default)."""
        halves, factor = self._head_input(hidden, rows)
        return arith.linear(halves, self._head, self._head_scale, factor)

    @torch.no_grad()
    def ranks(self, hidden: Hidden, rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Rank of ``tokens[i]`` in the logits of position ``rows[i]``: how many logits are greater, plus
        how many equal ones have a lower id (int64 [k])."""
        return self._head_map(hidden, rows, tokens, "ranks", rank_of)

    @torch.no_grad()
    def select(self, hidden: Hidden, rows: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
        """The token at rank ``ranks[i]`` in the logits of position ``rows[i]`` (inverse of ``ranks``)."""
        return self._head_map(hidden, rows, ranks, "select", select_rank)

    @torch.no_grad()
    def frequencies(self, hidden: Hidden, rows: torch.Tensor) -> torch.Tensor:
        """The integer token distribution at positions ``rows`` (int64 [k, vocab]): every token at least
        1, total at most 2**CODE_BITS (docs/ENGINE.md, *Token probabilities*). Made exactly from the
        logits: top = max l; g_j = min((top - l_j) * 256, 8192); e_j = round(interp(CODE, g_j));
        F_j = 1 + (e_j * (2**CODE_BITS - vocab)) // sum(e)."""
        rows = rows.reshape(-1).long()
        out = torch.empty((rows.shape[0], self.config.vocab), dtype=torch.int64, device=self.device)
        vocab, spare = self.config.vocab, (1 << CODE_BITS) - self.config.vocab
        for start in range(0, rows.shape[0], self.HEAD_ROWS):
            part = slice(start, start + self.HEAD_ROWS)
            halves, factor = self._head_input(hidden, rows[part])
            if self.kernels == "c":
                acc, m = arith.int_mm(halves, self._head), factor.shape[0]
                row = vocab * 4
                result = out[part]

                def run(a, b, acc=acc, factor=factor, result=result, m=m):
                    _kernels.frequencies(acc.data_ptr() + a * row, acc.data_ptr() + (m + a) * row, b - a, vocab,
                                         self._head_scale.data_ptr(), factor.data_ptr() + 8 * a, self._code.data_ptr(),
                                         self._code_steps.data_ptr(), spare, result.data_ptr() + 8 * a * vocab)

                _split(m, run, min_rows=2)
            else:
                logits = arith.linear(halves, self._head, self._head_scale, factor)
                out[part] = token_frequencies(logits, self._code, self._code_steps, spare)
        return out

    @torch.no_grad()
    def intervals(self, hidden: Hidden, rows: torch.Tensor, tokens: torch.Tensor) -> list[tuple[int, int, int]]:
        """The coding interval ``(lo, hi, total)`` of ``tokens[i]`` under the token distribution of
        position ``rows[i]``: what the encoder narrows by (``lo`` = the frequencies of lower ids)."""
        rows, tokens = rows.reshape(-1).long(), tokens.reshape(-1).long()
        out: list[tuple[int, int, int]] = []
        for start in range(0, rows.shape[0], self.HEAD_ROWS):
            part = slice(start, start + self.HEAD_ROWS)
            dist = self.distributions(hidden, rows[part])
            out += dist.intervals(tokens[part])
        return out

    @torch.no_grad()
    def distributions(self, hidden: Hidden, rows: torch.Tensor) -> "Distributions":
        """The token distributions of positions ``rows``, for decoding (totals, and the token whose
        interval holds a target)."""
        return Distributions(self.frequencies(hidden, rows))

    @torch.no_grad()
    def greedy(self, hidden: Hidden, rows: torch.Tensor) -> torch.Tensor:
        """The top token of each position ``rows[i]`` (the lowest id among equal top logits)."""
        rows = rows.reshape(-1).long()
        return self.select(hidden, rows, torch.zeros(rows.shape[0], dtype=torch.long))

    def _head_input(self, hidden: Hidden, rows: torch.Tensor | None):
        m = hidden.factor.shape[0]
        if rows is None:
            return hidden.halves, hidden.factor
        rows = rows.to(hidden.halves.device)
        return torch.cat([hidden.halves[:m][rows], hidden.halves[m:][rows]]), hidden.factor[rows].contiguous()

    def _head_map(self, hidden, rows, values, kernel, reference):
        rows, values = rows.reshape(-1).long(), values.reshape(-1).long().to(self.device)
        out = torch.empty(rows.shape[0], dtype=torch.int64, device=self.device)
        vocab = self.config.vocab
        for start in range(0, rows.shape[0], self.HEAD_ROWS):
            part = slice(start, start + self.HEAD_ROWS)
            halves, factor = self._head_input(hidden, rows[part])
            if self.kernels == "c":
                acc = arith.int_mm(halves, self._head)
                v, m = values[part].contiguous(), factor.shape[0]
                row = vocab * 4  # bytes per int32 row of the product
                result = torch.empty(m, dtype=torch.int64)

                def run(a, b, acc=acc, v=v, factor=factor, result=result, m=m):
                    getattr(_kernels, kernel)(acc.data_ptr() + a * row, acc.data_ptr() + (m + a) * row, b - a, vocab,
                                              self._head_scale.data_ptr(), factor.data_ptr() + 8 * a,
                                              v.data_ptr() + 8 * a, result.data_ptr() + 8 * a)

                _split(m, run, min_rows=2)
                out[part] = result
            else:
                out[part] = reference(arith.linear(halves, self._head, self._head_scale, factor), values[part])
        return out

    def _forward_c(self, x: torch.Tensor, cache: KVCache, rows: int, n: int) -> Hidden:
        """``forward`` through the C kernels (same operations, same order, same bits). Row ranges run on
        up to torch's thread count of threads: rows are computed independently, so how they are split
        changes nothing."""
        c, k = self.config, _kernels
        m, start = rows * n, cache.length
        width = max(c.hidden, c.ffn, c.heads * c.head_dim)
        buffer = torch.empty((2 * m, width), dtype=torch.int8)
        factor = torch.empty((m, 1), dtype=F64)
        inv_sqrt_d = tables.inverse_sqrt(c.head_dim)
        xp, fp = x.data_ptr(), factor.data_ptr()

        def halves(cols):  # int8 [2m, cols]: hi rows, then lo rows
            return buffer.view(-1)[: 2 * m * cols].view(2 * m, cols)

        def hl(t, r0):  # addresses of row r0 in the hi and lo planes of int8 or int32 halves t [2m, cols]
            step = t.shape[1] * t.element_size()
            return t.data_ptr() + r0 * step, t.data_ptr() + (m + r0) * step

        hx, ho, hf = halves(c.hidden), halves(c.heads * c.head_dim), halves(c.ffn)
        for layer in range(c.layers):
            gain = self._attn_gain[layer].data_ptr()
            _split(m, lambda a, b: k.normalize(xp + 8 * a * c.hidden, gain, b - a, c.hidden, c.norm_eps,
                                               *hl(hx, a), fp + 8 * a))
            acc = arith.int_mm(hx, self._qkv[layer])
            keys, values = cache.keys[layer], cache.values[layer]
            ks, vs = cache.key_scale[layer], cache.value_scale[layer]
            per_row = c.kv_heads * cache.capacity

            def attend(b0, b1, acc=acc, keys=keys, values=values, ks=ks, vs=vs, qkv_scale=self._qkv_scale[layer]):
                r0 = b0 * n
                k.attention(*hl(acc, r0), b1 - b0, n, c.heads, c.kv_heads, c.head_dim, qkv_scale.data_ptr(), fp + 8 * r0,
                            self._cos.data_ptr(), self._sin.data_ptr(), start, keys.data_ptr() + b0 * per_row * c.head_dim,
                            values.data_ptr() + b0 * per_row * c.head_dim, ks.data_ptr() + 8 * b0 * per_row,
                            vs.data_ptr() + 8 * b0 * per_row, cache.capacity, self._exp.data_ptr(),
                            self._exp_steps.data_ptr(), inv_sqrt_d, *hl(ho, r0), fp + 8 * r0)

            _split(rows, attend, min_rows=1 if n * (start + n) >= 512 else 4)
            acc = arith.int_mm(ho, self._out[layer])
            scale = self._out_scale[layer].data_ptr()
            _split(m, lambda a, b: k.linear(*hl(acc, a), b - a, c.hidden, scale, fp + 8 * a, xp + 8 * a * c.hidden, True))
            gain = self._ffn_gain[layer].data_ptr()
            _split(m, lambda a, b: k.normalize(xp + 8 * a * c.hidden, gain, b - a, c.hidden, c.norm_eps,
                                               *hl(hx, a), fp + 8 * a))
            acc = arith.int_mm(hx, self._gate_up[layer])
            scale = self._gate_up_scale[layer].data_ptr()
            sig, steps = self._sig.data_ptr(), self._sig_steps.data_ptr()
            _split(m, lambda a, b: k.mlp(*hl(acc, a), b - a, c.ffn, scale, fp + 8 * a, sig, steps, *hl(hf, a), fp + 8 * a))
            acc = arith.int_mm(hf, self._down[layer])
            scale = self._down_scale[layer].data_ptr()
            _split(m, lambda a, b: k.linear(*hl(acc, a), b - a, c.hidden, scale, fp + 8 * a, xp + 8 * a * c.hidden, True))
        cache.length = start + n
        final = torch.empty((2 * m, c.hidden), dtype=torch.int8)
        gain = self._final_gain.data_ptr()
        _split(m, lambda a, b: k.normalize(xp + 8 * a * c.hidden, gain, b - a, c.hidden, c.norm_eps, *hl(final, a),
                                           fp + 8 * a))
        return Hidden(final, factor, (rows, n))

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
        kv = cache.keys[layer, :, :, :, :keys].reshape(rows * c.kv_heads, c.head_dim, keys).to(torch.float32)
        vv = cache.values[layer, :, :, :keys].reshape(rows * c.kv_heads, keys, c.head_dim).to(torch.float32)
        ks = cache.key_scale[layer, :, :, :keys].reshape(rows * c.kv_heads, 1, keys)
        vs = cache.value_scale[layer, :, :, :keys].reshape(rows * c.kv_heads, 1, keys)
        dot = arith.exact_bmm(qv, kv)  # |sum| <= d * 127**2 < 2**24
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


CODE_BITS = 24  # token frequencies sum to at most 2**24


class Distributions:
    """Integer token distributions of k positions (Engine.distributions): ``total(k)``, and ``find(k,
    target)``, the token whose interval ``[lo, hi)`` holds ``target`` (0 <= target < total)."""

    def __init__(self, freq: torch.Tensor):
        self.freq = freq.cpu()
        self.cum = self.freq.cumsum(dim=1)  # exact integers

    def total(self, k: int) -> int:
        return int(self.cum[k, -1])

    def find(self, k: int, target: int) -> tuple[int, int, int]:
        token = int(torch.searchsorted(self.cum[k], target, right=True))
        hi = int(self.cum[k, token])
        return token, hi - int(self.freq[k, token]), hi

    def intervals(self, tokens: torch.Tensor) -> list[tuple[int, int, int]]:
        """``(lo, hi, total)`` of ``tokens[k]`` in distribution k, for every k."""
        tok = tokens.reshape(-1, 1).long().cpu()
        hi = self.cum.gather(1, tok).squeeze(1)
        lo = hi - self.freq.gather(1, tok).squeeze(1)
        return list(zip(lo.tolist(), hi.tolist(), self.cum[:, -1].tolist()))


def token_frequencies(logits: torch.Tensor, table: torch.Tensor, steps: torch.Tensor, spare: int) -> torch.Tensor:
    """The PyTorch reference of Engine.frequencies, from float64 logits [k, vocab]."""
    top = logits.amax(dim=-1, keepdim=True)
    position = torch.mul(torch.sub(top, logits), _c(tables.EXP_STEP, logits)).clamp_(max=tables.EXP_RANGE * tables.EXP_STEP)
    e = torch.round(arith.interpolate(table, steps, position)).to(torch.int64)
    total = e.sum(dim=-1, keepdim=True)  # exact: below 2**32 * vocab
    return torch.div(e * spare, total, rounding_mode="floor") + 1


def rank_of(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Per row, the rank of ``tokens`` in ``logits`` [n, vocab]: how many logits are greater, plus how
    many equal ones have a lower token id."""
    chosen = logits.gather(1, tokens.unsqueeze(1))
    ids = torch.arange(logits.shape[1], device=logits.device).unsqueeze(0)
    return (logits > chosen).sum(1) + ((logits == chosen) & (ids < tokens.unsqueeze(1))).sum(1)


def select_rank(logits: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """Per row, the token at ``ranks`` in ``logits`` ordered by decreasing value, lower id first on ties."""
    out = logits.argmax(dim=-1)  # the first index among equal maxima: rank 0
    for row in (ranks > 0).nonzero().flatten().tolist():
        values, r = logits[row], int(ranks[row])
        # the value at position r of the order (a selection, not a sort), then among the tokens holding
        # exactly that value, the one with the right number of lower ids
        value = torch.kthvalue(-values, r + 1).values.neg()
        above = int((values > value).sum())
        out[row] = (values == value).nonzero().flatten()[r - above]
    return out


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs (2i, 2i + 1) of x [rows, n, heads, d] by the position's angles [n, d/2]."""
    a, b = x[..., 0::2], x[..., 1::2]
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    first = torch.sub(torch.mul(a, cos), torch.mul(b, sin))
    second = torch.add(torch.mul(a, sin), torch.mul(b, cos))
    return torch.stack([first, second], dim=-1).flatten(-2)
