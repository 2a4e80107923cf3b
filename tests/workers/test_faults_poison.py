"""A poison run: one whose journal has a row that does not parse, claimed by workers (SQLite, PostgreSQL).

The defined outcome: a worker that claims it logs the error (naming the run, the event and
`tether audit verify`), gives the run back with a delay that doubles each time, and after `max_attempts`
attempts ends it `failed` with the reason. It never crash-loops and never holds up the other runs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import inproc_agents as agents
import psycopg
import pytest
from structlog.testing import capture_logs
from worker_helpers import (
    POSTGRES_DSN,
    all_terminal,
    drop_schema,
    new_schema_name,
    require_postgres,
    wait_for,
)

from tether import ConfigError
from tether.exceptions import StoreError
from tether.journal import SQLiteStore, Store
from tether.journal.stores.postgres import PostgresStore
from tether.workers import Worker, submit

pytestmark = pytest.mark.anyio

GARBLED = '{"type": "run_started", "at": 1.0, "agent": "recorder", "inp'


@pytest.fixture(autouse=True)
def fresh_agents() -> Iterator[None]:
    agents.reset()
    yield
    agents.reset()


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Store, str]]:
    """A store, and where its rows can be edited behind its back (a file, or a schema)."""
    if request.param == "sqlite":
        store: Store = SQLiteStore(tmp_path / "j.db")
        yield store, str(tmp_path / "j.db")
        await store.aclose()
        return
    await require_postgres()
    schema = new_schema_name()
    store = PostgresStore(POSTGRES_DSN, schema=schema, max_size=4)
    try:
        yield store, schema
    finally:
        await store.aclose()
        await drop_schema(schema)


async def garble(store: Store, where: str, run_id: str, seq: int) -> None:
    if isinstance(store, SQLiteStore):
        with sqlite3.connect(where) as conn:
            conn.execute("UPDATE events SET data = ? WHERE run_id = ? AND seq = ?", (GARBLED, run_id, seq))
        return
    async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
        await conn.execute(
            f'UPDATE "{where}".events SET data = %s WHERE run_id = %s AND seq = %s', (GARBLED, run_id, seq)
        )


async def test_a_poison_run_is_given_up_with_a_growing_delay_then_failed_while_others_flow(
    backend: tuple[Store, str],
) -> None:
    store, where = backend
    poison = await submit(store, agents.agent, "job poison: record 1 2 3")
    await garble(store, where, poison, 0)
    healthy = [await submit(store, agents.agent, f"job h{i}: record 1 2 3") for i in range(6)]

    with capture_logs() as logs:
        worker = Worker(store, concurrency=2, poll_s=0.02, retry_delay_s=0.1, max_attempts=3)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_for(lambda: all_terminal(store, [*healthy, poison]), timeout_s=30)
            worker.drain()

    for run_id in healthy:  # the poison run held up nothing
        info = await store.get_run(run_id)
        assert (info.status, info.output) == ("completed", "recorded 3 entries")
        assert await store.verify(run_id) == []

    info = await store.get_run(poison)
    assert info.status == "failed"
    assert info.reason.startswith("given up after 3 attempts: its journal cannot be read: event 0 of run ")
    assert f"run `tether audit verify {poison}`" in info.reason
    assert (worker.stats.given_up, worker.stats.errors, worker.stats.finished) == (1, 3, 6)
    assert await store.claim("anyone", lease_s=30) is None  # out of the queue for good

    about = [e for e in logs if e.get("run_id") == poison and e["log_level"] == "error"]
    assert [e["attempt"] for e in about] == [1, 2, 3]
    assert [e.get("retry_in_s") for e in about] == [0.1, 0.2, None]  # doubling, then no retry
    assert all("cannot be read" in e["error"] and "tether audit verify" in e["error"] for e in about)
    assert (
        about[-1]["event"]
        == "cannot run this run: its journal cannot be read; giving up, the run is ended failed"
    )

    # the end is journaled after the unreadable row; the integrity check still shows the damage
    with pytest.raises(StoreError, match="event 0 of run"):
        await store.load(poison)
    assert "event 0 does not match its hash" in (await store.verify(poison))[0]


class CrashingRunner:
    """Fault injection: the worker's runner raises (a bug before the run is entered) `crashes` times."""

    def __init__(self, worker: Worker, crashes: int) -> None:
        self._real = worker._runner
        self.crashes = crashes

    async def resume(self, run_id: str, **kw: object) -> object:
        if self.crashes:
            self.crashes -= 1
            raise RuntimeError("boom in the worker")
        return await self._real.resume(run_id, **kw)  # type: ignore[arg-type]


async def test_a_crash_before_the_run_journals_anything_is_retried_and_the_count_resets(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "j.db")
    try:
        run_id = await submit(store, agents.agent, "job c: record 1 2 3")
        worker = Worker(store, poll_s=0.02, retry_delay_s=0.02, max_attempts=3)
        worker._runner = CrashingRunner(worker, crashes=2)  # type: ignore[assignment]
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                await wait_for(lambda: all_terminal(store, [run_id]))
                worker.drain()
        assert (await store.get_run(run_id)).status == "completed"  # two crashes, then it went through
        assert (worker.stats.errors, worker.stats.given_up, worker.stats.finished) == (2, 0, 1)
        crashes = [e for e in logs if e["log_level"] == "error"]
        assert [e["attempt"] for e in crashes] == [1, 2]
        assert crashes[0]["error"] == "RuntimeError: boom in the worker"
        assert worker._attempts == {}  # it went through: a later failure starts counting from 1
    finally:
        await store.aclose()


async def test_a_run_the_worker_always_crashes_on_is_failed_at_max_attempts(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "j.db")
    try:
        run_id = await submit(store, agents.agent, "job c: record 1 2 3")
        worker = Worker(store, poll_s=0.02, retry_delay_s=0.02, max_attempts=2)
        worker._runner = CrashingRunner(worker, crashes=1000)  # type: ignore[assignment]
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_for(lambda: all_terminal(store, [run_id]))
            worker.drain()
        info = await store.get_run(run_id)
        assert (info.status, info.reason) == (
            "failed",
            "given up after 2 attempts: the worker crashed on it: RuntimeError: boom in the worker",
        )
        assert await store.verify(run_id) == []  # its journal was fine: the end is simply appended
        assert [s.event.type for s in await store.load(run_id)] == ["run_started", "run_finished"]
    finally:
        await store.aclose()


def test_max_attempts_is_checked(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "j.db")
    with pytest.raises(ConfigError, match="max_attempts must be a whole number of at least 1"):
        Worker(store, max_attempts=0)
