"""What only the PostgreSQL store does: many writers, a server that is down or drops connections."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import anyio
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from testservers import POSTGRES_DSN, drop_schema, new_schema_name, require_postgres
from tether.exceptions import ConfigError, JournalConflict, StoreError, StoreUnavailable
from tether.journal import RunFinished, RunStarted, open_store
from tether.journal.stores.postgres import PostgresStore
from tether.models import Usage

pytestmark = pytest.mark.anyio


def started(at: float = 1.0) -> RunStarted:
    return RunStarted(at=at, agent="a", input="hi", model="test:m", instructions="")


@pytest.fixture
async def pg(pg_schema: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(POSTGRES_DSN, schema=pg_schema, max_size=25)
    try:
        yield store
    finally:
        await store.aclose()


async def sql(statement: str, *params: object) -> list[tuple[object, ...]]:
    """Run one statement on a connection of its own, as a person with psql (or an attacker) would."""
    async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
        cur = await conn.execute(statement, params or None)
        return await cur.fetchall() if cur.description else []


async def test_concurrent_appends_at_the_same_seq_one_wins(pg: PostgresStore, pg_schema: str) -> None:
    # Two stores stand for two worker processes, each with its own pool. In the first round only the
    # creator knows the run's head (one statement, no read) and the other must lock and read it; from
    # the second round on both know it, and both race with the single statement.
    other = PostgresStore(POSTGRES_DSN, schema=pg_schema)
    try:
        for i in range(10):
            run_id = f"r{i}"
            await pg.create_run(run_id, started())
            for seq in (1, 3, 5):
                outcomes: list[str] = []

                async def write(
                    store: PostgresStore,
                    marker: float,
                    seq: int = seq,
                    run_id: str = run_id,
                    out: list[str] = outcomes,
                ) -> None:
                    try:
                        await store.append(run_id, [started(at=marker), started(at=marker)], expected_seq=seq)
                        out.append(f"won {marker}")
                    except JournalConflict:
                        out.append("conflict")

                async with anyio.create_task_group() as tg:
                    tg.start_soon(write, pg, seq + 0.1)
                    tg.start_soon(write, other, seq + 0.2)
                assert sorted(outcomes)[0] == "conflict" and sorted(outcomes)[1].startswith("won"), outcomes
                journal = await pg.load(run_id)
                assert [e.seq for e in journal] == list(range(seq + 2))
                assert f"won {journal[-1].event.at}" in outcomes  # the stored events are the winner's
            # the last loser's next write, at the head it learnt from its conflict, goes through
            loser = other if f"won {5.1}" in outcomes else pg
            assert await loser.append(run_id, [started(at=9.0)], expected_seq=7) == 8
            assert await pg.verify(run_id) == []
    finally:
        await other.aclose()


async def test_a_writer_that_fell_behind_is_refused_and_writes_nothing(
    pg: PostgresStore, pg_schema: str
) -> None:
    other = PostgresStore(POSTGRES_DSN, schema=pg_schema)
    try:
        await pg.create_run("r1", started())
        assert await pg.append("r1", [started(at=2.0)], expected_seq=1) == 2  # pg knows the head at 2
        assert await other.append("r1", [started(at=3.0)], expected_seq=2) == 3  # ... which moves on
        with pytest.raises(JournalConflict, match="has 3 events, the writer expected 2"):
            await pg.append("r1", [started(at=4.0)], expected_seq=2)
        assert [e.event.at for e in await pg.load("r1")] == [1.0, 2.0, 3.0]
        assert await pg.append("r1", [started(at=4.0)], expected_seq=3) == 4
        assert await pg.verify("r1") == []
    finally:
        await other.aclose()


async def test_twenty_concurrent_writers_to_different_runs_all_succeed(pg: PostgresStore) -> None:
    async def worker(n: int) -> None:
        run_id = f"w{n}"
        await pg.create_run(run_id, started())
        seq = 1
        for step in range(5):
            seq = await pg.append(
                run_id, [started(at=10.0 + step), started(at=20.0 + step)], expected_seq=seq
            )
        await pg.append(
            run_id,
            [RunFinished(at=99.0, status="completed", reason="done", steps=5, usage=Usage(input_tokens=n))],
            expected_seq=seq,
        )

    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(worker, n)
    runs = await pg.list_runs(limit=100)
    assert len(runs) == 20 and {r.status for r in runs} == {"completed"}
    assert {r.event_count for r in runs} == {12}
    for n in range(20):
        assert await pg.verify(f"w{n}") == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_server_down_is_a_clear_retryable_error() -> None:
    port = _closed_port()
    store = PostgresStore(f"postgresql://root@127.0.0.1:{port}/test")
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        await store.create_run("r1", started())
    assert time.monotonic() - t0 < 5
    message = str(caught.value)
    assert f"127.0.0.1:{port}/test" in message and "Connection refused" in message
    assert "start the server" in message and "\n" not in message
    assert caught.value.retryable
    with pytest.raises(StoreUnavailable, match="cannot connect"):
        await store.list_runs()
    await store.aclose()


async def test_a_missing_database_is_not_retryable() -> None:
    await require_postgres()
    store = PostgresStore("host=127.0.0.1 user=root dbname=tether_no_such_db")
    with pytest.raises(
        StoreError, match='refused the connection: database "tether_no_such_db" does not exist'
    ) as caught:
        await store.get_run("r1")
    assert not caught.value.retryable
    await store.aclose()


async def test_connections_the_server_dropped_are_replaced_without_losing_a_write(pg_schema: str) -> None:
    # a restart or failover closes every pooled connection while it sits idle
    app = f"tether_test_{pg_schema}"
    store = PostgresStore(f"{POSTGRES_DSN} application_name={app}", schema=pg_schema, min_size=2, max_size=2)
    try:
        await store.create_run("r1", started())
        await store.get_run("r1")
        await sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", app)
        assert await store.append("r1", [started(at=2.0)], expected_seq=1) == 2
        assert [e.event.at for e in await store.load("r1")] == [1.0, 2.0]
        assert await store.verify("r1") == []
    finally:
        await store.aclose()


class Relay:
    """A TCP relay to the test server that can play a network or a server failing at a chosen moment.

    `cut_after(marker)`: the next statement containing `marker` reaches the server and is committed,
    and the connection dies before the answer gets back (a commit in flight when the network fails).
    `stop()`: every connection drops and new ones are refused (the server went away); `start()` again.
    """

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._marker: bytes | None = None

    @property
    def dsn(self) -> str:
        # no TLS, so the relay can see which statement is passing
        return make_conninfo(POSTGRES_DSN, host="127.0.0.1", hostaddr="", port=self.port, sslmode="disable")

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for transport in self._transports:
            transport.abort()
        await self._server.wait_closed()

    def cut_after(self, marker: bytes) -> None:
        self._marker = marker

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        target = conninfo_to_dict(POSTGRES_DSN)
        server_r, server_w = await asyncio.open_connection(
            target.get("host", "127.0.0.1"), target.get("port", 5432)
        )
        self._transports |= {client_w.transport, server_w.transport}
        cut = asyncio.Event()

        async def upstream() -> None:
            while data := await client_r.read(65536):
                if self._marker is not None and self._marker in data:
                    self._marker = None
                    cut.set()
                server_w.write(data)
                await server_w.drain()

        async def downstream() -> None:
            while data := await server_r.read(65536):
                if cut.is_set():  # the server answered, so it committed; the client never hears it
                    client_w.transport.abort()
                    server_w.transport.abort()
                    return
                client_w.write(data)
                await client_w.drain()

        with contextlib.suppress(OSError):
            await asyncio.gather(upstream(), downstream(), return_exceptions=True)
        client_w.transport.abort()
        server_w.transport.abort()


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    await require_postgres()
    r = Relay()
    await r.start()
    try:
        yield r
    finally:
        with contextlib.suppress(Exception):
            await r.stop()


async def test_an_append_whose_commit_was_in_flight_is_recognised_on_retry(
    relay: Relay, pg_schema: str
) -> None:
    store = PostgresStore(relay.dsn, schema=pg_schema)
    try:
        await store.create_run("r1", started())
        relay.cut_after(b"WITH run AS (UPDATE")
        # the store retries on a new connection, finds its own events at the head and reports success,
        # where a blind retry would have reported a conflict with itself
        assert await store.append("r1", [started(at=2.0), started(at=3.0)], expected_seq=1) == 3
        assert [e.event.at for e in await store.load("r1")] == [1.0, 2.0, 3.0]
        assert await store.verify("r1") == []
        assert await store.append("r1", [started(at=4.0)], expected_seq=3) == 4
    finally:
        await store.aclose()


async def test_a_run_creation_whose_commit_was_in_flight_is_recognised_on_retry(
    relay: Relay, pg_schema: str
) -> None:
    store = PostgresStore(relay.dsn, schema=pg_schema)
    try:
        await store.list_runs()
        relay.cut_after(b"WITH run AS (INSERT")
        await store.create_run("r1", started())
        assert [e.event for e in await store.load("r1")] == [started()]
        with pytest.raises(StoreError, match="exists already"):  # a second creation is still refused
            await store.create_run("r1", started())
    finally:
        await store.aclose()


async def test_the_server_going_away_and_coming_back(relay: Relay, pg_schema: str) -> None:
    store = PostgresStore(relay.dsn, schema=pg_schema, timeout_s=1.0)
    try:
        await store.create_run("r1", started())
        await relay.stop()
        with pytest.raises(
            StoreUnavailable, match=r"cannot connect to PostgreSQL 127\.0\.0\.1.*start the server"
        ):
            await store.append("r1", [started(at=2.0)], expected_seq=1)
        await relay.start()
        # what a worker does: retry with backoff until the store answers
        seq = None
        for _ in range(20):
            try:
                seq = await store.append("r1", [started(at=2.0)], expected_seq=1)
                break
            except StoreUnavailable:
                await anyio.sleep(0.5)
        assert seq == 2
        assert [e.event.at for e in await store.load("r1")] == [1.0, 2.0] and await store.verify("r1") == []
    finally:
        await store.aclose()


async def test_a_cancelled_append_is_never_torn(pg: PostgresStore, pg_schema: str) -> None:
    await pg.create_run("r1", started())
    # another session holds the run's row lock, so the append is mid-transaction when its caller is cancelled
    async with await psycopg.AsyncConnection.connect(POSTGRES_DSN) as blocker:
        await blocker.execute(f"SELECT 1 FROM {pg_schema}.runs WHERE run_id = 'r1' FOR UPDATE")
        async with anyio.create_task_group() as tg:

            async def cancelled_writer() -> None:
                with anyio.move_on_after(0.1):
                    await pg.append("r1", [started(at=2.0), started(at=3.0)], expected_seq=1)

            tg.start_soon(cancelled_writer)
            await anyio.sleep(0.4)  # past the writer's deadline, while it still waits for the lock
            await blocker.commit()
    info = await pg.get_run("r1")
    assert info.event_count == 3 and [e.seq for e in await pg.load("r1")] == [0, 1, 2]
    assert await pg.verify("r1") == []


async def test_a_stuck_lock_holder_gives_a_clear_error(pg_schema: str) -> None:
    store = PostgresStore(POSTGRES_DSN, schema=pg_schema, timeout_s=0.3)
    try:
        await store.create_run("r1", started())
        async with await psycopg.AsyncConnection.connect(POSTGRES_DSN) as blocker:
            await blocker.execute(f"SELECT 1 FROM {pg_schema}.runs WHERE run_id = 'r1' FOR UPDATE")
            with pytest.raises(StoreUnavailable, match="another writer's lock on the run"):
                await store.append("r1", [started(at=2.0)], expected_seq=1)
        assert await store.append("r1", [started(at=2.0)], expected_seq=1) == 2
    finally:
        await store.aclose()


async def _journal_with_events(store: PostgresStore) -> None:
    await store.create_run("r1", started())
    for i in range(3):
        await store.append("r1", [started(at=2.0 + i)], expected_seq=1 + i)


@pytest.mark.parametrize(
    ("tamper", "finding"),
    [
        (
            "UPDATE {s}.events SET data = replace(data, '\"hi\"', '\"HI\"') WHERE seq = 2",
            "event 2 does not match",
        ),
        ("DELETE FROM {s}.events WHERE seq = 1", "event 1 is missing"),
        ("DELETE FROM {s}.events WHERE seq = 3", "events were removed from the end"),
        (
            "UPDATE {s}.events SET seq = -1 WHERE seq = 1; UPDATE {s}.events SET seq = 1 WHERE seq = 2; "
            "UPDATE {s}.events SET seq = 2 WHERE seq = -1",
            "event 1 does not match",
        ),
    ],
    ids=["edited", "removed", "truncated", "reordered"],
)
async def test_tampering_is_detected(pg: PostgresStore, pg_schema: str, tamper: str, finding: str) -> None:
    await _journal_with_events(pg)
    assert await pg.verify("r1") == []
    await sql(tamper.replace("{s}", pg_schema))
    problems = await pg.verify("r1")
    assert problems and finding in problems[0]


async def test_a_row_that_does_not_parse_is_reported(pg: PostgresStore, pg_schema: str) -> None:
    await _journal_with_events(pg)
    await sql(f'UPDATE {pg_schema}.events SET data = \'{{"type": "nonsense"}}\' WHERE seq = 2')
    with pytest.raises(StoreError, match=r"event 2 of run 'r1' .* cannot be read.*tether audit verify r1"):
        await pg.load("r1")
    assert "event 2 does not match" in (await pg.verify("r1"))[0]


async def test_events_are_stored_as_the_exact_json_their_hash_covers(
    pg: PostgresStore, pg_schema: str
) -> None:
    event = started().model_copy(
        update={"input": 'ünïcode, "quotes" and \\ slashes', "metadata": {"b": 1, "a": 2}}
    )
    await pg.create_run("r1", event)
    ((data,),) = await sql(f"SELECT data FROM {pg_schema}.events WHERE run_id = 'r1'")
    assert data == event.model_dump_json()
    assert (await pg.load("r1"))[0].event == event


async def test_schemas_keep_journals_apart(pg: PostgresStore) -> None:
    schema = new_schema_name()
    other = PostgresStore(POSTGRES_DSN, schema=schema)
    try:
        await pg.create_run("r1", started())
        assert await other.list_runs() == []
        await other.create_run("r1", started())  # the same id is free in another schema
    finally:
        await other.aclose()
        await drop_schema(schema)


async def test_open_store_urls(pg_schema: str) -> None:
    url = f"postgresql://root@127.0.0.1:5432/test?schema={pg_schema}&max_size=3&sslmode=disable"
    store = open_store(url)
    assert isinstance(store, PostgresStore)
    assert (store.schema, store.min_size, store.max_size) == (pg_schema, 1, 3)
    await store.create_run("r1", started())  # libpq accepted what was left of the URL
    await store.aclose()
    assert isinstance(open_store("postgres://localhost/x"), PostgresStore)
    assert open_store("postgres://localhost/x").schema == "tether"
    with pytest.raises(ConfigError, match="max_size must be a whole number") as caught:
        open_store("postgresql://alice:s3cret@localhost/x?max_size=many")
    assert "s3cret" not in str(caught.value) and "alice:***@localhost" in str(caught.value)
    with pytest.raises(ConfigError, match="not a plain identifier"):
        open_store('postgresql://localhost/x?schema=a"b')
    with pytest.raises(ConfigError, match="not a valid PostgreSQL connection string"):
        open_store("postgresql://localhost/x?nonsense=1")


def test_configuration_errors_and_repr() -> None:
    with pytest.raises(ConfigError, match="pool sizes"):
        PostgresStore("", min_size=5, max_size=2)
    with pytest.raises(ConfigError, match="not a plain identifier"):
        PostgresStore("", schema="Tether")
    store = PostgresStore("postgresql://alice:s3cret@db.example:6432/prod", schema="agents")
    assert "s3cret" not in repr(store) and "alice" in repr(store)
    assert store.where == "PostgreSQL db.example:6432/prod (schema agents)"


def test_a_store_closes_with_its_event_loop_and_serves_the_next_one() -> None:
    anyio.run(require_postgres)
    schema = new_schema_name()
    store = PostgresStore(POSTGRES_DSN, schema=schema)

    async def first() -> None:
        await store.create_run("r1", started())
        # no aclose(): the loop ending closes the pool (a pool left open on a closed loop leaves worker
        # coroutines that fail when collected, and once made this test's shutdown hang)

    async def second() -> None:
        assert (await store.get_run("r1")).agent == "a"

        def from_another_loop() -> None:
            anyio.run(store.get_run, "r1")

        # while this loop runs, the store is its own: another loop, at the same time, is refused
        with pytest.raises(StoreError, match=r"open on another event loop, which is still running"):
            await anyio.to_thread.run_sync(from_another_loop)
        await store.aclose()
        await store.aclose()  # twice is fine

    try:
        anyio.run(first)
        assert store._pool is None  # closed as its loop shut down
        anyio.run(second)
        gc.collect()  # a leaked pool worker would fail here, as an unraisable exception of this test
    finally:
        anyio.run(drop_schema, schema)


def test_without_psycopg_the_error_names_the_extra() -> None:
    script = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from tether.exceptions import ConfigError\n"
        "from tether.journal import open_store\n"
        "try:\n"
        "    open_store('postgresql://localhost/x')\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
        "import tether.journal.stores.postgres\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.startswith(
        "install 'tether[postgres]' to use PostgresStore (store 'postgresql://localhost/x')"
    )
    assert done.stderr.strip().endswith("ImportError: install 'tether[postgres]' to use PostgresStore")
