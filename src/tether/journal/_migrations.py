"""Versioned schema migrations for the SQL stores (SQLite and PostgreSQL).

`MIGRATIONS` is the whole history of the journal's schema, oldest first. Each `Migration` carries the
statements for both backends, so the two schemas can never drift apart in what they hold. A store applies
the migrations its database lacks, in order, when it is opened, and records each one in a
`schema_migrations` table (`version`, `name`, `applied_at`) in the same transaction as its statements:
an upgrade either happens completely or not at all, and several processes opening the same database at
once upgrade it exactly once.

A database whose schema is newer than this code (written by a later tether) is refused with a clear
error rather than written to with assumptions that no longer hold.

To change the schema, append a `Migration` with the next version number; never edit one that has
shipped. A migration must keep every row written before it readable.

SQLite files written before migrations were recorded hold their version in `PRAGMA user_version` (1) and
have no `schema_migrations` table; they are adopted as version 1 and upgraded from there. The store keeps
`user_version` equal to the schema version, so that older tethers, which read only that, refuse newer
files instead of misreading them.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..exceptions import ConfigError, StoreError

if TYPE_CHECKING:
    from psycopg import AsyncConnection

__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "Migration",
    "SchemaTooNew",
    "check_schema_name",
    "migrate_postgres",
    "migrate_sqlite",
    "postgres_schema_version",
    "sqlite_schema_version",
]


@dataclass(frozen=True, kw_only=True)
class Migration:
    """One step in the schema's history.

    Attributes:
        version: its place in the history: 1, 2, 3, ... with no gaps.
        name: what it does, in a few words (recorded in `schema_migrations`).
        sqlite: the statements that apply it to an SQLite database, run in order in one transaction.
        postgres: the same for PostgreSQL, run with `search_path` set to the store's schema only, so
            unqualified names are the store's own tables.
    """

    version: int
    name: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        name="runs and their hash-chained journals",
        # IF NOT EXISTS: files written before migrations were recorded may hold these tables already.
        sqlite=(
            """
            CREATE TABLE IF NOT EXISTS runs (
                run_id        TEXT PRIMARY KEY,
                agent         TEXT NOT NULL,
                agent_ref     TEXT,
                status        TEXT NOT NULL,
                reason        TEXT NOT NULL DEFAULT '',
                input         TEXT NOT NULL,
                output        TEXT,
                model         TEXT NOT NULL,
                user_id       TEXT,
                created_at    REAL NOT NULL,
                updated_at    REAL NOT NULL,
                steps         INTEGER NOT NULL DEFAULT 0,
                input_tokens  INTEGER NOT NULL DEFAULT 0,
                output_tokens INTEGER NOT NULL DEFAULT 0,
                cost_usd      REAL NOT NULL DEFAULT 0,
                event_count   INTEGER NOT NULL DEFAULT 0,
                head_hash     TEXT NOT NULL
            )
            """,
            "CREATE INDEX IF NOT EXISTS runs_by_created ON runs (created_at DESC)",
            "CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, created_at DESC)",
            """
            CREATE TABLE IF NOT EXISTS events (
                run_id TEXT NOT NULL,
                seq    INTEGER NOT NULL,
                type   TEXT NOT NULL,
                at     REAL NOT NULL,
                data   TEXT NOT NULL,
                hash   TEXT NOT NULL,
                PRIMARY KEY (run_id, seq)
            ) WITHOUT ROWID
            """,
        ),
        # `data` is TEXT, not JSONB: the hash chain covers the exact bytes written, and JSONB would
        # normalise them (key order, whitespace, number forms) so `verify` could never recompute it.
        # Queries that need the fields cast `data::jsonb`.
        postgres=(
            """
            CREATE TABLE runs (
                run_id        TEXT PRIMARY KEY,
                agent         TEXT NOT NULL,
                agent_ref     TEXT,
                status        TEXT NOT NULL,
                reason        TEXT NOT NULL DEFAULT '',
                input         TEXT NOT NULL,
                output        TEXT,
                model         TEXT NOT NULL,
                user_id       TEXT,
                created_at    DOUBLE PRECISION NOT NULL,
                updated_at    DOUBLE PRECISION NOT NULL,
                steps         INTEGER NOT NULL DEFAULT 0,
                input_tokens  BIGINT NOT NULL DEFAULT 0,
                output_tokens BIGINT NOT NULL DEFAULT 0,
                cost_usd      DOUBLE PRECISION NOT NULL DEFAULT 0,
                event_count   INTEGER NOT NULL DEFAULT 0,
                head_hash     TEXT NOT NULL
            )
            """,
            "CREATE INDEX runs_by_created ON runs (created_at DESC)",
            "CREATE INDEX runs_by_status ON runs (status, created_at DESC)",
            """
            CREATE TABLE events (
                run_id TEXT NOT NULL,
                seq    INTEGER NOT NULL,
                type   TEXT NOT NULL,
                at     DOUBLE PRECISION NOT NULL,
                data   TEXT NOT NULL,
                hash   TEXT NOT NULL,
                PRIMARY KEY (run_id, seq)
            )
            """,
        ),
    ),
    Migration(
        version=2,
        name="run leases and the pending queue",
        # One row per run that workers may claim. `ready_at` (seconds since the epoch) puts the run in
        # the pending queue; NULL takes it out (suspended, finished). `worker_id` and `expires_at` are
        # the current lease; `epoch` grows by one on every claim and is the fencing token a worker
        # presents with each append, so a worker that lost its lease cannot write. A claim on
        # PostgreSQL reads the partial index `leases_pending` (only queued rows) and skips rows other
        # workers are claiming:
        #
        #   UPDATE leases SET worker_id = :w, epoch = epoch + 1, expires_at = :now + :ttl
        #   WHERE run_id IN (SELECT run_id FROM leases
        #                    WHERE ready_at <= :now AND (worker_id IS NULL OR expires_at < :now)
        #                    ORDER BY ready_at LIMIT :n FOR UPDATE SKIP LOCKED)
        #   RETURNING run_id, epoch
        #
        # The lease lives in its own narrow table rather than on `runs` so heartbeats rewrite a small
        # row, never contend with appends for the run's row lock, and a claim's SKIP LOCKED does not
        # skip a run just because its journal is being written.
        sqlite=(
            """
            CREATE TABLE leases (
                run_id     TEXT PRIMARY KEY REFERENCES runs (run_id) ON DELETE CASCADE,
                worker_id  TEXT,
                epoch      INTEGER NOT NULL DEFAULT 0,
                expires_at REAL,
                ready_at   REAL
            )
            """,
            "CREATE INDEX leases_pending ON leases (ready_at) WHERE ready_at IS NOT NULL",
        ),
        postgres=(
            """
            CREATE TABLE leases (
                run_id     TEXT PRIMARY KEY REFERENCES runs (run_id) ON DELETE CASCADE,
                worker_id  TEXT,
                epoch      BIGINT NOT NULL DEFAULT 0,
                expires_at DOUBLE PRECISION,
                ready_at   DOUBLE PRECISION
            )
            """,
            "CREATE INDEX leases_pending ON leases (ready_at) WHERE ready_at IS NOT NULL",
        ),
    ),
    Migration(
        version=3,
        name="idempotent run submission",
        # The key a client submitted a run with (`enqueue(..., idempotency_key=...)`). Unique, so two
        # submissions with one key, even at the same instant from two hosts, create one run: the second
        # insert conflicts and reads the first run's id instead. Partial: most runs have no key.
        sqlite=(
            "ALTER TABLE runs ADD COLUMN idempotency_key TEXT",
            "CREATE UNIQUE INDEX runs_by_idempotency_key ON runs (idempotency_key) "
            "WHERE idempotency_key IS NOT NULL",
        ),
        postgres=(
            "ALTER TABLE runs ADD COLUMN idempotency_key TEXT",
            "CREATE UNIQUE INDEX runs_by_idempotency_key ON runs (idempotency_key) "
            "WHERE idempotency_key IS NOT NULL",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version
"""The schema version this code writes."""


class SchemaTooNew(StoreError):
    """The database was upgraded by a newer tether than this one; writing to it could corrupt it."""


def _plan(current: int, target: int | None, migrations: Sequence[Migration], where: str) -> list[Migration]:
    """The migrations to apply to a database at `current` to bring it to `target` (default: the latest)."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ConfigError(f"schema migrations must be numbered 1, 2, 3, ... without gaps; got {versions}")
    latest = versions[-1] if versions else 0
    target = latest if target is None else target
    if not 0 <= target <= latest:
        raise ConfigError(
            f"cannot migrate to schema version {target}; this tether knows versions 1 to {latest}"
        )
    if current > latest:
        raise SchemaTooNew(
            f"{where} has schema version {current}, newer than this tether understands ({latest}); "
            "upgrade tether to open it"
        )
    return [m for m in migrations if current < m.version <= target]


# --- SQLite ---------------------------------------------------------------------------------------


def _sqlite_has_table(conn: sqlite3.Connection, name: str) -> bool:
    return (
        conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
        is not None
    )


def sqlite_schema_version(conn: sqlite3.Connection) -> int:
    """The schema version of an SQLite journal (0: empty, no schema yet)."""
    user_version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if not _sqlite_has_table(conn, "schema_migrations"):
        return user_version
    recorded = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
    return max(user_version, int(recorded or 0))


def migrate_sqlite(
    conn: sqlite3.Connection,
    *,
    where: str,
    target: int | None = None,
    migrations: Sequence[Migration] | None = None,
) -> int:
    """Bring an SQLite journal's schema up to date, in place.

    Args:
        conn: an open connection in autocommit mode (`isolation_level=None`), outside any transaction.
        where: how to name the database in errors (its path).
        target: the version to stop at; default the latest. Tests use it to build old databases.
        migrations: the history to apply; default `MIGRATIONS`.

    Returns:
        The schema version the database has now.

    Raises:
        SchemaTooNew: the database was written by a newer tether.
        sqlite3.Error: the database cannot be read or written (the caller says why in its own words).
    """
    history = MIGRATIONS if migrations is None else migrations
    latest = history[-1].version if history else 0
    want = latest if target is None else target
    version = sqlite_schema_version(conn)
    if version == want and (version == 0 or _sqlite_has_table(conn, "schema_migrations")):
        return version  # the common case, and the only one that must work on a read-only file
    _plan(version, target, history, f"the journal {where}")  # refuse a newer schema before locking
    # The write lock makes a concurrent opener wait here, then find the work done when it re-reads.
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = sqlite_schema_version(conn)
        pending = _plan(version, target, history, f"the journal {where}")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        recorded = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for adopted in history:
            # a file from before migrations were recorded: its versions were applied, just not written down
            if adopted.version <= version and adopted.version not in recorded:
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) "
                    "VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                    (adopted.version, adopted.name),
                )
        for migration in pending:
            for statement in migration.sqlite:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) "
                "VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                (migration.version, migration.name),
            )
            version = migration.version
        conn.execute(f"PRAGMA user_version = {int(version)}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return version


# --- PostgreSQL -----------------------------------------------------------------------------------

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# Serialises migrations of one schema across every process (the second argument is the schema's hash).
_ADVISORY_LOCK_CLASS = 0x7E7E


def check_schema_name(schema: str) -> str:
    """Return `schema` if it is a plain lowercase PostgreSQL identifier, which needs no quoting anywhere.

    Raises:
        ConfigError: it is not one.
    """
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ConfigError(
            f"PostgreSQL schema name {schema!r} is not a plain identifier; use lowercase letters, digits "
            "and underscores, starting with a letter or underscore (at most 63 characters)"
        )
    return schema


async def postgres_schema_version(conn: AsyncConnection, schema: str) -> int:
    """The schema version of a PostgreSQL journal (0: the schema or its tables do not exist yet)."""
    check_schema_name(schema)
    cur = await conn.execute("SELECT to_regclass(%s)", (f'"{schema}".schema_migrations',))
    row = await cur.fetchone()
    if row is None or row[0] is None:
        return 0
    cur = await conn.execute(f'SELECT max(version) FROM "{schema}".schema_migrations')
    row = await cur.fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0


async def migrate_postgres(
    conn: AsyncConnection,
    schema: str,
    *,
    where: str,
    target: int | None = None,
    migrations: Sequence[Migration] | None = None,
) -> int:
    """Create or upgrade the journal's tables in `schema`, in place.

    Safe to call from many processes at once: a transaction-scoped advisory lock lets one of them
    migrate while the others wait and then find nothing left to do.

    Args:
        conn: an open connection in autocommit mode, outside any transaction.
        schema: the PostgreSQL schema holding the tables; created if missing.
        where: how to name the database in errors (server and schema).
        target: the version to stop at; default the latest. Tests use it to build old databases.
        migrations: the history to apply; default `MIGRATIONS`.

    Returns:
        The schema version the database has now.

    Raises:
        SchemaTooNew: the schema was written by a newer tether.
        psycopg.Error: the server refused (the caller says why in its own words).
    """
    check_schema_name(schema)
    history = MIGRATIONS if migrations is None else migrations
    latest = history[-1].version if history else 0
    want = latest if target is None else target
    version = await postgres_schema_version(conn, schema)
    if version == want:
        return version  # the common case: no lock, no DDL, no CREATE privilege needed
    _plan(version, target, history, where)  # refuse a newer schema before taking any lock
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_ADVISORY_LOCK_CLASS, f"tether:{schema}")
        )
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(f'SET LOCAL search_path TO "{schema}"')
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        version = await postgres_schema_version(conn, schema)  # re-read: another process may have migrated
        for migration in _plan(version, target, history, where):
            for statement in migration.postgres:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
            version = migration.version
    return version
