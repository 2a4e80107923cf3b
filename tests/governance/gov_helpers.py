"""What the governance tests share: one factory per backend for each control, on the real servers."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

from tether.governance import (
    Counters,
    InMemoryCounters,
    InMemoryKillSwitch,
    InMemoryRateLimiter,
    KillSwitch,
    RateLimiter,
    RateLimits,
)
from tether.testing import FakeClock

BACKENDS = ["memory", "redis", "postgres"]
SHARED = ["redis", "postgres"]


from testservers import POSTGRES_DSN, REDIS_URL, drop_schema, new_schema_name  # noqa: E402, F401 - the test servers, for the tests here


def postgres_url(schema: str | None = None) -> str:
    """The test server as a `postgresql://` URL, optionally with `?schema=` (as governance files name it)."""
    p = conninfo_to_dict(POSTGRES_DSN)
    user = f"{p['user']}@" if p.get("user") else ""
    where = f"{p.get('host', '127.0.0.1')}:{p.get('port', 5432)}/{p.get('dbname', 'test')}"
    return f"postgresql://{user}{where}" + (f"?schema={schema}" if schema else "")


def shared_options(kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Where a shared backend of this test keeps its state: a Redis key prefix or a PostgreSQL schema,
    each the test's own and removed afterwards."""
    if kind == "redis":
        return {"prefix": request.getfixturevalue("redis_prefix")}
    assert kind == "postgres", kind
    return {"url": POSTGRES_DSN, "schema": request.getfixturevalue("gov_pg_schema")}


def counters(kind: str, request: pytest.FixtureRequest) -> Counters:
    if kind == "memory":
        return InMemoryCounters()
    if kind == "redis":
        from tether.governance.redis import RedisCounters

        return RedisCounters(**shared_options(kind, request))
    from tether.governance.postgres import PostgresCounters

    return PostgresCounters(**shared_options(kind, request))


def rate_limiter(
    kind: str, request: pytest.FixtureRequest, limits: RateLimits, clock: FakeClock | None = None
) -> RateLimiter:
    if kind == "memory":
        return InMemoryRateLimiter(limits, clock=clock)
    if kind == "redis":
        from tether.governance.redis import RedisRateLimiter

        return RedisRateLimiter(limits, clock=clock, **shared_options(kind, request))
    from tether.governance.postgres import PostgresRateLimiter

    return PostgresRateLimiter(limits, clock=clock, **shared_options(kind, request))


def kill_switch(kind: str, request: pytest.FixtureRequest, clock: FakeClock, **kw: Any) -> KillSwitch:
    if kind == "memory":
        return InMemoryKillSwitch(clock=clock, **kw)
    if kind == "redis":
        from tether.governance.redis import RedisKillSwitch

        return RedisKillSwitch(clock=clock, **shared_options(kind, request), **kw)
    from tether.governance.postgres import PostgresKillSwitch

    return PostgresKillSwitch(clock=clock, **shared_options(kind, request), **kw)
