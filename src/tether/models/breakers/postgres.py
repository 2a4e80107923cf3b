"""Circuit-breaker state in PostgreSQL, shared by every worker: one row per breaker, replaced atomically.

For deployments that scale out on PostgreSQL without Redis. A read is one statement (the row and the
server's clock); a write is one `UPDATE ... WHERE version = $seen` (or an `INSERT ... ON CONFLICT DO
NOTHING` for a breaker's first record), so of two workers racing for one transition exactly one wins.
The table (`<schema>.breakers`) is created on first use. Time is the server's clock (one clock for every
worker) unless a clock is passed (tests). Install with `pip install 'tether[postgres]'`.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

try:
    import psycopg
    import psycopg_pool
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "install 'tether[postgres]' to use PostgresBreakerState (pip install 'tether[postgres]')"
    ) from _exc

from ..._clock import Clock
from ...exceptions import ConfigError, StoreUnavailable
from .._breaker import BreakerRecord, BreakerSnapshot, BreakerState

__all__ = ["PostgresBreakerState"]

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresBreakerState(BreakerState):
    """Breaker state in PostgreSQL, for breakers shared by every worker on every host.

    Args:
        conninfo: a libpq connection string (`host=127.0.0.1 dbname=tether user=tether`) or URL.
        schema: where the `breakers` table lives (created if missing; the journal's schema is fine).
        max_size: the most connections this state opens.
        clock: tests only: read time from this clock instead of the server's.
    """

    def __init__(
        self, conninfo: str, *, schema: str = "tether", max_size: int = 4, clock: Clock | None = None
    ):
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ConfigError(
                f"PostgreSQL schema name {schema!r} is not a plain identifier; use lowercase letters, digits "
                "and underscores, starting with a letter or underscore"
            )
        if max_size < 1:
            raise ConfigError(f"PostgresBreakerState max_size must be at least 1; got {max_size!r}")
        self.conninfo = conninfo
        self.schema = schema
        self._max_size = max_size
        self._clock = clock
        self._pool: psycopg_pool.AsyncConnectionPool[Any] | None = None
        self._opening = asyncio.Lock()
        table = f"{schema}.breakers"
        self._read_sql = (
            "SELECT b.version, b.record, extract(epoch from clock_timestamp())::float8 "
            f"FROM (SELECT 1) AS one LEFT JOIN {table} AS b ON b.name = %s"
        )
        self._insert_sql = (
            f"INSERT INTO {table} (name, version, record) VALUES (%s, 1, %s) ON CONFLICT (name) DO NOTHING"
        )
        self._update_sql = (
            f"UPDATE {table} SET version = version + 1, record = %s, changed_at = now() "
            "WHERE name = %s AND version = %s"
        )
        self._create_sql = (
            f"CREATE SCHEMA IF NOT EXISTS {schema}",
            f"CREATE TABLE IF NOT EXISTS {table} (name text PRIMARY KEY, version bigint NOT NULL, "
            "record text NOT NULL, changed_at timestamptz NOT NULL DEFAULT now())",
        )

    def __repr__(self) -> str:
        return f"PostgresBreakerState(schema={self.schema!r})"

    async def read(self, key: str) -> BreakerSnapshot:
        row = await self._execute(f"reading breaker {key!r}", self._read_sql, (key,), fetch=True)
        assert row is not None
        version, raw, server_now = row
        now = self._clock.now() if self._clock is not None else float(server_now)
        if version is None:
            return BreakerSnapshot(record=BreakerRecord(), version=0, now=now)
        return BreakerSnapshot(record=BreakerRecord.from_json(raw), version=int(version), now=now)

    async def write(self, key: str, record: BreakerRecord, *, version: int) -> bool:
        if version == 0:
            count = await self._execute(f"writing breaker {key!r}", self._insert_sql, (key, record.to_json()))
        else:
            count = await self._execute(
                f"writing breaker {key!r}", self._update_sql, (record.to_json(), key, version)
            )
        return count == 1

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def _execute(self, doing: str, sql: str, params: tuple[Any, ...], *, fetch: bool = False) -> Any:
        pool = await self._get_pool(doing)
        try:
            async with pool.connection() as conn:
                cursor = await conn.execute(sql, params)
                return await cursor.fetchone() if fetch else cursor.rowcount
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise self._unavailable(exc, doing) from None

    async def _get_pool(self, doing: str) -> psycopg_pool.AsyncConnectionPool[Any]:
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                try:
                    async with await psycopg.AsyncConnection.connect(
                        self.conninfo, connect_timeout=5
                    ) as conn:
                        # two workers creating the table at once would collide in the catalog: serialise them
                        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('tether.breakers'))")
                        for statement in self._create_sql:
                            await conn.execute(statement)
                except psycopg.Error as exc:
                    raise self._unavailable(exc, doing) from None
                pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
                    self.conninfo,
                    kwargs={"autocommit": True},
                    min_size=1,
                    max_size=self._max_size,
                    timeout=10.0,
                    name=f"tether-breakers:{self.schema}",
                    open=False,
                )
                await pool.open(wait=False)
                self._pool = pool
        return self._pool

    def _unavailable(self, exc: BaseException, doing: str) -> StoreUnavailable:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return StoreUnavailable(
            f"PostgreSQL (schema {self.schema}) failed while {doing} ({detail}); check that the server is up "
            "and the connection string is right"
        )
