"""The database goes away mid-run: its connections are dropped, again and again, while worker processes
run runs on PostgreSQL.

The shared test server cannot be stopped (other suites use it), so the outage is made from another
session: `pg_terminate_backend` on every connection the workers' stores hold (recognised by an
`application_name` of this test's own), repeatedly, in bursts that also kill the new connections made
meanwhile — what a server restart or a failover looks like to a client. The defined outcome: workers
retry with backoff and say so in their logs (warnings naming the server and the retry), and nothing is
lost when the connections come back: every run completes, every tool effect happens exactly once (none
is left in doubt: a journal write that failed is retried until it goes in), and every journal verifies.
(A server that refuses connections for seconds is `test_worker_postgres.py`'s relay test.)

Below it, in one process: a write whose connection died while it was committing (it went in, but the
worker was told it failed) is recognised when retried, not written twice and not mistaken for a conflict.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import crash_agent_workers as crash
import inproc_agents as agents
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from structlog.testing import capture_logs
from worker_helpers import (
    POSTGRES_DSN,
    all_terminal,
    drop_schema,
    new_schema_name,
    require_postgres,
    wait_for,
)

from tether.exceptions import StoreUnavailable
from tether.journal import (
    Event,
    Lease,
    MemoryStore,
    ModelResponded,
    RunResumed,
    ToolCompleted,
    ToolFailed,
    open_store,
)
from tether.workers import Worker, submit

pytestmark = pytest.mark.anyio

TETHER = [sys.executable, "-m", "tether.cli"]
RUNS = 40
WORKERS = 2
OUTAGE_S = 5.0
"""How long the connections keep being dropped."""


@pytest.fixture
async def schemas() -> AsyncIterator[tuple[str, str]]:
    """A PostgreSQL schema for the store and another for the ledger, both dropped afterwards."""
    await require_postgres()
    store_schema, ledger_schema = new_schema_name(), new_schema_name()
    async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA "{ledger_schema}"')
        for statement in crash.PG_TABLES:
            await conn.execute(f'SET search_path TO "{ledger_schema}"; {statement}')
    try:
        yield store_schema, ledger_schema
    finally:
        await drop_schema(store_schema)
        await drop_schema(ledger_schema)


def store_url(schema: str, **params: str) -> str:
    p = conninfo_to_dict(POSTGRES_DSN)
    user = f"{p['user']}@" if p.get("user") else ""
    where = f"{p.get('host', '127.0.0.1')}:{p.get('port', 5432)}/{p.get('dbname', 'test')}"
    query = "&".join(f"{k}={v}" for k, v in {"schema": schema, **params}.items())
    return f"postgresql://{user}{where}?{query}"


async def drop_connections(app: str, until: float, rng: random.Random) -> tuple[int, int]:
    """Terminate every connection named `app`, in bursts, until `until`; returns (bursts, terminated)."""
    bursts = terminated = 0
    async with await psycopg.AsyncConnection.connect(
        POSTGRES_DSN, autocommit=True, application_name=f"{app}-killer"
    ) as conn:
        while time.monotonic() < until:
            bursts += 1
            burst_end = time.monotonic() + rng.uniform(0.2, 0.5)
            while time.monotonic() < burst_end:  # the reconnections made meanwhile die too
                cur = await conn.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = %s",
                    (app,),
                )
                terminated += (await cur.fetchone())[0]  # type: ignore[index]
                await anyio.sleep(0.005)
            await anyio.sleep(rng.uniform(0.2, 0.6))
    return bursts, terminated


def log_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("{") and line.endswith("}"):
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return lines


@pytest.mark.timeout(120)
async def test_workers_ride_out_dropped_connections_and_lose_nothing(
    tmp_path: Path, schemas: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    store_schema, ledger_schema = schemas
    app = f"tether_faults_{secrets.token_hex(4)}"
    store = open_store(store_url(store_schema))  # the test's own connections are not dropped
    env = {
        **os.environ,
        "CRASH_DELAY_S": "0.03",
        "CRASH_LEDGER_PG": POSTGRES_DSN,
        "CRASH_LEDGER_SCHEMA": ledger_schema,
        "TETHER_LOG_FORMAT": "json",
    }
    env.pop("CRASH_STALL_DIR", None)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        run_ids = [
            await submit(store, crash.agent, f"job {job}: record entries 1 2 3 4") for job in range(RUNS)
        ]
        for i in range(WORKERS):
            with open(tmp_path / f"worker-{i}.log", "wb") as log:
                procs.append(
                    subprocess.Popen(
                        [
                            *TETHER,
                            "worker",
                            "--store",
                            store_url(store_schema, application_name=app),
                            "--concurrency",
                            "4",
                            "--lease-s",
                            "6",
                            "--poll-s",
                            "0.05",
                            "--json",
                        ],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        with anyio.fail_after(30):  # the outage starts with runs in flight
            while len(await store.list_runs(status="running")) < 4:
                await anyio.sleep(0.05)
        t0 = time.monotonic()
        seed = int(os.environ.get("FAULTS_SEED") or secrets.randbits(32))
        bursts, terminated = await drop_connections(app, t0 + OUTAGE_S, random.Random(seed))
        unfinished_after_outage = [(await store.get_run(r)).terminal for r in run_ids].count(False)
        with anyio.fail_after(60):
            while not all([(await store.get_run(r)).terminal for r in run_ids]):
                await anyio.sleep(0.1)
        elapsed = time.monotonic() - t0
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=30) for p in procs]
        in_doubt = takeovers = 0
        for job, run_id in enumerate(run_ids):
            info = await store.get_run(run_id)
            assert (info.status, info.output) == ("completed", f"recorded 4 entries for job {job}")
            assert await store.verify(run_id) == [], run_id
            events = [s.event for s in await store.load(run_id)]
            assert [e.type for e in events].count("run_finished") == 1
            completed = [(e.step, e.call_id) for e in events if isinstance(e, ToolCompleted)]
            assert len(completed) == len(set(completed)) == 4, run_id
            in_doubt += sum(1 for e in events if isinstance(e, ToolFailed) and e.kind == "in_doubt")
            takeovers += sum(1 for e in events if isinstance(e, RunResumed) and e.from_seq > 1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        await store.aclose()
    async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
        await conn.execute(f'SET search_path TO "{ledger_schema}"')
        violations = await (await conn.execute("SELECT * FROM violations")).fetchall()
        entries = await (await conn.execute("SELECT job, n FROM ledger")).fetchall()

    logs = [line for i in range(WORKERS) for line in log_lines(tmp_path / f"worker-{i}.log")]
    warnings = [e for e in logs if e.get("level") == "warning" and "retry_in_s" in e]
    stats = [
        json.loads(text[text.rindex("{\n") :])
        for text in (p.read_text() for p in sorted(tmp_path.glob("*.log")))
    ]
    figures = {
        "seed": seed,
        "runs": RUNS,
        "bursts": bursts,
        "connections_terminated": terminated,
        "unfinished_when_the_outage_ended": unfinished_after_outage,
        "elapsed_s": round(elapsed, 1),
        "store_retries": sum(s["store_retries"] for s in stats),
        "retry_warnings": dict(Counter(e["event"].split(";")[0] for e in warnings)),
        "takeovers": takeovers,
        "in_doubt_calls": in_doubt,
    }
    with capsys.disabled():
        print(f"\ndropped-connections figures: {json.dumps(figures)}", flush=True)

    assert codes == [0] * WORKERS, f"a worker did not drain cleanly: {codes}; logs in {tmp_path}"
    assert terminated > 0
    # the outage hit runs in flight: their journal writes failed, and were retried in place
    assert any(e["event"].startswith("journal write failed") for e in warnings), warnings[:3]
    assert violations == []  # no effect twice
    assert sorted(entries) == sorted((job, n) for job in range(RUNS) for n in range(1, 5))  # none lost
    assert in_doubt == 0  # no outcome went unrecorded: failed writes were retried until they went in
    assert sum(s["errors"] for s in stats) == 0 and sum(s["given_up"] for s in stats) == 0
    # the operator sees what happened: warnings naming the server and the cause, with the retry's delay
    assert warnings, f"no retry warnings in the worker logs ({tmp_path})"
    assert any("PostgreSQL 127.0.0.1:5432/test" in str(e.get("error")) for e in warnings), warnings[:3]


class FlakyStore(MemoryStore):
    """Fails the journal write of step 2's model response once: before it is written (`before`), or
    after it was committed, as a connection lost while committing looks to the caller (`after`)."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode: str | None = mode

    async def append(
        self, run_id: str, events: Sequence[Event], *, expected_seq: int, lease: Lease | None = None
    ) -> int:
        mode = None
        if self.mode and any(isinstance(e, ModelResponded) and e.step == 2 for e in events):
            mode, self.mode = self.mode, None
        if mode == "before":
            raise StoreUnavailable("lost the connection to the store (test); nothing was written: retry")
        seq = await super().append(run_id, events, expected_seq=expected_seq, lease=lease)
        if mode == "after":
            raise StoreUnavailable(
                "lost the connection to the store while committing (test); the write may or may not have "
                "been committed"
            )
        return seq


@pytest.mark.parametrize("mode", ["before", "after"])
async def test_a_failed_journal_write_is_retried_in_place_and_an_in_doubt_commit_is_recognised(
    mode: str,
) -> None:
    agents.reset()
    store = FlakyStore(mode)
    run_id = await submit(store, agents.agent, "job f: record 1 2 3")
    with capture_logs() as logs:
        worker = Worker(store, poll_s=0.02, max_backoff_s=0.05)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_for(lambda: all_terminal(store, [run_id]))
            worker.drain()
    info = await store.get_run(run_id)
    assert (info.status, info.output) == ("completed", "recorded 3 entries") and await store.verify(
        run_id
    ) == []
    events = [s.event for s in await store.load(run_id)]
    assert [e.step for e in events if isinstance(e, ModelResponded)] == [1, 2, 3, 4]  # step 2 once, not twice
    assert [e.type for e in events].count(
        "run_resumed"
    ) == 1  # retried in place: never resumed from the journal
    assert (worker.stats.store_retries, worker.stats.errors) == (1, 0)
    assert all(count == 1 for count in agents.model_calls.values())  # no model call made twice
    (warning,) = [e for e in logs if e["log_level"] == "warning"]
    assert warning["event"] == "journal write failed, the store is unavailable; retrying the write"
    assert warning["run_id"] == run_id and warning["attempt"] == 1 and "retry_in_s" in warning
    agents.reset()
