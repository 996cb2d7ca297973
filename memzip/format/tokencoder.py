"""The token streams: each window's tokens arithmetic-coded with the model's own distribution.

At every position the exact engine gives integer frequencies for every token (``Engine.frequencies``:
each at least 1, summing to at most 2**24, a function of the logits alone, the same bits everywhere).
A token is coded as the interval ``[lo, lo + F_token)`` of the frequencies' total, ``lo`` the sum of the
frequencies of the tokens with lower ids. Each window has its own stream, so a decoder may decode any
windows together or in any order.

The arithmetic coder is the classic 32-bit integer coder with pending bits (Witten, Neal & Cleary 1987),
specified in docs/FORMAT.md; totals stay below 2**24, a quarter of its smallest range is 2**30. Readers
are strict: a stream must be exactly what the encoder writes for the tokens it decodes to (re-encoded
and compared), so no two streams mean the same tokens.
"""

from __future__ import annotations

_BITS = 32
_TOP = (1 << _BITS) - 1
_HALF = 1 << (_BITS - 1)
_QUARTER = 1 << (_BITS - 2)
MAX_TOTAL = 1 << 24


class _Interval:
    """The coder's interval [low, high], narrowed identically by encoder and decoder. After each
    narrowing it is doubled until it spans more than a quarter of the range; ``_shifted(bit, offset)``
    hears of every doubling: ``bit`` is the settled bit (None when the interval straddles the middle,
    a pending bit), ``offset`` what was subtracted before doubling."""

    def __init__(self) -> None:
        self.low, self.high = 0, _TOP

    def narrow(self, low: int, high: int, total: int) -> None:
        if not 0 <= low < high <= total <= MAX_TOTAL:
            raise ValueError("interval out of range")
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


class Encoder(_Interval):
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


class Decoder(_Interval):
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
        """The cumulative frequency the next symbol's interval contains (0 <= target < total)."""
        span = self.high - self.low + 1
        return min(((self.value - self.low + 1) * total - 1) // span, total - 1)

    def _shifted(self, bit: int | None, offset: int) -> None:
        self.value = 2 * (self.value - offset) + self._bit()


def encode(intervals) -> bytes:
    """The stream for a sequence of (lo, hi, total) intervals (empty bytes for none)."""
    intervals = list(intervals)
    if not intervals:
        return b""
    enc = Encoder()
    for lo, hi, total in intervals:
        enc.narrow(lo, hi, total)
    return enc.finish()
