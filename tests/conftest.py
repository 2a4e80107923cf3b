from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from testservers import (
    _START_POSTGRES,
    POSTGRES_DSN,
    REDIS_URL,
    drop_schema,
    new_schema_name,
    require_postgres,
)
from tether.journal import MemoryStore, SQLiteStore, Store


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


STORE_BACKENDS = ["memory", "sqlite", "postgres"]


@pytest.fixture
async def pg_schema() -> AsyncIterator[str]:
    """A fresh PostgreSQL schema name (the store creates it), dropped with everything in it afterwards."""
    await require_postgres()
    schema = new_schema_name()
    try:
        yield schema
    finally:
        await drop_schema(schema)


async def make_store(kind: str, tmp_path: Path) -> Store:
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SQLiteStore(tmp_path / "journal.db")
    if kind == "postgres":
        dsn = await require_postgres()
        from tether.journal.stores.postgres import PostgresStore

        return PostgresStore(dsn, schema=new_schema_name(), max_size=4)
    raise AssertionError(kind)


@pytest.fixture(params=STORE_BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    s = await make_store(request.param, tmp_path)
    try:
        yield s
    finally:
        await s.aclose()
        schema = getattr(s, "schema", None)
        if request.param == "postgres" and schema is not None:
            await drop_schema(schema)


# -- Redis (governance tests) ----------------------------------------------------------------

_START_REDIS = (
    "start it with `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no` "
    "(.ci/run does this)"
)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own on the test server; every key under it is deleted afterwards.

    Fails the test (never skips it) when the server cannot be reached.
    """
    try:
        import redis
    except ImportError:
        pytest.fail("redis is not installed: pip install -e '.[redis]'", pytrace=False)
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({exc}); {_START_REDIS}", pytrace=False)
    prefix = f"tether-test:{secrets.token_hex(6)}:"
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def gov_pg_schema() -> Iterator[str]:
    """A PostgreSQL schema name of this test's own (the backend creates it), dropped afterwards.

    Synchronous, unlike `pg_schema`, so that async tests may request it by name at run time (the
    governance backend tests). Fails the test (never skips it) when the server cannot be reached.
    """
    import psycopg

    try:
        psycopg.connect(POSTGRES_DSN, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_DSN!r} ({exc}); {_START_POSTGRES}", pytrace=False
        )
    schema = new_schema_name()
    try:
        yield schema
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')  # type: ignore[arg-type]  # generated name
