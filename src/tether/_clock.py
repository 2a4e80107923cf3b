"""Time goes through a clock object so that timeouts and deadlines can be tested without sleeping."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """Where tether reads the time.

    `now()` is wall time (seconds since the epoch; journaled, compared across processes);
    `monotonic()` measures durations within one process.
    """

    def now(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The real clock."""

    __slots__ = ()

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.perf_counter()
