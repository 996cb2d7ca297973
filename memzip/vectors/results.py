"""What optimizing one window's memory vector came to (torch-free: the journal reads and writes it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class WindowResult:
    code: bytes | None  # the verified stored code; None when the window did not converge
    steps: int  # optimizer steps spent on this window
    verify_failures: int = 0
    last: bytes | None = None  # stored code: the verified one, or where a failed window ended
