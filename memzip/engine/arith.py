"""The engine's arithmetic: every step is exact, or one correctly rounded IEEE operation per element.

Three kinds of operation, and why each gives the same bits on every machine, batch shape and thread count:

1. **Integer sums.** Matrix products, attention scores, attention-weighted values and sums of squares
   take integer-valued operands and produce integer results that fit their accumulator (int32, or a
   float32/float64 partial sum below 2**24 / 2**53). Such a sum is exact in any order, any blocking,
   with or without fused multiply-add, so any kernel that computes it exactly gives the same result.
   ``int_mm`` checks once per device that ``torch._int_mm`` does (int8 kernels without VNNI saturate
   int16 pair sums unless one operand stays within -64..63: the weights do, at -63..63) and otherwise
   uses an exact float32 path.
2. **Elementwise float64 operations**, one IEEE operation per torch call: +, -, *, /, round (half to
   even), floor, clamp, max, frexp. Each is exact or correctly rounded by IEEE 754, so the result is a
   function of its operands alone. Not sqrt: torch's float64 sqrt of a large tensor goes through MKL's
   vector math library, which is not correctly rounded (measured: 1.2% of 100,000 values 1 ulp off);
   ``sqrt`` here is a fixed number of Newton steps from an exact power of two instead. Scalars are passed as one-element tensors on the device (never as
   Python numbers: CUDA divides by a CPU scalar through its reciprocal) and no call fuses a
   multiply with an add.
3. **Table lookups** with linear interpolation (memzip.engine.tables): exp and sigmoid, built exactly.

Reductions other than exact sums are max/min (exact in any order). No libm or SIMD math library
function (exp, sin, rsqrt, ...) is ever called.
"""

from __future__ import annotations

import functools
import time
import weakref

import torch

ACT_LEVELS = 32639  # activations in -32639..32639: two int8 halves hi * 256 + lo, each in -128..127
QK_LEVELS = 127  # q, k and v per head: int8 values

F64 = torch.float64


@functools.lru_cache(maxsize=None)
def const(value: float, device: str) -> torch.Tensor:
    """A float64 constant as a one-element tensor on ``device``."""
    return torch.tensor([value], dtype=F64, device=device)


def _c(value: float, like: torch.Tensor) -> torch.Tensor:
    return const(float(value), str(like.device))


def safe(x: torch.Tensor) -> torch.Tensor:
    """``x`` with zeros replaced by ones (a divisor for rows that are all zero, whose result is zero anyway)."""
    return torch.where(x > 0, x, torch.ones_like(x))


def quantize_activations(x: torch.Tensor):
    """Per row of ``x`` [m, k] (float64): (halves int8 [2m, k], xq float64 [m, k], unit float64 [m, 1]).

    ``xq = round(x * (ACT_LEVELS / max|x|))`` are integers with ``x ~ xq * unit``; ``halves`` stacks
    ``hi`` over ``lo`` with ``xq = 256 * hi + lo`` (|hi| <= 127, -128 <= lo <= 127)."""
    amax = x.abs().amax(dim=-1, keepdim=True)
    levels = _c(ACT_LEVELS, x)
    xq = torch.round(torch.mul(x, torch.div(levels, safe(amax)))).clamp_(-ACT_LEVELS, ACT_LEVELS)
    hi = torch.floor(torch.mul(torch.add(xq, _c(128, x)), _c(1 / 256, x)))
    lo = torch.sub(xq, torch.mul(hi, _c(256, x)))
    halves = torch.cat([hi, lo]).to(torch.int8)
    return halves, xq, torch.div(amax, levels)


SQRT_STEPS = 7  # Newton steps: from within a factor sqrt(2), 6 reach float64 precision


def sqrt(v: torch.Tensor) -> torch.Tensor:
    """A square root of positive float64 ``v`` that is the same bits everywhere (not necessarily the
    correctly rounded one): Newton's iteration y <- (y + v / y) * 0.5, SQRT_STEPS times, from
    y = 2**ceil(e / 2) where v = f * 2**e, 0.5 <= f < 1 (frexp, exact)."""
    _, e = torch.frexp(v)
    half_e = torch.div(e.to(torch.int64) + 1, 2, rounding_mode="floor")
    y = torch.bitwise_left_shift(half_e + 1023, 52).view(F64)  # 2**half_e, exactly
    half = _c(0.5, v)
    for _ in range(SQRT_STEPS):
        y = torch.mul(torch.add(y, torch.div(v, y)), half)
    return y


def normalize(x: torch.Tensor, gain: torch.Tensor, eps: float):
    """RMSNorm of the rows of ``x`` with ``gain``, quantized for a product: (halves, factor [m, 1]) such
    that ``linear(halves, W, s, factor)`` is the product of ``x / rms(x) * gain`` with W.

    The mean square comes from the row quantized on its own (an exact integer sum of squares, times
    unit**2); the row times the gain is then quantized for the product."""
    _, xq, unit = quantize_activations(x)
    ss = torch.mul(xq, xq).sum(dim=-1, keepdim=True)  # integers < 2**30 * k: exact in float64
    ms = torch.mul(torch.div(ss, _c(xq.shape[-1], xq)), torch.mul(unit, unit))
    inverse_rms = torch.div(_c(1, xq), sqrt(torch.add(ms, _c(eps, xq))))
    halves, _, gained_unit = quantize_activations(torch.mul(x, gain))
    return halves, torch.mul(gained_unit, inverse_rms)


_INT_MM_OK: dict[str, bool] = {}  # device -> use torch._int_mm (exact there, and faster than float32)


def _use_int_mm(device: torch.device) -> bool:
    """Multiply with torch._int_mm on ``device``? Only where it is exact (``_int_mm_exact``) and faster
    than the exact float32 path (``_int_mm_faster``): both give the same integers, so this choice,
    made once per device and process, changes speed only. (On a CPU without AVX-512 VNNI, torch's int8
    kernel was measured 14x slower than float32 for a prefill product and 22x for a decoding step.)"""
    key = str(device)
    if key not in _INT_MM_OK:
        _INT_MM_OK[key] = _int_mm_exact(device) and _int_mm_faster(device)
    return _INT_MM_OK[key]


def _int_mm_exact(device: torch.device) -> bool:
    """Does torch._int_mm compute int8 products exactly here, for weights in -63..63 and activations
    in -128..127 (extremes and random values, shapes like the engine's)?"""
    if not hasattr(torch, "_int_mm"):
        return False
    gen = torch.Generator().manual_seed(0)
    for m, k, n in ((2, 576, 64), (34, 1536, 72), (96, 64, 128)):
        a = torch.randint(-128, 128, (m, k), generator=gen, dtype=torch.int8)
        w = torch.randint(-63, 64, (n, k), generator=gen, dtype=torch.int8)
        a[0], w[0] = 127, -63  # a column of pair sums at the extreme
        a[1], w[1] = -128, 63
        try:
            got = _raw_int_mm(a.to(device), w.to(device)).to("cpu", torch.int64)
        except RuntimeError:
            return False
        if not torch.equal(got, a.long() @ w.long().t()):
            return False
    return True


def _int_mm_faster(device: torch.device) -> bool:
    """Is torch._int_mm faster than the float32 path on a product of the engine's shapes here?"""
    gen = torch.Generator().manual_seed(1)
    a = torch.randint(-128, 128, (64, 576), generator=gen, dtype=torch.int8).to(device)
    w = torch.randint(-63, 64, (1536, 576), generator=gen, dtype=torch.int8).to(device)
    times = []
    for product in (_raw_int_mm, _float_mm):
        product(a, w)  # warm up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(3):
            product(a, w)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times[0] < times[1]


def _raw_int_mm(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    m = a.shape[0]
    if a.device.type == "cuda" and m <= 16:  # cuBLASLt's int8 product wants more than 16 rows
        a = torch.cat([a, a.new_zeros((17 - m, a.shape[1]))])
    return torch._int_mm(a, w.t())[:m]


def int_mm(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``a @ w.T`` for int8 ``a`` [m, k] and int8 ``w`` [n, k] with |w| <= 63: int32, exact."""
    return _raw_int_mm(a, w) if _use_int_mm(a.device) else _float_mm(a, w)


_FLOAT_WEIGHTS: dict[tuple, tuple] = {}  # (address, shape, strides, device) -> (weak ref to its owner, float32 transpose)


def _float_weight(w: torch.Tensor) -> torch.Tensor:
    """The float32 transpose of a weight matrix, made once and kept while the tensor that owns its memory
    lives (the engine indexes its per-layer stacks, so each call brings a new view of the same memory)."""
    owner = w._base if w._base is not None else w
    key = (w.data_ptr(), tuple(w.shape), tuple(w.stride()), str(w.device))
    ref, wf = _FLOAT_WEIGHTS.get(key, (None, None))
    if ref is None or ref() is not owner:
        wf = w.float().t()
        _FLOAT_WEIGHTS[key] = (weakref.ref(owner, lambda _r, key=key: _FLOAT_WEIGHTS.pop(key, None)), wf)
    return wf


def _float_mm(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``int_mm`` in float32: every partial sum is exact while k * 128 * 63 < 2**24, so in chunks of
    2048 columns, added as int32. The float32 copy of each weight matrix is made once (4x its int8
    size: converting it at every decoding step would cost more than the product)."""
    wf = _float_weight(w)
    out = None
    for start in range(0, a.shape[1], 2048):
        part = torch.mm(a[:, start : start + 2048].float(), wf[start : start + 2048]).to(torch.int32)
        out = part if out is None else out + part
    return out


def linear(halves: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor, row_factor: torch.Tensor):
    """The float64 product of quantized activations (``quantize_activations``) with int8 weights
    [n, k] (per-row ``weight_scale``), times ``row_factor`` [m, 1]: ``(acc * scale) * factor``."""
    m = halves.shape[0] // 2
    acc2 = int_mm(halves, weight).to(F64)
    acc = torch.add(torch.mul(acc2[:m], _c(256, acc2)), acc2[m:])  # exact: |acc| < 2**40
    return torch.mul(torch.mul(acc, weight_scale), row_factor)


def quantize_heads(x: torch.Tensor):
    """Per vector along the last dim: (values float32 holding integers in -127..127, scale float64)."""
    amax = x.abs().amax(dim=-1, keepdim=True)
    levels = _c(QK_LEVELS, x)
    q = torch.round(torch.mul(x, torch.div(levels, safe(amax))))
    return q.to(torch.float32), torch.div(amax, levels).squeeze(-1)


def interpolate(table: torch.Tensor, steps: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """``table`` read at fractional ``position`` (in table points, already clamped to [0, len - 2]):
    ``t[i] + steps[i] * (position - i)``, i = floor(position); ``steps[i] = t[i + 1] - t[i]``."""
    index = torch.floor(position)
    frac = torch.sub(position, index)
    index = index.long()
    return torch.add(table[index], torch.mul(steps[index], frac))
