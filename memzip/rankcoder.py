"""The rank stream: how the container stores, for every window token, its rank under the model.

A token's *rank* is its position in the model's logits sorted by decreasing value (ties: lower token id
first); rank 0 is the greedy choice. Ranks are small on text the model predicts well, so they are
entropy-coded with an adaptive arithmetic coder that depends on nothing but the ranks themselves (not on
the model's probabilities, whose exact float values would have to match bit for bit):

* a rank ``r`` falls in bucket ``b = bit_length(r + 1) - 1`` (0 for rank 0, 1 for ranks 1-2, 2 for 3-6, ...),
  coded with adaptive frequencies over ``BUCKETS`` symbols (all 1 at the start; the coded bucket gains
  ``INCREMENT``; when the total exceeds ``MAX_TOTAL`` every frequency becomes ``(f + 1) // 2``);
* then the ``b`` low bits of ``r + 1`` (most significant first), each coded as an even binary choice.

The arithmetic coder is the classic 32-bit integer coder with pending bits (Witten, Neal & Cleary 1987);
the exact arithmetic is in docs/FORMAT.md. Readers are strict: a stream must be exactly what the encoder
writes for the ranks it decodes to (it is re-encoded and compared), so no two streams mean the same ranks.
"""

from __future__ import annotations

import math

BUCKETS = 20  # ranks 0 .. 2**20 - 2: more than any vocabulary memzip loads
MAX_RANK = (1 << BUCKETS) - 2
SYMBOLS = BUCKETS
INCREMENT = 32
MAX_TOTAL = 1 << 16

_BITS = 32
_TOP = (1 << _BITS) - 1
_HALF = 1 << (_BITS - 1)
_QUARTER = 1 << (_BITS - 2)


class _Frequencies:
    """Adaptive bucket frequencies, updated identically by encoder and decoder."""

    def __init__(self) -> None:
        self.freq = [1] * SYMBOLS
        self.total = SYMBOLS

    def interval(self, symbol: int) -> tuple[int, int, int]:
        low = sum(self.freq[:symbol])
        return low, low + self.freq[symbol], self.total

    def find(self, target: int) -> int:
        low = 0
        for symbol, f in enumerate(self.freq):
            if target < low + f:
                return symbol
            low += f
        raise ValueError("rank stream is corrupt")  # unreachable for a target below the total

    def update(self, symbol: int) -> None:
        self.freq[symbol] += INCREMENT
        self.total += INCREMENT
        if self.total > MAX_TOTAL:
            self.freq = [(f + 1) // 2 for f in self.freq]
            self.total = sum(self.freq)


class _Interval:
    """The coder's interval [low, high], narrowed identically by encoder and decoder. After each
    narrowing it is doubled until it spans more than a quarter of the range; ``_shifted(bit, offset)``
    hears of every doubling: ``bit`` is the settled bit (None when the interval straddles the middle,
    a pending bit), ``offset`` what was subtracted before doubling."""

    def __init__(self) -> None:
        self.low, self.high = 0, _TOP

    def narrow(self, low: int, high: int, total: int) -> None:
        span = self.high - self.low + 1
        self.high = self.low + span * high // total - 1
        self.low = self.low + span * low // total
        while True:
            if self.high < _HALF:
                bit, offset = 0, 0
            elif self.low >= _HALF:
                bit, offset = 1, _HALF
            elif self.low >= _QUARTER and self.high < _HALF + _QUARTER:
                bit, offset = None, _QUARTER
            else:
                return
            self.low = 2 * (self.low - offset)
            self.high = 2 * (self.high - offset) + 1
            self._shifted(bit, offset)

    def _shifted(self, bit: int | None, offset: int) -> None:
        raise NotImplementedError


class _Encoder(_Interval):
    def __init__(self) -> None:
        super().__init__()
        self.pending = 0
        self.bits: list[int] = []

    def _emit(self, bit: int) -> None:
        self.bits.append(bit)
        self.bits.extend([1 - bit] * self.pending)
        self.pending = 0

    def _shifted(self, bit: int | None, offset: int) -> None:
        if bit is None:
            self.pending += 1
        else:
            self._emit(bit)

    def finish(self) -> bytes:
        self.pending += 1
        self._emit(0 if self.low < _QUARTER else 1)
        bits = self.bits + [0] * (-len(self.bits) % 8)
        return bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))


class _Decoder(_Interval):
    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.data, self.next_bit, self.value = data, 0, 0
        for _ in range(_BITS):
            self.value = 2 * self.value + self._bit()

    def _bit(self) -> int:
        i = self.next_bit
        self.next_bit += 1
        if i >= 8 * len(self.data):
            return 0  # past the end the stream reads as zeros (the encoder's padding)
        return (self.data[i >> 3] >> (7 - (i & 7))) & 1

    def target(self, total: int) -> int:
        span = self.high - self.low + 1
        return ((self.value - self.low + 1) * total - 1) // span

    def _shifted(self, bit: int | None, offset: int) -> None:
        self.value = 2 * (self.value - offset) + self._bit()


def encode_ranks(ranks) -> bytes:
    """The coded stream for ``ranks`` (empty bytes for no ranks)."""
    ranks = list(ranks)
    if not ranks:
        return b""
    enc, model = _Encoder(), _Frequencies()
    for r in ranks:
        if not 0 <= r <= MAX_RANK:
            raise ValueError(f"rank {r} out of range")
        symbol, bits, value = _split(r)
        enc.narrow(*model.interval(symbol))
        model.update(symbol)
        for shift in range(bits - 1, -1, -1):
            bit = (value >> shift) & 1
            enc.narrow(bit, bit + 1, 2)
    return enc.finish()


def _split(entry: int) -> tuple[int, int, int]:
    """(bucket, number of raw bits, their value) for a rank: its bucket and the low bits of rank + 1."""
    bucket = (entry + 1).bit_length() - 1
    return bucket, bucket, (entry + 1) - (1 << bucket)


def decode_ranks(data: bytes, count: int) -> list[int]:
    """Exactly ``count`` entries from a stream ``encode_ranks`` wrote; ValueError for any other stream."""
    if count == 0:
        if data:
            raise ValueError("rank stream present but no window tokens")
        return []
    if not data:
        raise ValueError("rank stream missing")
    dec, model, ranks = _Decoder(data), _Frequencies(), []
    for _ in range(count):
        symbol = model.find(dec.target(model.total))
        dec.narrow(*model.interval(symbol))
        model.update(symbol)
        value = 0
        for _ in range(symbol):
            bit = dec.target(2)
            dec.narrow(bit, bit + 1, 2)
            value = 2 * value + bit
        ranks.append((1 << symbol) + value - 1)
    if encode_ranks(ranks) != data:
        raise ValueError("rank stream is not in canonical form (corrupt or padded)")
    return ranks


def window_costs(rows) -> list[float]:
    """Estimated coded size in bytes of each row of ranks, under one static bucket model fitted to
    all rows (counts + 1/2): how the compressor decides per window whether prediction pays."""
    symbols = [[_split(r)[0] for r in row] for row in rows]
    counts = [0.5] * SYMBOLS
    for row in symbols:
        for symbol in row:
            counts[symbol] += 1
    total = sum(counts)
    cost = [math.log2(total / c) + s for s, c in enumerate(counts)]
    return [sum(cost[symbol] for symbol in row) / 8 for row in symbols]
