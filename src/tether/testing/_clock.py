"""A clock that moves only when told to."""

from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    """A `tether.Clock` for tests: time stands still until `advance()`.

    Args:
        start: the initial wall time (seconds since the epoch).
    """

    def __init__(self, start: float = 1_767_225_600.0):  # 2026-01-01T00:00:00Z
        self._now = start
        self._mono = 0.0

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        if seconds < 0:
            raise ValueError("a FakeClock only moves forward; use a new clock to go back")
        self._now += seconds
        self._mono += seconds
