"""Circuit-breaker state in Redis, shared by every worker: one hash per breaker, replaced atomically.

A read is one round trip (the record, its version and the server's time, pipelined); a write is one Lua
script that replaces the record only if its version is unchanged, so concurrent workers never both win
a transition. Time is the server's (one clock for every worker) unless a clock is passed (tests).
Keys expire `ttl_s` after their last change, so breakers of providers no longer used cost nothing.
Install with `pip install 'tether[redis]'`.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

try:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "install 'tether[redis]' to use RedisBreakerState (pip install 'tether[redis]')"
    ) from _exc

from ..._clock import Clock
from ...exceptions import ConfigError, StoreUnavailable
from .._breaker import BreakerRecord, BreakerSnapshot, BreakerState

__all__ = ["RedisBreakerState"]

T = TypeVar("T")

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

_CAS_LUA = """
local version = redis.call('HGET', KEYS[1], 'v')
if (version or '0') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'r', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""


class RedisBreakerState(BreakerState):
    """Breaker state in Redis, for breakers shared by every worker on every host.

    Args:
        url: the server (default `redis://127.0.0.1:6379/0`); or pass `client`.
        client: a `redis.asyncio.Redis` to use instead of opening one (not closed by `aclose`).
        prefix: prepended to every key (`<prefix>breaker:<name>`).
        ttl_s: a breaker's key is deleted this long after its last change (it then reads as closed).
        clock: tests only: read time from this clock instead of the server's.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        client: aioredis.Redis | None = None,
        prefix: str = "tether:",
        ttl_s: float = 86_400.0,
        clock: Clock | None = None,
    ):
        if client is not None and url is not None:
            raise ConfigError("pass either url= or client= to RedisBreakerState, not both")
        if not ttl_s > 0:
            raise ConfigError(f"RedisBreakerState ttl_s must be positive; got {ttl_s!r}")
        self._url = url or DEFAULT_REDIS_URL
        self._owned = client is None
        self._redis: aioredis.Redis = client or aioredis.Redis.from_url(
            self._url, socket_connect_timeout=3, socket_timeout=10
        )
        self._prefix = prefix
        self._ttl_ms = max(1, math.ceil(ttl_s * 1000))
        self._clock = clock
        self._cas = self._redis.register_script(_CAS_LUA)

    def __repr__(self) -> str:
        return f"RedisBreakerState(url={_shown(self._url)!r}, prefix={self._prefix!r})"

    async def read(self, key: str) -> BreakerSnapshot:
        async def go() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hmget(self._key(key), ["v", "r"])
                if self._clock is None:
                    pipe.time()
                return await pipe.execute()

        results = await self._do(f"reading breaker {key!r}", go())
        version, raw = results[0]
        now = self._clock.now() if self._clock is not None else _server_time(results[1])
        if version is None or raw is None:
            return BreakerSnapshot(record=BreakerRecord(), version=0, now=now)
        return BreakerSnapshot(record=BreakerRecord.from_json(raw), version=int(version), now=now)

    async def write(self, key: str, record: BreakerRecord, *, version: int) -> bool:
        done = await self._do(
            f"writing breaker {key!r}",
            self._cas(
                keys=[self._key(key)], args=[str(version), str(version + 1), record.to_json(), self._ttl_ms]
            ),
        )
        return int(done) == 1

    async def aclose(self) -> None:
        """Close the connection pool, when this state opened it."""
        if self._owned:
            await self._redis.aclose()

    def _key(self, name: str) -> str:
        return f"{self._prefix}breaker:{name}"

    async def _do(self, what: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except (RedisError, OSError) as exc:
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StoreUnavailable(
                f"Redis at {_shown(self._url)} failed while {what} ({detail}); start it (redis-server) or "
                "point RedisBreakerState at a running server with url=redis://HOST:PORT/DB"
            ) from None


def _server_time(value: Any) -> float:
    seconds, micros = value
    return int(seconds) + int(micros) / 1_000_000


def _shown(url: str) -> str:
    """The URL as it may appear in an error message: without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{hostport}"))
