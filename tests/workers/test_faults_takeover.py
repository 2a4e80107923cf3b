"""A run claimed by two workers, forced: the old holder's writes are refused, the run ends once.

Forced two ways: an operator's `seize` while a worker holds a valid lease (every store), and a worker
process paused with SIGSTOP past its lease on SQLite, several processes on one host (the PostgreSQL
version is in `test_crash.py`). An expired lease taken over is `test_worker.py`'s
`test_a_run_claimed_by_two_workers_ends_with_one_writer`.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import crash_agent_workers as crash
import inproc_agents as agents
import pytest
from structlog.testing import capture_logs
from worker_helpers import all_terminal, wait_for

from tether import Runner, ToolContext
from tether.journal import RunResumed, SQLiteStore, Store, ToolCompleted
from tether.workers import Worker, submit

pytestmark = pytest.mark.anyio

TETHER = [sys.executable, "-m", "tether.cli"]


@pytest.fixture(autouse=True)
def fresh_agents() -> Iterator[None]:
    agents.reset()
    yield
    agents.reset()


async def test_a_run_seized_from_a_live_worker_is_finished_by_the_new_holder_alone(store: Store) -> None:
    run_id = await submit(store, agents.agent, "job s: record 1 2 3")
    first = Worker(store, concurrency=1, poll_s=0.05, worker_id="first")
    taken = anyio.Event()

    async def take_it_over(ctx: ToolContext, n: int) -> None:
        if n == 2 and not taken.is_set():
            taken.set()
            # the first worker's lease is valid and renewed; it is taken anyway, and the run carried on
            # to its end by the new holder while the first is still inside this tool call
            lease = await store.seize(run_id, "second", lease_s=30)
            result = await Runner(store).resume(run_id, lease=lease)
            assert result.status == "completed"
            await store.release(lease)

    agents.on_tool = take_it_over
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(first.run)
            await wait_for(lambda: all_terminal(store, [run_id]))
            await wait_for(lambda: _true(first.stats.lost == 1))
            first.drain()
    assert (first.stats.lost, first.stats.finished, first.stats.errors) == (1, 0, 0)
    (dropped,) = [e for e in logs if e["event"].startswith("another worker took the run over")]
    # claimed (1), seized (2), released by the new holder at the end (3)
    assert "worker 'first' held lease epoch 1 but its lease is at epoch 3" in dropped["reason"]

    info = await store.get_run(run_id)
    assert (info.status, info.output) == ("completed", "recorded 3 entries")
    assert await store.verify(run_id) == []
    events = [s.event for s in await store.load(run_id)]
    assert [e.type for e in events].count("run_finished") == 1
    assert events[-1].type == "run_finished"  # nothing from the first holder after the end
    completed = [e.call_id for e in events if isinstance(e, ToolCompleted)]
    assert len(completed) == len(set(completed)) == 3  # the first holder's late outcome was refused
    # the call in flight at the takeover was in doubt; its tool is idempotent, so the new holder ran it
    # again under the same key: one effect per entry for a ledger keyed by it
    keys = {n: {key for key, m in agents.effects if m == n} for n in (1, 2, 3)}
    assert all(len(k) == 1 for k in keys.values()), keys


async def _true(value: bool) -> bool:
    return value


@pytest.mark.timeout(60)
async def test_a_worker_process_paused_past_its_lease_on_sqlite_writes_nothing_after_the_takeover(
    tmp_path: Path,
) -> None:
    ledger_path = tmp_path / "ledger.db"
    with sqlite3.connect(ledger_path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        for statement in crash.SQLITE_TABLES:
            conn.execute(statement)
    path = tmp_path / "journal.db"
    store = SQLiteStore(path, busy_timeout_s=30)
    env = {
        **os.environ,
        "CRASH_LEDGER_SQLITE": str(ledger_path),
        "CRASH_STALL_DIR": str(tmp_path),
        "CRASH_STALL_S": "2",
        "CRASH_DELAY_S": "0",
        "TETHER_LOG_FORMAT": "json",
    }
    lease_s = 1.5
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        with open(tmp_path / f"worker-{len(procs) + 1}.log", "wb") as log:
            command = [*TETHER, "worker", "--store", f"sqlite:///{path}", "--lease-s", str(lease_s)]
            proc = subprocess.Popen(
                [*command, "--poll-s", "0.05", "--json"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        procs.append(proc)
        return proc

    try:
        run_id = await submit(store, crash.agent, "job 0: record entries 1 2 3 4")
        paused = start()
        with anyio.fail_after(30):
            while not (tmp_path / f"stalled-{paused.pid}").exists():
                await anyio.sleep(0.02)
        paused.send_signal(signal.SIGSTOP)  # inside record_idem(n=2), holding the lease
        await anyio.sleep(lease_s + 0.5)  # no heartbeats from a stopped process: its lease lapses
        taker = start()
        with anyio.fail_after(30):
            while not (await store.get_run(run_id)).terminal:
                await anyio.sleep(0.05)
        finished_at = len(await store.load(run_id))
        paused.send_signal(signal.SIGCONT)  # it wakes mid-tool and tries to carry on
        await anyio.sleep(2.5)  # its stall ends and it tries to write the outcome
        assert len(await store.load(run_id)) == finished_at  # refused: nothing after the takeover
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=30) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait()
    try:
        assert codes == [0, 0]
        info = await store.get_run(run_id)
        events = [s.event for s in await store.load(run_id)]
        assert info.status == "completed" and await store.verify(run_id) == []
        assert [e.type for e in events].count("run_finished") == 1
        assert [e.pid for e in events if isinstance(e, RunResumed)] == [paused.pid, taker.pid]
        completed = [(e.step, e.call_id) for e in events if isinstance(e, ToolCompleted)]
        assert len(completed) == len(set(completed)) == 4
    finally:
        await store.aclose()
    log = (tmp_path / "worker-1.log").read_text()
    stats = json.loads(log[log.rindex("{\n") :])  # the worker's --json summary, printed at exit
    assert (stats["finished"], stats["lost"]) == (0, 1)
    assert "another worker took the run over" in log or "the lease was taken over" in log
    with sqlite3.connect(ledger_path) as conn:
        assert conn.execute("SELECT * FROM violations").fetchall() == []
        assert sorted(conn.execute("SELECT n FROM ledger").fetchall()) == [(1,), (2,), (3,), (4,)]
