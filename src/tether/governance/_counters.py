"""Counters: named integers that several keys can be added to atomically. Budgets keep spend in them.

Values are integers on purpose: integer addition is exact and order-free, so however concurrent charges
interleave (across tasks, processes or hosts), every counter ends at exactly the sum of what was charged.
Money is therefore counted in nano-dollars (`NANO_USD`), not as a float.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence

from .._clock import Clock, SystemClock

__all__ = ["NANO_USD", "Counters", "InMemoryCounters"]

NANO_USD = 1_000_000_000
"""Money counters hold USD times this: one token priced at $0.001 per million still counts."""


class Counters(abc.ABC):
    """Where budget spend is kept. Implementations: `InMemoryCounters` (one process) and
    `tether.governance.redis.RedisCounters` (shared by every worker)."""

    @abc.abstractmethod
    async def add(
        self, increments: Mapping[str, int], *, ttl_s: Mapping[str, float] | None = None
    ) -> dict[str, int]:
        """Add to several counters as one atomic step (all or none), creating missing ones at 0.

        Args:
            increments: the amount to add to each counter.
            ttl_s: for some counters, how many seconds from now they may be forgotten (each add
                restarts the countdown).

        Returns:
            Each counter's value after the addition.

        Raises:
            GovernanceUnavailable: a shared backend cannot be reached.
        """

    @abc.abstractmethod
    async def get(self, keys: Sequence[str]) -> dict[str, int]:
        """The current value of each counter (0 for a missing one)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class InMemoryCounters(Counters):
    """Counters in this process. Expired counters are dropped on the next `add`.

    Args:
        clock: decides when counters expire (default: the system clock).
    """

    def __init__(self, *, clock: Clock | None = None):
        self._clock = clock or SystemClock()
        self._values: dict[str, int] = {}
        self._expiry: dict[str, float] = {}

    def _forget_expired(self) -> None:
        now = self._clock.now()
        for key in [k for k, at in self._expiry.items() if at <= now]:
            del self._expiry[key]
            self._values.pop(key, None)

    async def add(
        self, increments: Mapping[str, int], *, ttl_s: Mapping[str, float] | None = None
    ) -> dict[str, int]:
        self._forget_expired()
        for key, amount in increments.items():
            self._values[key] = self._values.get(key, 0) + int(amount)
        now = self._clock.now()
        for key, ttl in (ttl_s or {}).items():
            self._expiry[key] = now + ttl
        return {key: self._values[key] for key in increments}

    async def get(self, keys: Sequence[str]) -> dict[str, int]:
        self._forget_expired()
        return {key: self._values.get(key, 0) for key in keys}
