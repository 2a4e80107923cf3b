"""PostgreSQL backends for governance, shared by every worker: rate limits, budget counters, kill switches.

For deployments that already run PostgreSQL for the journal and would rather not add Redis. Each
operation is one SQL statement (an `INSERT ... ON CONFLICT DO UPDATE`, or a data-modifying CTE), so it
is atomic on the server and concurrent workers on any number of hosts are serialised by row locks: a
bucket is never over-drawn, a counter never loses an increment, a switch and its audit record are written
together. Time is the server's clock (one clock for every worker) unless a test passes one.

The tables live in their own schema (default `tether_governance`), created on first use. Install with
`pip install 'tether[postgres]'`. A server that cannot be reached raises `GovernanceUnavailable`, with
what to do, never a silent pass.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

try:
    import psycopg
    import psycopg_pool
    from psycopg.conninfo import conninfo_to_dict
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "install 'tether[postgres]' to use the PostgreSQL governance backends "
        "(pip install 'tether[postgres]')"
    ) from _exc

from .._clock import Clock
from ..exceptions import ConfigError
from ._counters import Counters
from ._errors import GovernanceUnavailable
from ._killswitch import KillRecord, KillSwitch
from ._ratelimit import RateDecision, RateLimit, RateLimiter, RateLimits

__all__ = ["DEFAULT_SCHEMA", "PostgresCounters", "PostgresKillSwitch", "PostgresRateLimiter"]

DEFAULT_SCHEMA = "tether_governance"
T = TypeVar("T")

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_NOW = "extract(epoch FROM now())::float8"
"""The server's clock: every worker reads the same one. In autocommit, `now()` is the statement's start."""
_SWEEP_EVERY_S = 600.0
"""How often one backend instance deletes expired rows (they are ignored, not harmful, until then)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _PostgresBackend:
    """A connection pool (opened on first use, with the tables) and errors that say what to do.

    Args:
        url: a libpq connection string or URL (`postgresql://user@host:5432/db`); empty takes everything
            from the `PG*` environment variables.
        schema: the PostgreSQL schema holding the governance tables.
        max_size: connections the pool may open at once.
        timeout_s: how long a call waits for a connection before `GovernanceUnavailable`.
    """

    def __init__(self, *, url: str, schema: str, max_size: int, timeout_s: float):
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ConfigError(
                f"PostgreSQL schema name {schema!r} is not a plain identifier; use lowercase letters, "
                "digits and underscores, starting with a letter or underscore (at most 63 characters)"
            )
        if max_size < 1 or timeout_s <= 0:
            raise ConfigError(
                f"a PostgreSQL governance backend needs max_size >= 1 and timeout_s > 0; "
                f"got max_size={max_size}, timeout_s={timeout_s}"
            )
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise ConfigError(f"not a valid PostgreSQL connection string: {_first_line(exc)}") from None
        self._conninfo = url
        self.schema = schema
        self._max_size = max_size
        self._timeout_s = timeout_s
        self._kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in params:
            self._kwargs["connect_timeout"] = 3
        if "application_name" not in params:
            self._kwargs["application_name"] = "tether-governance"
        host = params.get("host") or params.get("hostaddr") or "localhost"
        self._where = (
            f"PostgreSQL {host}:{params.get('port') or 5432}/{params.get('dbname') or ''} (schema {schema})"
        )
        self._pool: psycopg_pool.AsyncConnectionPool[Any] | None = None
        self._opening: asyncio.Lock | None = None
        self._swept = time.monotonic()
        s = f'"{schema}"'
        self._counters, self._buckets = f"{s}.counters", f"{s}.rate_buckets"
        self._engaged, self._log = f"{s}.kill_engaged", f"{s}.kill_log"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._where})"

    def _ddl(self) -> str:
        return (
            f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"; '
            f"CREATE TABLE IF NOT EXISTS {self._counters} (key TEXT PRIMARY KEY, value BIGINT NOT NULL, "
            "expires_at DOUBLE PRECISION); "
            f"CREATE TABLE IF NOT EXISTS {self._buckets} (key TEXT PRIMARY KEY, "
            "tokens DOUBLE PRECISION NOT NULL, ts DOUBLE PRECISION NOT NULL, allowed BOOLEAN NOT NULL, "
            "expires_at DOUBLE PRECISION NOT NULL); "
            f"CREATE TABLE IF NOT EXISTS {self._engaged} (field TEXT PRIMARY KEY, record TEXT NOT NULL); "
            f"CREATE TABLE IF NOT EXISTS {self._log} (id BIGSERIAL PRIMARY KEY, record TEXT NOT NULL)"
        )

    async def _prepare(self) -> None:
        """Create the schema and tables once; an advisory lock keeps two workers' first calls apart."""
        conn = await psycopg.AsyncConnection.connect(self._conninfo, **self._kwargs)
        async with conn:
            row = await (await conn.execute("SELECT to_regclass(%s)", (self._log,))).fetchone()
            if row is not None and row[0] is not None:
                return
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"tether-gov:{self.schema}",)
                )
                await conn.execute(self._ddl())  # type: ignore[arg-type]  # built from a validated name

    async def _get_pool(self) -> psycopg_pool.AsyncConnectionPool[Any]:
        if self._pool is not None:
            return self._pool
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is None:
                await self._prepare()
                pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
                    self._conninfo,
                    kwargs=self._kwargs,
                    min_size=1,
                    max_size=self._max_size,
                    timeout=self._timeout_s,
                    reconnect_timeout=self._timeout_s,
                    name=f"tether-governance:{self.schema}",
                    open=False,
                )
                await pool.open(wait=False)
                self._pool = pool
        return self._pool

    async def _do(
        self, what: str, body: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]], *, retry: bool = True
    ) -> T:
        """Run `body` on a pooled connection; driver errors become `GovernanceUnavailable`.

        A connection the server dropped (a restart) is replaced and `body` tried once more when `retry`:
        only for statements that are safe to repeat, since a commit may have been in flight.
        """
        for again in (retry, False):
            conn: psycopg.AsyncConnection[Any] | None = None
            try:
                pool = await self._get_pool()
                async with pool.connection() as conn:
                    return await body(conn)
            except psycopg_pool.PoolTimeout:
                raise GovernanceUnavailable(
                    f"{self._where} gave no connection within {self._timeout_s:g}s while {what}; "
                    "start the server (or fix the backend URL in the governance file), or raise max_size"
                ) from None
            except psycopg.OperationalError as exc:
                if again and conn is not None and conn.broken and self._pool is not None:
                    await self._pool.check()
                    continue
                raise GovernanceUnavailable(
                    f"{self._where} is unreachable while {what} ({_first_line(exc)}); start the server, "
                    'or point the backend at a running one (backend = "postgresql://USER@HOST/DB")'
                ) from None
            except psycopg.Error as exc:
                raise GovernanceUnavailable(
                    f"{self._where} refused {what}: {_first_line(exc)}; check the user's privileges on "
                    f"schema {self.schema} and the server's state"
                ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _sweep_due(self) -> bool:
        now = time.monotonic()
        if now - self._swept < _SWEEP_EVERY_S:
            return False
        self._swept = now
        return True

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


class PostgresRateLimiter(_PostgresBackend, RateLimiter):
    """Token buckets in PostgreSQL, shared by every worker: each acquire is one upsert on the bucket's
    row, so concurrent acquires from any number of workers are serialised by its row lock.

    Args:
        limits: which limit each key gets.
        url: the server, as a libpq string or `postgresql://` URL.
        schema: the schema of the governance tables.
        max_size: connections the pool may open at once.
        timeout_s: how long a call waits for a connection.
        clock: tests only: read time from this clock's `now()` instead of the server's clock.
    """

    def __init__(
        self,
        limits: RateLimits,
        *,
        url: str = "",
        schema: str = DEFAULT_SCHEMA,
        max_size: int = 4,
        timeout_s: float = 10.0,
        clock: Clock | None = None,
    ):
        RateLimiter.__init__(self, limits)
        _PostgresBackend.__init__(self, url=url, schema=schema, max_size=max_size, timeout_s=timeout_s)
        self._clock = clock
        # `_ratelimit.take` as one statement. SET sees the row as it was, so `refilled` is computed from
        # the old tokens and the new time (EXCLUDED.ts); a first use creates the bucket full, minus cost.
        refilled = "least(%(capacity)s, b.tokens + greatest(0, EXCLUDED.ts - b.ts) * %(rate)s)"
        self._sql = (
            f"INSERT INTO {self._buckets} AS b (key, tokens, ts, allowed, expires_at) "
            f"SELECT %(key)s, %(capacity)s - %(cost)s, t, true, t + %(ttl)s "
            f"FROM (SELECT COALESCE(%(now)s::float8, {_NOW}) AS t) AS clock "
            "ON CONFLICT (key) DO UPDATE SET "
            f"tokens = CASE WHEN {refilled} >= %(cost)s THEN {refilled} - %(cost)s ELSE {refilled} END, "
            f"allowed = {refilled} >= %(cost)s, "
            "ts = greatest(EXCLUDED.ts, b.ts), "
            "expires_at = greatest(EXCLUDED.ts, b.ts) + %(ttl)s "
            "RETURNING allowed, tokens"
        )

    async def _acquire(self, key: str, cost: float, limit: RateLimit) -> RateDecision:
        ttl = min(10 * 365 * 86_400.0, limit.capacity / limit.refill_per_s + 1.0)
        params = {
            "key": key,
            "capacity": float(limit.capacity),
            "rate": float(limit.refill_per_s),
            "cost": float(cost),
            "ttl": ttl,
            "now": None if self._clock is None else float(self._clock.now()),
        }
        sweep = self._sweep_due()

        async def go(conn: psycopg.AsyncConnection[Any]) -> tuple[bool, float]:
            if sweep:
                await conn.execute(f"DELETE FROM {self._buckets} WHERE expires_at < {_NOW}")  # type: ignore[arg-type]
            cur = await conn.execute(self._sql, params)  # type: ignore[arg-type]
            row = await cur.fetchone()
            assert row is not None
            return bool(row[0]), float(row[1])

        # not repeated after a dropped connection: a repeat could take the tokens twice
        allowed, tokens = await self._do(f"acquiring rate limit {key!r}", go, retry=False)
        wait = 0.0 if allowed else (cost - tokens) / limit.refill_per_s
        return RateDecision(allowed=allowed, retry_after_s=wait, remaining=tokens, key=key)


class PostgresCounters(_PostgresBackend, Counters):
    """Budget counters in PostgreSQL, shared by every worker: each `add` is one multi-row upsert, atomic
    on the server, so concurrent charges never lose an increment. Rows are locked in key order, so two
    charges touching the same counters cannot deadlock.

    Args:
        url: the server, as a libpq string or `postgresql://` URL.
        schema: the schema of the governance tables.
        max_size: connections the pool may open at once.
        timeout_s: how long a call waits for a connection.
    """

    def __init__(
        self, *, url: str = "", schema: str = DEFAULT_SCHEMA, max_size: int = 4, timeout_s: float = 10.0
    ):
        super().__init__(url=url, schema=schema, max_size=max_size, timeout_s=timeout_s)
        # An expired counter counts from zero again, and without a new TTL it no longer expires (as a
        # Redis key that expired and is incremented anew). A counter given no TTL keeps the one it has.
        self._add = (
            f"INSERT INTO {self._counters} AS c (key, value, expires_at) "
            f"SELECT k, v, {_NOW} + ttl FROM unnest(%s::text[], %s::bigint[], %s::float8[]) AS i (k, v, ttl) "
            "ON CONFLICT (key) DO UPDATE SET "
            f"value = CASE WHEN c.expires_at <= {_NOW} THEN EXCLUDED.value "
            "ELSE c.value + EXCLUDED.value END, "
            "expires_at = CASE WHEN EXCLUDED.expires_at IS NOT NULL THEN EXCLUDED.expires_at "
            f"WHEN c.expires_at <= {_NOW} THEN NULL ELSE c.expires_at END "
            "RETURNING key, value"
        )
        self._get = (
            f"SELECT key, CASE WHEN expires_at <= {_NOW} THEN 0 ELSE value END "
            f"FROM {self._counters} WHERE key = ANY(%s::text[])"
        )

    async def add(
        self, increments: Mapping[str, int], *, ttl_s: Mapping[str, float] | None = None
    ) -> dict[str, int]:
        if not increments:
            return {}
        keys = sorted(increments)
        ttls = ttl_s or {}
        values = [int(increments[k]) for k in keys]
        expiry = [float(max(1, math.ceil(ttls[k]))) if k in ttls else None for k in keys]
        sweep = self._sweep_due()

        async def go(conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
            if sweep:
                await conn.execute(f"DELETE FROM {self._counters} WHERE expires_at < {_NOW}")  # type: ignore[arg-type]
            cur = await conn.execute(self._add, (keys, values, expiry))  # type: ignore[arg-type]
            return {str(k): int(v) for k, v in await cur.fetchall()}

        # not repeated after a dropped connection: a commit in flight would be charged twice
        after = await self._do("charging budget counters", go, retry=False)
        return {key: after[key] for key in increments}

    async def get(self, keys: Sequence[str]) -> dict[str, int]:
        if not keys:
            return {}

        async def go(conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
            cur = await conn.execute(self._get, (list(keys),))  # type: ignore[arg-type]
            return {str(k): int(v) for k, v in await cur.fetchall()}

        found = await self._do("reading budget counters", go)
        return {key: found.get(key, 0) for key in keys}


class PostgresKillSwitch(_PostgresBackend, KillSwitch):
    """Kill switches persisted in PostgreSQL: every worker's next `check` sees a change, and restarts
    forget nothing. Engaged switches are rows of `kill_engaged`; every change is appended to `kill_log`
    (the audit trail) in the same statement.

    Args:
        url: the server, as a libpq string or `postgresql://` URL.
        schema: the schema of the governance tables.
        max_size: connections the pool may open at once.
        timeout_s: how long a call waits for a connection.
        known_agents: when given, engaging a switch for any other agent is refused.
        known_tools: likewise for tools.
        clock: stamps records (default: the system clock).
    """

    def __init__(
        self,
        *,
        url: str = "",
        schema: str = DEFAULT_SCHEMA,
        max_size: int = 4,
        timeout_s: float = 10.0,
        known_agents: Collection[str] | None = None,
        known_tools: Collection[str] | None = None,
        clock: Clock | None = None,
    ):
        KillSwitch.__init__(self, known_agents=known_agents, known_tools=known_tools, clock=clock)
        _PostgresBackend.__init__(self, url=url, schema=schema, max_size=max_size, timeout_s=timeout_s)

    async def _engage(self, record: KillRecord) -> None:
        data = json.dumps(record.to_dict(), separators=(",", ":"))
        sql = (
            f"WITH up AS (INSERT INTO {self._engaged} (field, record) VALUES (%(field)s, %(record)s) "
            "ON CONFLICT (field) DO UPDATE SET record = EXCLUDED.record) "
            f"INSERT INTO {self._log} (record) VALUES (%(record)s)"
        )

        async def go(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(sql, {"field": record.field, "record": data})  # type: ignore[arg-type]

        await self._do("engaging a kill switch", go, retry=False)

    async def _release(self, record: KillRecord) -> bool:
        data = json.dumps(record.to_dict(), separators=(",", ":"))
        sql = (
            f"WITH gone AS (DELETE FROM {self._engaged} WHERE field = %(field)s RETURNING field) "
            f"INSERT INTO {self._log} (record) SELECT %(record)s::text FROM gone RETURNING id"
        )

        async def go(conn: psycopg.AsyncConnection[Any]) -> bool:
            cur = await conn.execute(sql, {"field": record.field, "record": data})  # type: ignore[arg-type]
            return await cur.fetchone() is not None

        return await self._do("releasing a kill switch", go, retry=False)

    async def _lookup(self, fields: Sequence[str]) -> list[KillRecord]:
        sql = f"SELECT field, record FROM {self._engaged} WHERE field = ANY(%s::text[])"

        async def go(conn: psycopg.AsyncConnection[Any]) -> dict[str, str]:
            cur = await conn.execute(sql, (list(fields),))  # type: ignore[arg-type]
            return {str(f): str(r) for f, r in await cur.fetchall()}

        found = await self._do("checking the kill switch", go)
        return [KillRecord.from_dict(json.loads(found[f])) for f in fields if f in found]

    async def _active(self) -> list[KillRecord]:
        sql = f"SELECT record FROM {self._engaged}"

        async def go(conn: psycopg.AsyncConnection[Any]) -> list[str]:
            return [str(r) for (r,) in await (await conn.execute(sql)).fetchall()]  # type: ignore[arg-type]

        return [KillRecord.from_dict(json.loads(r)) for r in await self._do("listing kill switches", go)]

    async def _history(self, limit: int) -> list[KillRecord]:
        if limit <= 0:
            return []
        sql = (
            f"SELECT record FROM (SELECT id, record FROM {self._log} ORDER BY id DESC LIMIT %s) AS t "
            "ORDER BY id"
        )

        async def go(conn: psycopg.AsyncConnection[Any]) -> list[str]:
            return [str(r) for (r,) in await (await conn.execute(sql, (limit,))).fetchall()]  # type: ignore[arg-type]

        return [
            KillRecord.from_dict(json.loads(r)) for r in await self._do("reading kill-switch history", go)
        ]
