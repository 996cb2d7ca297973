"""Progress reporting without tying the library to a terminal: the CLI plugs in a rich display."""

from __future__ import annotations


class Progress:
    """Silent by default; subclasses draw. ``phase`` starts a bar, ``update`` moves it."""

    def phase(self, description: str, total: int) -> None:
        pass

    def update(self, completed: int, info: str = "") -> None:
        pass

    def done(self) -> None:
        pass

    def message(self, text: str) -> None:
        pass
