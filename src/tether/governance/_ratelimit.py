"""Rate limits: a token bucket per key (a user, a feature, a tool), in-process or shared through Redis.

A bucket holds at most `capacity` tokens and gains `refill_per_s` tokens a second; an `acquire` of
`cost` tokens succeeds when the bucket holds that many, and otherwise takes nothing and says how long
to wait. Keys are `kind:name` (`user:alice`, `feature:search`, `tool:refund`); which limit a key gets is
decided by `RateLimits`: the rule for that exact key, else the rule for its kind, else the default, else
no limit at all.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from .._clock import Clock, SystemClock
from ..exceptions import ConfigError

__all__ = [
    "InMemoryRateLimiter",
    "KeyKind",
    "RateDecision",
    "RateLimit",
    "RateLimiter",
    "RateLimits",
    "rate_key",
]

KeyKind = Literal["user", "feature", "tool"]
_KINDS: tuple[str, ...] = ("user", "feature", "tool")


def rate_key(kind: KeyKind, name: str) -> str:
    """The key of one bucket: `rate_key("user", "alice") == "user:alice"`."""
    if kind not in _KINDS:
        raise ConfigError(f"unknown rate-limit key kind {kind!r}; use one of {list(_KINDS)}")
    if not name:
        raise ConfigError(f"a {kind} rate-limit key needs a non-empty name")
    return f"{kind}:{name}"


@dataclass(frozen=True, kw_only=True)
class RateLimit:
    """One token bucket's shape.

    Attributes:
        capacity: the most tokens the bucket holds: the largest burst allowed after a quiet spell.
        refill_per_s: tokens added per second: the sustained rate.
    """

    capacity: float
    refill_per_s: float

    def __post_init__(self) -> None:
        if not self.capacity > 0:
            raise ConfigError(f"RateLimit.capacity must be positive; got {self.capacity!r}")
        if not self.refill_per_s > 0:
            raise ConfigError(f"RateLimit.refill_per_s must be positive; got {self.refill_per_s!r}")

    @classmethod
    def per_minute(cls, count: float, *, burst: float | None = None) -> RateLimit:
        """`count` acquisitions a minute on average, at most `burst` (default `count`) at once."""
        return cls(capacity=burst if burst is not None else count, refill_per_s=count / 60.0)

    @classmethod
    def per_second(cls, count: float, *, burst: float | None = None) -> RateLimit:
        """`count` acquisitions a second on average, at most `burst` (default `count`) at once."""
        return cls(capacity=burst if burst is not None else count, refill_per_s=float(count))


@dataclass(frozen=True, kw_only=True)
class RateDecision:
    """The answer to one `acquire`.

    Attributes:
        allowed: whether the tokens were taken (the call may go ahead).
        retry_after_s: when refused, how long until the bucket holds enough; 0 when allowed.
        remaining: tokens left in the bucket after this acquire (`inf` for an unlimited key).
        key: the bucket asked.
    """

    allowed: bool
    retry_after_s: float
    remaining: float
    key: str = ""


@dataclass(frozen=True, kw_only=True)
class RateLimits:
    """Which limit each key gets.

    Args:
        rules: a limit per exact key (`"user:alice"`) or per kind (`"user"`, `"feature"`, `"tool"`);
            the exact key wins.
        default: the limit of a key no rule matches; None leaves such keys unlimited.
    """

    rules: Mapping[str, RateLimit] = field(default_factory=dict)
    default: RateLimit | None = None

    def __post_init__(self) -> None:
        for name in self.rules:
            kind, sep, rest = name.partition(":")
            if kind not in _KINDS or (sep and not rest):
                raise ConfigError(
                    f"rate-limit rule {name!r} names no key; use a kind ({', '.join(_KINDS)}) "
                    "or a key such as 'user:alice'"
                )

    def for_key(self, key: str) -> RateLimit | None:
        """The limit `key` gets, or None when it is unlimited."""
        kind, sep, rest = key.partition(":")
        if kind not in _KINDS or not sep or not rest:
            raise ConfigError(
                f"rate-limit key {key!r} is not kind:name; use rate_key('user', 'alice') and the like "
                f"(kinds: {', '.join(_KINDS)})"
            )
        return self.rules.get(key) or self.rules.get(kind) or self.default


def _check_cost(key: str, cost: float, limit: RateLimit) -> None:
    if not cost > 0:
        raise ConfigError(f"acquire cost must be positive; got {cost!r} for {key!r}")
    if cost > limit.capacity:
        raise ConfigError(
            f"acquire of {cost:g} tokens on {key!r} can never succeed: the bucket holds at most "
            f"{limit.capacity:g}; raise its capacity or split the cost"
        )


class RateLimiter(abc.ABC):
    """Token buckets by key. Implementations: `InMemoryRateLimiter` (one process) and
    `tether.governance.redis.RedisRateLimiter` (shared by every worker).

    Args:
        limits: which limit each key gets.
    """

    def __init__(self, limits: RateLimits):
        self.limits = limits

    async def acquire(self, key: str, cost: float = 1) -> RateDecision:
        """Take `cost` tokens from `key`'s bucket if it holds them; otherwise take nothing.

        Raises:
            ConfigError: the key is malformed, or `cost` is not positive or exceeds the bucket's capacity.
            GovernanceUnavailable: a shared backend cannot be reached.
        """
        limit = self.limits.for_key(key)
        if limit is None:
            if not cost > 0:
                raise ConfigError(f"acquire cost must be positive; got {cost!r} for {key!r}")
            return RateDecision(allowed=True, retry_after_s=0.0, remaining=math.inf, key=key)
        _check_cost(key, cost, limit)
        return await self._acquire(key, float(cost), limit)

    @abc.abstractmethod
    async def _acquire(self, key: str, cost: float, limit: RateLimit) -> RateDecision:
        """Take `cost` (validated) from the bucket of `key`, shaped by `limit`, atomically."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def take(tokens: float, last: float, now: float, cost: float, limit: RateLimit) -> tuple[bool, float, float]:
    """One bucket step: refill from `last` to `now`, then take `cost` if there is enough.

    Returns:
        (allowed, tokens left, seconds to wait when refused). The Redis script mirrors this exactly.
    """
    tokens = min(limit.capacity, tokens + max(0.0, now - last) * limit.refill_per_s)
    if tokens >= cost:
        return True, tokens - cost, 0.0
    return False, tokens, (cost - tokens) / limit.refill_per_s


class InMemoryRateLimiter(RateLimiter):
    """Token buckets in this process (embedded use, tests).

    Buckets are created full on first use. Time is the clock's `monotonic()`, so a `FakeClock` drives
    refills in tests. No lock is needed: an acquire never awaits between reading and writing a bucket.

    Args:
        limits: which limit each key gets.
        clock: where time is read (default: the system clock).
    """

    def __init__(self, limits: RateLimits, *, clock: Clock | None = None):
        super().__init__(limits)
        self._clock = clock or SystemClock()
        self._buckets: dict[str, tuple[float, float]] = {}

    async def _acquire(self, key: str, cost: float, limit: RateLimit) -> RateDecision:
        now = self._clock.monotonic()
        tokens, last = self._buckets.get(key, (limit.capacity, now))
        allowed, left, wait = take(tokens, last, now, cost, limit)
        self._buckets[key] = (left, now)
        return RateDecision(allowed=allowed, retry_after_s=wait, remaining=left, key=key)
