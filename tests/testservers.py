"""PostgreSQL helpers the tests share: import them from here (`from testservers import ...`), never from
`conftest` (pytest loads every directory's conftest.py under that one module name)."""

from __future__ import annotations

import os
import secrets

import pytest

POSTGRES_DSN = os.environ.get("TETHER_TEST_POSTGRES", "host=127.0.0.1 port=5432 dbname=test user=root")
"""The server the PostgreSQL tests use; each test gets a schema of its own there, dropped afterwards."""

_START_POSTGRES = (
    "start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
    "(.ci/run does this), or point TETHER_TEST_POSTGRES at a server (a libpq connection string)"
)


async def require_postgres() -> str:
    """The test server's connection string; fails the test (never skips it) when it cannot be reached."""
    try:
        import psycopg
    except ImportError:
        pytest.fail("psycopg is not installed: pip install -e '.[postgres]'", pytrace=False)
    try:
        conn = await psycopg.AsyncConnection.connect(POSTGRES_DSN, connect_timeout=3)
    except psycopg.OperationalError as exc:
        reason = (str(exc).strip().splitlines() or ["unreachable"])[0]
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_DSN!r} ({reason}); {_START_POSTGRES}", pytrace=False
        )
    await conn.close()
    return POSTGRES_DSN


def new_schema_name() -> str:
    return f"tether_test_{secrets.token_hex(6)}"


async def drop_schema(schema: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


REDIS_URL = "redis://127.0.0.1:6379/0"
"""The Redis the tests use (each test under a key prefix of its own)."""
