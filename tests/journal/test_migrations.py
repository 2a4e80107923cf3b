"""Schema migrations: databases written by older tethers are upgraded in place and stay readable."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import anyio
import psycopg
import pytest

from testservers import POSTGRES_DSN
from tether.exceptions import ConfigError, StoreError
from tether.journal import RunFinished, RunStarted, SQLiteStore, Store, UsageCharged
from tether.journal import _migrations as migrations
from tether.journal._migrations import (
    LATEST_VERSION,
    MIGRATIONS,
    Migration,
    SchemaTooNew,
    migrate_postgres,
    migrate_sqlite,
    postgres_schema_version,
    sqlite_schema_version,
)
from tether.journal.stores.postgres import PostgresStore
from tether.models import Usage

pytestmark = pytest.mark.anyio


def started(agent: str = "a", at: float = 1.0) -> RunStarted:
    return RunStarted(at=at, agent=agent, input="hi", model="test:m", instructions="")


async def write_old_runs(store: Store) -> None:
    """Runs as an older tether left them: one finished, one still running."""
    await store.create_run("done", started("a", at=1.0))
    await store.append(
        "done",
        [
            UsageCharged(at=2.0, step=1, model="test:m", usage=Usage(input_tokens=10, output_tokens=3)),
            RunFinished(at=3.0, status="completed", reason="done", output="42", steps=1, usage=Usage()),
        ],
        expected_seq=1,
    )
    await store.create_run("open", started("b", at=4.0))


async def check_old_runs_are_intact(store: Store) -> None:
    done = await store.get_run("done")
    assert (done.status, done.output, done.input_tokens, done.event_count) == ("completed", "42", 10, 3)
    assert [s.event.type for s in await store.load("done")] == [
        "run_started",
        "usage_charged",
        "run_finished",
    ]
    assert [r.run_id for r in await store.list_runs()] == ["open", "done"]
    for run_id in ("done", "open"):
        assert await store.verify(run_id) == []
    # and the old runs go on being written
    assert await store.append("open", [started("b", at=5.0)], expected_seq=1) == 2
    assert await store.verify("open") == []


def test_the_history_is_numbered_and_covers_both_backends() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, LATEST_VERSION + 1))
    assert LATEST_VERSION >= 2
    for m in MIGRATIONS:
        assert m.name and m.sqlite and m.postgres, m


def test_a_history_with_gaps_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "j.db", isolation_level=None)
    gap = (MIGRATIONS[0], Migration(version=3, name="x", sqlite=("SELECT 1",), postgres=("SELECT 1",)))
    with pytest.raises(ConfigError, match="without gaps"):
        migrate_sqlite(conn, where="j.db", migrations=gap)
    with pytest.raises(ConfigError, match="cannot migrate to schema version 7"):
        migrate_sqlite(conn, where="j.db", target=7)
    conn.close()


# --- SQLite ---------------------------------------------------------------------------------------


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


async def test_sqlite_file_from_before_migrations_is_adopted_and_upgraded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "j.db"
    with monkeypatch.context() as old_tether:
        old_tether.setattr(migrations, "MIGRATIONS", MIGRATIONS[:1])
        store = SQLiteStore(path)
        await write_old_runs(store)
        await store.aclose()
    # what tether 0.1 left: version 1 in user_version and no record of migrations
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("DROP TABLE schema_migrations")
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1 and "leases" not in _tables(conn)

    store = SQLiteStore(path)
    await check_old_runs_are_intact(store)
    await store.aclose()
    with sqlite3.connect(path, isolation_level=None) as conn:
        assert sqlite_schema_version(conn) == LATEST_VERSION
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION  # what old tethers read
        assert [
            r[:2] for r in conn.execute("SELECT version, name FROM schema_migrations ORDER BY version")
        ] == [(m.version, m.name) for m in MIGRATIONS]
        assert "leases" in _tables(conn)
        conn.execute("PRAGMA foreign_keys = ON")  # as the store sets it
        conn.execute("INSERT INTO leases (run_id, epoch, ready_at) VALUES ('open', 0, 5.0)")
        with pytest.raises(sqlite3.IntegrityError):  # a lease belongs to a run
            conn.execute("INSERT INTO leases (run_id, ready_at) VALUES ('nope', 5.0)")


async def test_sqlite_recorded_version_1_is_upgraded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "j.db"
    with monkeypatch.context() as old_tether:
        old_tether.setattr(migrations, "MIGRATIONS", MIGRATIONS[:1])
        store = SQLiteStore(path)
        await write_old_runs(store)
        await store.aclose()
    with sqlite3.connect(path) as conn:
        assert sqlite_schema_version(conn) == 1
    store = SQLiteStore(path)
    await check_old_runs_are_intact(store)
    await store.aclose()
    with sqlite3.connect(path) as conn:
        assert sqlite_schema_version(conn) == LATEST_VERSION


@pytest.mark.parametrize("how", ["user_version", "schema_migrations"])
def test_sqlite_file_from_a_newer_tether_is_refused(tmp_path: Path, how: str) -> None:
    path = tmp_path / "j.db"
    SQLiteStore(path)._conn.close()
    with sqlite3.connect(path, isolation_level=None) as conn:
        if how == "user_version":
            conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
        else:
            conn.execute(
                "INSERT INTO schema_migrations VALUES (?, 'from the future', 'x')", (LATEST_VERSION + 1,)
            )
    with pytest.raises(
        SchemaTooNew, match=f"schema version {LATEST_VERSION + 1}, newer than this tether.*upgrade"
    ):
        SQLiteStore(path)


def test_sqlite_failed_migration_changes_nothing(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "j.db", isolation_level=None)
    assert migrate_sqlite(conn, where="j.db", target=1) == 1
    broken = Migration(
        version=2, name="broken", sqlite=("CREATE TABLE half (x)", "CREATE TABLE oops ("), postgres=("",)
    )
    with pytest.raises(sqlite3.OperationalError):
        migrate_sqlite(conn, where="j.db", migrations=(MIGRATIONS[0], broken))
    assert sqlite_schema_version(conn) == 1 and "half" not in _tables(conn)
    conn.close()


def test_sqlite_concurrent_openers_migrate_once(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def open_it() -> None:
        try:
            barrier.wait()
            SQLiteStore(path)._conn.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with sqlite3.connect(path) as conn:
        assert [r[0] for r in conn.execute("SELECT version FROM schema_migrations")] == [
            m.version for m in MIGRATIONS
        ]


# --- PostgreSQL -----------------------------------------------------------------------------------


async def _pg_version(schema: str) -> int:
    async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
        return await postgres_schema_version(conn, schema)


async def test_postgres_version_1_is_upgraded_in_place(
    pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as old_tether:
        old_tether.setattr(migrations, "MIGRATIONS", MIGRATIONS[:1])
        store = PostgresStore(POSTGRES_DSN, schema=pg_schema)
        await write_old_runs(store)
        await store.aclose()
    assert await _pg_version(pg_schema) == 1

    store = PostgresStore(POSTGRES_DSN, schema=pg_schema)
    await check_old_runs_are_intact(store)
    await store.aclose()
    assert await _pg_version(pg_schema) == LATEST_VERSION
    async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
        cur = await conn.execute(f"SELECT version, name FROM {pg_schema}.schema_migrations ORDER BY version")
        assert await cur.fetchall() == [(m.version, m.name) for m in MIGRATIONS]


async def test_postgres_schema_from_a_newer_tether_is_refused(pg_schema: str) -> None:
    store = PostgresStore(POSTGRES_DSN, schema=pg_schema)
    await store.list_runs()
    await store.aclose()
    async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
        await conn.execute(
            f"INSERT INTO {pg_schema}.schema_migrations (version, name) VALUES (%s, 'from the future')",
            (LATEST_VERSION + 1,),
        )
    store = PostgresStore(POSTGRES_DSN, schema=pg_schema)
    with pytest.raises(
        StoreError, match=f"schema {pg_schema}\\) has schema version {LATEST_VERSION + 1}, newer"
    ):
        await store.list_runs()
    await store.aclose()


async def test_postgres_failed_migration_changes_nothing(pg_schema: str) -> None:
    broken = Migration(
        version=2, name="broken", sqlite=("",), postgres=("CREATE TABLE half (x int)", "CREATE TABLE oops (")
    )
    async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
        assert await migrate_postgres(conn, pg_schema, where="test", target=1) == 1
        with pytest.raises(psycopg.errors.SyntaxError):
            await migrate_postgres(conn, pg_schema, where="test", migrations=(MIGRATIONS[0], broken))
        assert await postgres_schema_version(conn, pg_schema) == 1
        cur = await conn.execute("SELECT to_regclass(%s)", (f"{pg_schema}.half",))
        assert await cur.fetchone() == (None,)


async def test_postgres_concurrent_openers_migrate_once(pg_schema: str) -> None:
    stores = [PostgresStore(POSTGRES_DSN, schema=pg_schema) for _ in range(6)]
    async with anyio.create_task_group() as tg:
        for n, store in enumerate(stores):
            tg.start_soon(store.create_run, f"r{n}", started())
    assert len(await stores[0].list_runs()) == 6
    for store in stores:
        await store.aclose()
    async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
        cur = await conn.execute(f"SELECT version FROM {pg_schema}.schema_migrations ORDER BY version")
        assert [r[0] for r in await cur.fetchall()] == [m.version for m in MIGRATIONS]


async def test_postgres_leases_support_skip_locked_claims(pg_schema: str) -> None:
    """The claim the workers will make, as sketched beside migration 2: two claimers never get one run."""
    store = PostgresStore(POSTGRES_DSN, schema=pg_schema)
    for n in range(4):
        await store.create_run(f"r{n}", started(at=float(n)))
    await store.aclose()
    claim = f"""
        UPDATE {pg_schema}.leases SET worker_id = %(w)s, epoch = epoch + 1, expires_at = %(now)s + 30
        WHERE run_id IN (SELECT run_id FROM {pg_schema}.leases
                         WHERE ready_at <= %(now)s AND (worker_id IS NULL OR expires_at < %(now)s)
                         ORDER BY ready_at LIMIT 2 FOR UPDATE SKIP LOCKED)
        RETURNING run_id, epoch
    """
    a = await psycopg.AsyncConnection.connect(POSTGRES_DSN)
    b = await psycopg.AsyncConnection.connect(POSTGRES_DSN)
    try:
        leases, runs = f"{pg_schema}.leases", f"{pg_schema}.runs"
        await a.execute(f"INSERT INTO {leases} (run_id, ready_at) SELECT run_id, created_at FROM {runs}")
        await a.commit()
        got_a = await (
            await a.execute(claim, {"w": "a", "now": 100.0})
        ).fetchall()  # a's transaction stays open
        got_b = await (await b.execute(claim, {"w": "b", "now": 100.0})).fetchall()
        await a.commit()
        await b.commit()
        assert sorted(got_a) == [("r0", 1), ("r1", 1)] and sorted(got_b) == [("r2", 1), ("r3", 1)]
        # a lease that expired is claimed again, with a higher epoch that fences the old holder out
        got_again = await (await b.execute(claim, {"w": "b", "now": 200.0})).fetchall()
        await b.commit()
        assert sorted(got_again) == [("r0", 2), ("r1", 2)]
    finally:
        await a.close()
        await b.close()


async def test_both_backends_have_the_same_tables_and_columns(tmp_path: Path, pg_schema: str) -> None:
    store = SQLiteStore(tmp_path / "j.db")
    lite = {
        table: [c[1] for c in store._conn.execute(f"PRAGMA table_info({table})")]
        for (table,) in store._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    await store.aclose()
    pg = PostgresStore(POSTGRES_DSN, schema=pg_schema)
    await pg.list_runs()
    await pg.aclose()
    async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s "
            "ORDER BY table_name, ordinal_position",
            (pg_schema,),
        )
        pg_tables: dict[str, list[str]] = {}
        for table, column in await cur.fetchall():
            pg_tables.setdefault(table, []).append(column)
    assert pg_tables == lite
