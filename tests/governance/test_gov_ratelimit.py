"""Token buckets: exact refill on a fake clock, buckets shared through Redis or PostgreSQL, a clear error
when the server is not there."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import anyio
import pytest
from gov_helpers import BACKENDS, POSTGRES_DSN, SHARED, rate_limiter

from tether import ConfigError
from tether.governance import (
    GovernanceUnavailable,
    InMemoryRateLimiter,
    RateDecision,
    RateLimit,
    RateLimiter,
    RateLimits,
    rate_key,
)
from tether.testing import FakeClock

pytestmark = pytest.mark.anyio

LIMITS = RateLimits(rules={"user": RateLimit(capacity=3, refill_per_s=0.5)})


@pytest.fixture(params=BACKENDS)
def limiter_and_clock(request: pytest.FixtureRequest) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    return rate_limiter(request.param, request, LIMITS, clock), clock


async def test_bucket_refills_exactly(limiter_and_clock: tuple[RateLimiter, FakeClock]) -> None:
    limiter, clock = limiter_and_clock
    try:
        await _refills_exactly(limiter, clock)
    finally:
        await limiter.aclose()


async def _refills_exactly(limiter: RateLimiter, clock: FakeClock) -> None:
    key = rate_key("user", "alice")
    got = [await limiter.acquire(key) for _ in range(3)]
    assert [d.allowed for d in got] == [True, True, True]
    assert [d.remaining for d in got] == [2, 1, 0]
    refused = await limiter.acquire(key)
    assert refused == RateDecision(allowed=False, retry_after_s=2.0, remaining=0.0, key=key)

    clock.advance(1.0)  # half a token: still refused, and told exactly how long is left
    half = await limiter.acquire(key)
    assert (half.allowed, half.retry_after_s, half.remaining) == (False, 1.0, 0.5)
    clock.advance(1.0)
    one = await limiter.acquire(key)
    assert (one.allowed, one.remaining) == (True, 0.0)

    clock.advance(3600)  # refill stops at capacity
    assert (await limiter.acquire(key, cost=3)).remaining == 0.0
    assert not (await limiter.acquire(key)).allowed
    # buckets are per key
    assert (await limiter.acquire(rate_key("user", "bob"))).remaining == 2


async def test_rules_resolve_exact_key_then_kind_then_default() -> None:
    limits = RateLimits(
        rules={
            "user": RateLimit(capacity=5, refill_per_s=1),
            "user:vip": RateLimit(capacity=50, refill_per_s=1),
        },
        default=RateLimit.per_minute(60, burst=2),
    )
    limiter = InMemoryRateLimiter(limits, clock=FakeClock())
    assert (await limiter.acquire("user:vip")).remaining == 49
    assert (await limiter.acquire("user:ann")).remaining == 4
    assert (await limiter.acquire("tool:refund")).remaining == 1
    unlimited = InMemoryRateLimiter(RateLimits(), clock=FakeClock())
    assert (await unlimited.acquire("feature:search", cost=10**6)).remaining == math.inf


async def test_bad_keys_rules_and_costs_are_config_errors() -> None:
    limiter = InMemoryRateLimiter(LIMITS, clock=FakeClock())
    with pytest.raises(ConfigError, match="can never succeed"):
        await limiter.acquire("user:a", cost=4)
    with pytest.raises(ConfigError, match="not kind:name"):
        await limiter.acquire("alice")
    with pytest.raises(ConfigError, match="must be positive"):
        await limiter.acquire("user:a", cost=0)
    with pytest.raises(ConfigError, match="names no key"):
        RateLimits(rules={"users": RateLimit(capacity=1, refill_per_s=1)})
    with pytest.raises(ConfigError, match="capacity must be positive"):
        RateLimit(capacity=0, refill_per_s=1)


@pytest.mark.parametrize("shared", SHARED)
async def test_two_clients_never_over_admit(shared: str, request: pytest.FixtureRequest) -> None:
    # a bucket that does not refill within the test: exactly `capacity` acquires may succeed
    limits = RateLimits(rules={"feature": RateLimit(capacity=37, refill_per_s=1e-6)})
    a = rate_limiter(shared, request, limits)
    b = rate_limiter(shared, request, limits)
    results: list[bool] = []

    async def hit(limiter: RateLimiter) -> None:
        results.append((await limiter.acquire("feature:search")).allowed)

    async with anyio.create_task_group() as tg:
        for i in range(200):
            tg.start_soon(hit, a if i % 2 else b)
    await a.aclose()
    await b.aclose()
    assert len(results) == 200
    assert results.count(True) == 37


WORKER = textwrap.dedent(
    """
    import sys, anyio
    from tether.governance import RateLimit, RateLimits

    async def main():
        limits = RateLimits(rules={"tool": RateLimit(capacity=60, refill_per_s=1e-6)})
        if sys.argv[1] == "redis":
            from tether.governance.redis import RedisRateLimiter
            limiter = RedisRateLimiter(limits, prefix=sys.argv[2])
        else:
            from tether.governance.postgres import PostgresRateLimiter
            limiter = PostgresRateLimiter(limits, url=sys.argv[3], schema=sys.argv[2])
        allowed = []
        async def hit():
            allowed.append((await limiter.acquire("tool:refund")).allowed)
        async with anyio.create_task_group() as tg:
            for _ in range(100):
                tg.start_soon(hit)
        await limiter.aclose()
        print(sum(allowed))

    anyio.run(main)
    """
)


@pytest.mark.parametrize("shared", SHARED)
def test_two_processes_share_one_bucket(shared: str, request: pytest.FixtureRequest) -> None:
    where = request.getfixturevalue("redis_prefix" if shared == "redis" else "gov_pg_schema")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, shared, where, POSTGRES_DSN], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    counts = [int(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(counts) == 60, counts


async def test_redis_unreachable_says_what_to_do() -> None:
    from tether.governance.redis import RedisRateLimiter

    limiter = RedisRateLimiter(LIMITS, url="redis://:secret@127.0.0.1:1/0")
    with pytest.raises(GovernanceUnavailable) as info:
        await limiter.acquire("user:alice")
    await limiter.aclose()
    message = str(info.value)
    assert "\n" not in message and "secret" not in message
    assert "127.0.0.1:1" in message and "start it" in message
    assert info.value.retryable


async def test_postgres_unreachable_says_what_to_do() -> None:
    from tether.governance.postgres import PostgresRateLimiter

    limiter = PostgresRateLimiter(LIMITS, url="postgresql://root:secret@127.0.0.1:1/test")
    with pytest.raises(GovernanceUnavailable) as info:
        await limiter.acquire("user:alice")
    await limiter.aclose()
    message = str(info.value)
    assert "\n" not in message and "secret" not in message
    assert "127.0.0.1:1" in message and "start the server" in message
    assert "acquiring rate limit 'user:alice'" in message
