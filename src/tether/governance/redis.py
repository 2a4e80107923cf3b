"""Redis backends for governance, shared by every worker: rate limits, budget counters, kill switches.

Each operation is one atomic step on the server (a Lua script or a MULTI transaction), so workers on
any number of hosts see one bucket, one counter, one switch. Install with `pip install 'tether[redis]'`.
A server that cannot be reached raises `GovernanceUnavailable`, with what to do, never a silent pass.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Collection, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

try:
    import redis.asyncio as aioredis
    from redis.exceptions import ConnectionError as _RedisConnectionError
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError as _RedisTimeoutError
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "install 'tether[redis]' to use the Redis governance backends (pip install 'tether[redis]')"
    ) from _exc

from .._clock import Clock
from ..exceptions import ConfigError
from ._counters import Counters
from ._errors import GovernanceUnavailable
from ._killswitch import KillRecord, KillSwitch
from ._ratelimit import RateDecision, RateLimit, RateLimiter, RateLimits

__all__ = ["DEFAULT_REDIS_URL", "RedisCounters", "RedisKillSwitch", "RedisRateLimiter"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
T = TypeVar("T")

_MAX_TTL_MS = 10 * 365 * 86_400_000


def _shown(url: str) -> str:
    """The URL as it may appear in an error message: without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{hostport}"))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _RedisBackend:
    """A connection (given, or opened from a URL) and errors that say what to do."""

    def __init__(self, *, url: str | None, client: aioredis.Redis | None, prefix: str):
        if client is not None and url is not None:
            raise ConfigError("pass either url= or client= to a Redis backend, not both")
        self._url = url or DEFAULT_REDIS_URL
        self._owned = client is None
        self._redis: aioredis.Redis = client or aioredis.Redis.from_url(
            self._url, socket_connect_timeout=3, socket_timeout=10
        )
        self._prefix = prefix

    async def _do(self, what: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except (_RedisConnectionError, _RedisTimeoutError, OSError) as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise GovernanceUnavailable(
                f"Redis at {_shown(self._url)} is unreachable while {what} ({detail}); start it "
                "(redis-server) or point the backend at a running server with url=redis://HOST:PORT/DB"
            ) from None
        except RedisError as exc:
            raise GovernanceUnavailable(
                f"Redis at {_shown(self._url)} refused {what}: {exc}; check the server's state and version"
            ) from None

    async def aclose(self) -> None:
        """Close the connection pool, when this backend opened it."""
        if self._owned:
            await self._redis.aclose()


# The bucket step of `_ratelimit.take`, run on the server so that acquiring is one atomic step whatever
# the number of workers. Time is the server's (one clock for every worker) unless the caller passes one.
_BUCKET_LUA = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local last = tonumber(state[2])
if tokens == nil or last == nil then
  tokens = capacity
  last = now
end
local elapsed = now - last
if elapsed < 0 then elapsed = 0 end
tokens = math.min(capacity, tokens + elapsed * rate)
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = (cost - tokens) / rate
end
local ts = math.max(now, last)
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'ts', string.format('%.17g', ts))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {allowed, string.format('%.17g', tokens), string.format('%.17g', wait)}
"""


class RedisRateLimiter(_RedisBackend, RateLimiter):
    """Token buckets in Redis, shared by every worker: each acquire is one Lua script.

    A bucket's key expires once it would have refilled completely, so idle keys cost no memory.

    Args:
        limits: which limit each key gets.
        url: the server (default `redis://127.0.0.1:6379/0`); or pass `client`.
        client: a `redis.asyncio.Redis` to use instead of opening one (it is not closed by `aclose`).
        prefix: prepended to every Redis key this limiter writes.
        clock: tests only: read time from this clock's `now()` instead of the server's clock.
    """

    def __init__(
        self,
        limits: RateLimits,
        *,
        url: str | None = None,
        client: aioredis.Redis | None = None,
        prefix: str = "tether:",
        clock: Clock | None = None,
    ):
        RateLimiter.__init__(self, limits)
        _RedisBackend.__init__(self, url=url, client=client, prefix=prefix)
        self._clock = clock
        self._script = self._redis.register_script(_BUCKET_LUA)

    async def _acquire(self, key: str, cost: float, limit: RateLimit) -> RateDecision:
        ttl_ms = min(_MAX_TTL_MS, math.ceil(limit.capacity / limit.refill_per_s * 1000) + 1000)
        now = -1.0 if self._clock is None else self._clock.now()
        allowed, tokens, wait = await self._do(
            f"acquiring rate limit {key!r}",
            self._script(
                keys=[f"{self._prefix}rate:{key}"],
                args=[repr(limit.capacity), repr(limit.refill_per_s), repr(cost), repr(now), ttl_ms],
            ),
        )
        return RateDecision(
            allowed=int(allowed) == 1,
            retry_after_s=float(_text(wait)),
            remaining=float(_text(tokens)),
            key=key,
        )


class RedisCounters(_RedisBackend, Counters):
    """Budget counters in Redis, shared by every worker: each `add` is one MULTI/EXEC transaction of
    INCRBY (and EXPIRE for day-keyed and run counters), so concurrent charges never lose an increment.

    Args:
        url: the server (default `redis://127.0.0.1:6379/0`); or pass `client`.
        client: a `redis.asyncio.Redis` to use instead of opening one (it is not closed by `aclose`).
        prefix: prepended to every Redis key.
    """

    def __init__(
        self, *, url: str | None = None, client: aioredis.Redis | None = None, prefix: str = "tether:"
    ):
        super().__init__(url=url, client=client, prefix=prefix)

    async def add(
        self, increments: Mapping[str, int], *, ttl_s: Mapping[str, float] | None = None
    ) -> dict[str, int]:
        async def go() -> list[Any]:
            async with self._redis.pipeline(transaction=True) as pipe:
                for key, amount in increments.items():
                    pipe.incrby(self._prefix + key, int(amount))
                for key, ttl in (ttl_s or {}).items():
                    pipe.expire(self._prefix + key, max(1, math.ceil(ttl)))
                return await pipe.execute()

        results = await self._do("charging budget counters", go())
        return {key: int(value) for key, value in zip(increments, results, strict=False)}

    async def get(self, keys: Sequence[str]) -> dict[str, int]:
        if not keys:
            return {}
        values = await self._do("reading budget counters", self._redis.mget([self._prefix + k for k in keys]))
        return {key: int(_text(v)) if v is not None else 0 for key, v in zip(keys, values, strict=True)}


_RELEASE_LUA = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[2])
  return 1
end
return 0
"""


class RedisKillSwitch(_RedisBackend, KillSwitch):
    """Kill switches persisted in Redis: every worker's next `check` sees a change, and restarts forget
    nothing. Engaged switches live in one hash, their history in one list (the audit trail).

    Args:
        url: the server (default `redis://127.0.0.1:6379/0`); or pass `client`.
        client: a `redis.asyncio.Redis` to use instead of opening one (it is not closed by `aclose`).
        prefix: prepended to every Redis key.
        known_agents: when given, engaging a switch for any other agent is refused.
        known_tools: likewise for tools.
        clock: stamps records (default: the system clock).
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        client: aioredis.Redis | None = None,
        prefix: str = "tether:",
        known_agents: Collection[str] | None = None,
        known_tools: Collection[str] | None = None,
        clock: Clock | None = None,
    ):
        KillSwitch.__init__(self, known_agents=known_agents, known_tools=known_tools, clock=clock)
        _RedisBackend.__init__(self, url=url, client=client, prefix=prefix)
        self._engaged_key = f"{prefix}kill:engaged"
        self._log_key = f"{prefix}kill:log"
        self._release_script = self._redis.register_script(_RELEASE_LUA)

    async def _engage(self, record: KillRecord) -> None:
        data = json.dumps(record.to_dict(), separators=(",", ":"))

        async def go() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(self._engaged_key, record.field, data)
                pipe.rpush(self._log_key, data)
                await pipe.execute()

        await self._do("engaging a kill switch", go())

    async def _release(self, record: KillRecord) -> bool:
        data = json.dumps(record.to_dict(), separators=(",", ":"))
        done = await self._do(
            "releasing a kill switch",
            self._release_script(keys=[self._engaged_key, self._log_key], args=[record.field, data]),
        )
        return int(done) == 1

    async def _lookup(self, fields: Sequence[str]) -> list[KillRecord]:
        values = await self._do(
            "checking the kill switch", self._redis.hmget(self._engaged_key, list(fields))
        )
        return [KillRecord.from_dict(json.loads(_text(v))) for v in values if v is not None]

    async def _active(self) -> list[KillRecord]:
        values = await self._do("listing kill switches", self._redis.hvals(self._engaged_key))
        return [KillRecord.from_dict(json.loads(_text(v))) for v in values]

    async def _history(self, limit: int) -> list[KillRecord]:
        if limit <= 0:
            return []
        values = await self._do("reading kill-switch history", self._redis.lrange(self._log_key, -limit, -1))
        return [KillRecord.from_dict(json.loads(_text(v))) for v in values]
