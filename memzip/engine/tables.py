"""Lookup tables for the engine's non-linear functions, built by exact construction.

Every value comes from Python's ``decimal`` arithmetic (exp and ln correctly rounded, +, -, *, / exact
to the context precision, the same on every platform), then rounded once to the nearest float64 (or
integer). No libm function is involved, so the tables are the same bits on every machine; their
SHA-256 is part of the engine fingerprint (memzip.engine.weights).

* ``attention_table()``: ``round(2**15 * exp(-i / 512))``, integers (attention weights on integer gaps);
* ``code_table()``: ``round(2**32 * exp(-i / 256))`` for i = 0 .. 8193 (token probabilities);
* ``sigmoid_table()``: ``1 / (1 + exp(-x))`` at x = -16 + i / 64, i = 0 .. 2049 (SiLU);
* ``rope_tables(base, dim)``: cos and sin of ``p * base**(-2i/dim)`` for positions p < MAX_POSITIONS,
  made from two exact tables (p = 64a + b) combined by one complex product in float64, op by op.
"""

from __future__ import annotations

import functools
from decimal import Decimal, localcontext

import torch

EXP_STEP = 256  # coding-table points per unit of logit
EXP_RANGE = 32  # the coding table covers exp(-x) for 0 <= x <= 32
SIGMOID_STEP = 64
SIGMOID_RANGE = 16  # sigmoid(x) for -16 <= x <= 16; beyond, the end values
MAX_POSITIONS = 8192
_LOW = 64  # positions p = 64 * a + b, b < 64

_PREC = 50


def _exp_integers(one: int, step: int, count: int) -> list[int]:
    """round(one * exp(-i / step)) for i < count (Decimal: exp correctly rounded at _PREC digits)."""
    with localcontext() as ctx:
        ctx.prec = _PREC
        return [int((Decimal(one) * (Decimal(-i) / step).exp()).to_integral_value()) for i in range(count)]


ATT_ONE = 1 << 15  # exp(0) in attention-table units
ATT_STEP = 512  # attention-table points per unit of score
ATT_POINTS = 5680  # the table ends where ATT_ONE * exp(-i / ATT_STEP) rounds to 0


@functools.lru_cache(maxsize=None)
def attention_table() -> torch.Tensor:
    """int32 [ATT_POINTS]: round(ATT_ONE * exp(-i / ATT_STEP)); the attention weight of a key whose
    score is i / ATT_STEP below the top (docs/ENGINE.md, *Attention*). Its last point is 0."""
    values = _exp_integers(ATT_ONE, ATT_STEP, ATT_POINTS)
    assert values[-1] == 0 and values[-2] > 0
    return torch.tensor(values, dtype=torch.int32)


CODE_ONE = 1 << 32  # exp(0) in the coding table's integer units


@functools.lru_cache(maxsize=None)
def code_table() -> torch.Tensor:
    """float64 [EXP_RANGE * EXP_STEP + 2]: integers round(CODE_ONE * exp(-i / EXP_STEP)), plus a repeat
    of the last point (interpolation at the last point reads a defined neighbour): the weights from
    which token probabilities are made for coding (docs/FORMAT.md, *Token distribution*)."""
    values = _exp_integers(CODE_ONE, EXP_STEP, EXP_RANGE * EXP_STEP + 1)
    values.append(values[-1])
    return torch.tensor(values, dtype=torch.float64)


@functools.lru_cache(maxsize=None)
def sigmoid_table() -> torch.Tensor:
    """float64 [2 * SIGMOID_RANGE * SIGMOID_STEP + 2]: sigmoid(-SIGMOID_RANGE + i / SIGMOID_STEP), plus
    a repeat of the last point."""
    n = 2 * SIGMOID_RANGE * SIGMOID_STEP + 1
    with localcontext() as ctx:
        ctx.prec = _PREC
        values = [float(1 / (1 + (-(Decimal(i) / SIGMOID_STEP - SIGMOID_RANGE)).exp())) for i in range(n)]
    values.append(values[-1])
    return torch.tensor(values, dtype=torch.float64)


def inverse_sqrt(n: int) -> float:
    """1 / sqrt(n), correctly rounded to float64 (Decimal's sqrt is correctly rounded)."""
    with localcontext() as ctx:
        ctx.prec = _PREC
        return float(1 / Decimal(n).sqrt())


def _pi() -> Decimal:
    """pi to the context precision (Machin's formula, exact rational steps)."""

    def arctan_inv(x: int) -> Decimal:
        total, term, k, x2 = Decimal(0), Decimal(1) / x, 1, x * x
        while term:
            total += term / k if (k // 2) % 2 == 0 else -term / k
            term /= x2
            k += 2
        return total

    return 16 * arctan_inv(5) - 4 * arctan_inv(239)


def _cos_sin(angle: Decimal, two_pi: Decimal) -> tuple[float, float]:
    """cos and sin of ``angle`` (Taylor series after reduction to [-pi, pi]), rounded to float64."""
    x = angle - two_pi * (angle / two_pi).to_integral_value()
    cos, sin = Decimal(0), Decimal(0)
    term, k = Decimal(1), 0  # term = x**k / k!
    while True:
        if k % 4 == 0:
            cos += term
        elif k % 4 == 1:
            sin += term
        elif k % 4 == 2:
            cos -= term
        else:
            sin -= term
        k += 1
        term = term * x / k
        if abs(term) < Decimal(10) ** (-_PREC + 5) and k > 2:
            break
    return float(cos), float(sin)


@functools.lru_cache(maxsize=None)
def rope_tables(base: float, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), float64 [MAX_POSITIONS, dim // 2]: the rotation of pair i at position p by the angle
    ``p * base ** (-2 i / dim)``. Built from exact tables for p = 64 a and for p = b < 64 (Decimal,
    rounded to float64), combined as cos(A + B) = cA cB - sA sB and sin(A + B) = sA cB + cA sB in
    float64, one IEEE operation at a time (the same bits everywhere)."""
    half = dim // 2
    high = MAX_POSITIONS // _LOW
    with localcontext() as ctx:
        ctx.prec = _PREC
        two_pi = 2 * _pi()
        ln_base = Decimal(repr(float(base))).ln()
        theta = [(-(Decimal(2 * i) / dim) * ln_base).exp() for i in range(half)]
        low_cs = [[_cos_sin(b * t, two_pi) for t in theta] for b in range(_LOW)]
        high_cs = [[_cos_sin(_LOW * a * t, two_pi) for t in theta] for a in range(high)]
    lc = torch.tensor([[c for c, _ in row] for row in low_cs], dtype=torch.float64)  # [64, half]
    ls = torch.tensor([[s for _, s in row] for row in low_cs], dtype=torch.float64)
    hc = torch.tensor([[c for c, _ in row] for row in high_cs], dtype=torch.float64)  # [high, half]
    hs = torch.tensor([[s for _, s in row] for row in high_cs], dtype=torch.float64)
    # position p = 64 a + b -> row a of the high table, row b of the low one
    hc, hs = hc[:, None, :].expand(high, _LOW, half), hs[:, None, :].expand(high, _LOW, half)
    lc, ls = lc[None].expand(high, _LOW, half), ls[None].expand(high, _LOW, half)
    cos = torch.sub(torch.mul(hc, lc), torch.mul(hs, ls)).reshape(MAX_POSITIONS, half)
    sin = torch.add(torch.mul(hs, lc), torch.mul(hc, ls)).reshape(MAX_POSITIONS, half)
    return cos.contiguous(), sin.contiguous()
