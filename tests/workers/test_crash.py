"""The crash test: worker processes killed with SIGKILL at random while they run 200 runs.

Three `tether worker` processes share one store (PostgreSQL; then SQLite, several processes on one
host). A chaos loop SIGKILLs a random worker every 0.2-1 s and starts a new one, for a fixed number of
kills. Each run's model requests and tool effects go to a ledger (`crash_agent_workers.py`). At the end:
every run finished, none lost, no effect twice, no model call repeated for a step the journal had
recorded, and every journal intact. The figures are printed (`pytest -s` shows them; CI logs them).

Also here: a worker paused with SIGSTOP past its lease and continued after another worker took its run
over writes nothing more (fencing), and submissions with one idempotency key from racing processes.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import crash_agent_workers as crash
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from worker_helpers import POSTGRES_DSN, drop_schema, new_schema_name, require_postgres

from tether.journal import (
    ModelResponded,
    RunResumed,
    SQLiteStore,
    Store,
    ToolCompleted,
    ToolFailed,
    ToolStarted,
    open_store,
)
from tether.workers import submit

pytestmark = pytest.mark.anyio

HERE = Path(__file__).resolve().parent
TETHER = [sys.executable, "-m", "tether.cli"]
RUNS = 200
WORKERS = 3
KILLS = 12
CONCURRENCY = 4
LEASE_S = 2.0
DELAY_S = 0.04
"""Per model call and per tool call: a run takes about 0.4 s, so kills land mid-run."""


@dataclass
class Fleet:
    """The worker processes of one test, started and killed by it."""

    env: dict[str, str]
    store_url: str
    logs: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    started: int = 0
    log_of: dict[int, Path] = field(default_factory=dict)

    def start(self) -> subprocess.Popen[bytes]:
        self.started += 1
        log = open(self.logs / f"worker-{self.started}.log", "wb")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(
            [
                *TETHER,
                "worker",
                "--store",
                self.store_url,
                "--concurrency",
                str(CONCURRENCY),
                "--lease-s",
                str(LEASE_S),
                "--poll-s",
                "0.1",
                "--json",
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)
        self.log_of[proc.pid] = self.logs / f"worker-{self.started}.log"
        return proc

    def busy(self) -> list[subprocess.Popen[bytes]]:
        """Live workers that have claimed a run: killing one that is still starting up tests nothing."""
        return [p for p in self.alive() if b"run claimed" in self.log_of[p.pid].read_bytes()]

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def stop_all(self, timeout_s: float = 30) -> list[int]:
        """SIGTERM (drain) every live worker; returns their exit codes."""
        live = self.alive()
        for p in live:
            p.send_signal(signal.SIGTERM)
        codes = []
        for p in live:
            try:
                codes.append(p.wait(timeout=timeout_s))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(p.wait())
        return codes

    def kill_everything(self) -> None:
        for p in self.alive():
            p.kill()
            p.wait()


@pytest.fixture
async def pg_ledger() -> AsyncIterator[tuple[str, str]]:
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


def _pg_url(schema: str) -> str:
    p = conninfo_to_dict(POSTGRES_DSN)
    user = f"{p['user']}@" if p.get("user") else ""
    where = f"{p.get('host', '127.0.0.1')}:{p.get('port', 5432)}/{p.get('dbname', 'test')}"
    return f"postgresql://{user}{where}?schema={schema}"


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "CRASH_DELAY_S": str(DELAY_S), "TETHER_LOG_FORMAT": "json"}
    env.pop("CRASH_STALL_DIR", None)
    env.update(extra)
    return env


async def _ledger_rows(
    query: str, *, pg_schema: str | None = None, sqlite_path: Path | None = None
) -> list[tuple[Any, ...]]:
    if pg_schema is not None:
        async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
            await conn.execute(f'SET search_path TO "{pg_schema}"')
            return await (await conn.execute(query)).fetchall()
    assert sqlite_path is not None
    with sqlite3.connect(sqlite_path) as conn:
        return conn.execute(query).fetchall()


async def _wait_all_finished(store: Store, run_ids: list[str], deadline_s: float) -> None:
    """Wait for every run to finish, tolerating a store that is briefly busy (SQLite's lock)."""
    deadline = time.monotonic() + deadline_s
    pending = set(run_ids)
    while pending:
        assert time.monotonic() < deadline, f"{len(pending)} runs never finished, e.g. {sorted(pending)[:3]}"
        for run_id in list(pending):
            if (await store.get_run(run_id)).terminal:
                pending.discard(run_id)
        await anyio.sleep(0.2)


async def _chaos(fleet: Fleet, kills: int, rng: random.Random) -> int:
    """SIGKILL a random worker holding runs every 0.2-1 s and start a new one, `kills` times; returns kills
    made."""
    made = 0
    while made < kills:
        await anyio.sleep(rng.uniform(0.2, 1.0))
        # on a loaded machine a new worker takes seconds to start: wait for one that holds runs
        with anyio.fail_after(60):
            while not (busy := fleet.busy()):
                await anyio.sleep(0.1)
        victim = rng.choice(busy)
        victim.kill()
        victim.wait()
        made += 1
        fleet.start()
    return made


async def _check_and_report(
    name: str,
    store: Store,
    run_ids: list[str],
    ledger: Callable[[str], Any],
    *,
    kills: int,
    elapsed_s: float,
    capsys: pytest.CaptureFixture[str],
) -> dict[str, Any]:
    statuses = Counter()
    resumes = takeovers = in_doubt = recorded_steps = 0
    repeated_recorded = 0
    odd_in_doubt: set[tuple[int, int]] = set()
    calls = defaultdict(list)
    for job, done, at in await ledger("SELECT job, done, at FROM model_calls"):
        calls[int(job), int(done)].append(float(at))
    for job, run_id in enumerate(run_ids):
        info = await store.get_run(run_id)
        statuses[info.status] += 1
        assert await store.verify(run_id) == [], run_id
        events = [s.event for s in await store.load(run_id)]
        types = [e.type for e in events]
        assert types.count("run_finished") == 1 and types[-1] == "run_finished", (run_id, types)
        claims = [e for e in events if isinstance(e, RunResumed)]
        resumes += len(claims)
        takeovers += sum(1 for e in claims if e.from_seq > 1)
        # a call is (step, call_id): the scripted model numbers calls per process, so ids recur in a run
        started = {(e.step, e.call_id): e for e in events if isinstance(e, ToolStarted)}
        for e in events:
            if isinstance(e, ToolFailed) and e.kind == "in_doubt":
                in_doubt += 1
                odd_in_doubt.add((job, int(started[e.step, e.call_id].arguments["n"])))
            if isinstance(e, ModelResponded):
                recorded_steps += 1
                # a request for this step made after its response was journaled: paid for twice
                repeated_recorded += sum(1 for t in calls[job, e.step - 1] if t > e.at)
        completed_calls = [(e.step, e.call_id) for e in events if isinstance(e, ToolCompleted)]
        assert len(completed_calls) == len(set(completed_calls)), run_id
    model_requests = sum(len(v) for v in calls.values())
    violations = await ledger("SELECT kind, idempotency_key, job, n FROM violations")
    entries = {(int(j), int(n)) for j, n in await ledger("SELECT job, n FROM ledger")}
    rows = (await ledger("SELECT count(*) FROM ledger"))[0][0]
    figures = {
        "store": name,
        "runs": len(run_ids),
        "completed": statuses["completed"],
        "statuses": dict(statuses),
        "elapsed_s": round(elapsed_s, 1),
        "runs_per_s": round(len(run_ids) / elapsed_s, 1),
        "kills": kills,
        "claims": resumes,
        "resumed_after_a_kill": takeovers,
        "in_doubt_calls": in_doubt,
        "model_requests": model_requests,
        "recorded_steps": recorded_steps,
        "requests_lost_to_kills": model_requests - recorded_steps,
        "repeated_for_recorded_steps": repeated_recorded,
        "ledger_rows": rows,
        "duplicate_effects": len(violations),
    }
    with capsys.disabled():  # in the log of every run, CI's included, not only with -s
        print(f"\ncrash test figures: {json.dumps(figures)}", flush=True)
    assert statuses == Counter({"completed": len(run_ids)}), statuses  # every run terminal, none lost
    assert violations == [], violations  # no effect happened twice
    assert repeated_recorded == 0  # no model call paid for twice for a step the journal had
    assert rows == len(entries)
    # every entry is in the ledger once, except a non-idempotent call killed mid-flight (in doubt, not re-run)
    expected = {(job, n) for job in range(len(run_ids)) for n in range(1, 5)}
    missing = expected - entries
    assert missing <= odd_in_doubt, sorted(missing - odd_in_doubt)[:5]
    assert all(n % 2 == 1 for _, n in missing)  # idempotent calls in doubt were re-run with their key
    assert takeovers > 0  # the kills did land mid-run
    return figures


async def _crash_test(
    store: Store, fleet: Fleet, ledger: Callable[[str], Any], capsys: pytest.CaptureFixture[str]
) -> None:
    run_ids = [await submit(store, crash.agent, f"job {job}: record entries 1 2 3 4") for job in range(RUNS)]
    t0 = time.monotonic()
    for _ in range(WORKERS):
        fleet.start()
    seed = int(os.environ.get("CRASH_SEED") or secrets.randbits(32))  # CRASH_SEED=... replays a schedule
    rng = random.Random(seed)
    try:
        kills = await _chaos(fleet, KILLS, rng)
        await _wait_all_finished(store, run_ids, deadline_s=90)
        elapsed = time.monotonic() - t0
        codes = fleet.stop_all()
    finally:
        fleet.kill_everything()
    assert codes == [0] * len(codes), f"a worker did not drain cleanly: {codes}; logs in {fleet.logs}"
    await _check_and_report(
        f"{type(store).__name__} seed={seed}",
        store,
        run_ids,
        ledger,
        kills=kills,
        elapsed_s=elapsed,
        capsys=capsys,
    )


@pytest.mark.timeout(150)
async def test_crash_postgres(
    tmp_path: Path, pg_ledger: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    store_schema, ledger_schema = pg_ledger
    url = _pg_url(store_schema)
    store = open_store(url)
    fleet = Fleet(
        env=_env(CRASH_LEDGER_PG=POSTGRES_DSN, CRASH_LEDGER_SCHEMA=ledger_schema),
        store_url=url,
        logs=tmp_path,
    )
    try:
        await _crash_test(store, fleet, lambda q: _ledger_rows(q, pg_schema=ledger_schema), capsys)
    finally:
        await store.aclose()


@pytest.mark.timeout(150)
async def test_crash_sqlite_several_processes_on_one_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger_path = tmp_path / "ledger.db"
    with sqlite3.connect(ledger_path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        for statement in crash.SQLITE_TABLES:
            conn.execute(statement)
    path = tmp_path / "journal.db"
    store = SQLiteStore(path, busy_timeout_s=30)
    fleet = Fleet(
        env=_env(CRASH_LEDGER_SQLITE=str(ledger_path)), store_url=f"sqlite:///{path}", logs=tmp_path
    )
    try:
        await _crash_test(store, fleet, lambda q: _ledger_rows(q, sqlite_path=ledger_path), capsys)
    finally:
        await store.aclose()


# --- fencing: a paused worker's late writes are refused ------------------------------------------------


@pytest.mark.timeout(90)
async def test_a_worker_paused_past_its_lease_writes_nothing_after_the_takeover(
    tmp_path: Path, pg_ledger: tuple[str, str]
) -> None:
    store_schema, ledger_schema = pg_ledger
    url = _pg_url(store_schema)
    store = open_store(url)
    env = _env(
        CRASH_LEDGER_PG=POSTGRES_DSN,
        CRASH_LEDGER_SCHEMA=ledger_schema,
        CRASH_STALL_DIR=str(tmp_path),
        CRASH_STALL_S="2",
        CRASH_DELAY_S="0",
    )
    fleet = Fleet(env=env, store_url=url, logs=tmp_path)
    try:
        run_id = await submit(store, crash.agent, "job 0: record entries 1 2 3 4")
        paused = fleet.start()
        with anyio.fail_after(30):
            while not (tmp_path / f"stalled-{paused.pid}").exists():
                await anyio.sleep(0.02)
        paused.send_signal(signal.SIGSTOP)  # inside record_idem(n=2), holding the lease
        await anyio.sleep(LEASE_S + 0.5)  # its lease lapses: no heartbeats from a stopped process
        taker = fleet.start()
        await _wait_all_finished(store, [run_id], deadline_s=30)
        finished_at = len(await store.load(run_id))
        paused.send_signal(signal.SIGCONT)  # it wakes up mid-tool and tries to carry on
        await anyio.sleep(3.0)  # its tool's stall ends, it tries to write the outcome
        assert len(await store.load(run_id)) == finished_at  # refused: nothing after the takeover
        codes = fleet.stop_all()
    finally:
        fleet.kill_everything()
        await store.aclose()
    assert codes == [0, 0]
    store = open_store(url)
    try:
        info = await store.get_run(run_id)
        events = [s.event for s in await store.load(run_id)]
        assert info.status == "completed" and await store.verify(run_id) == []
        assert [e.type for e in events].count("run_finished") == 1
        claims = [e for e in events if isinstance(e, RunResumed)]
        assert [c.pid for c in claims] == [paused.pid, taker.pid]
        completed = [(e.step, e.call_id) for e in events if isinstance(e, ToolCompleted)]
        assert len(completed) == len(set(completed)) == 4
    finally:
        await store.aclose()
    log = (tmp_path / "worker-1.log").read_text()
    assert "another worker took the run over" in log or "the lease was taken over" in log, log[-2000:]
    stats = json.loads(log[log.rindex("{\n") :])  # the worker's --json summary, printed at exit
    assert (stats["finished"], stats["lost"]) == (0, 1)
    violations = await _ledger_rows("SELECT * FROM violations", pg_schema=ledger_schema)
    assert violations == []


# --- duplicate submissions from racing processes -------------------------------------------------------


@pytest.mark.timeout(60)
async def test_racing_processes_submitting_one_key_make_one_run_on_postgres(
    tmp_path: Path, pg_ledger: tuple[str, str]
) -> None:
    store_schema, _ = pg_ledger
    url = _pg_url(store_schema)
    store = open_store(url)
    await store.list_runs()  # schema in place, so the racers race to submit, not to migrate
    ref = str(HERE / "crash_agent_workers.py") + ":agent"
    args = [*TETHER, "run", ref, "-i", "job 1: record entries 1 2 3 4", "--detach", "--store", url]
    try:
        for key in ("first-key", "second-key"):
            procs = [
                subprocess.Popen(
                    [*args, "--idempotency-key", key],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=_env(),
                )
                for _ in range(6)
            ]
            outs = [p.communicate(timeout=50) for p in procs]
            assert [p.returncode for p in procs] == [0] * 6, [e for _, e in outs]
            assert len({o.strip() for o, _ in outs}) == 1
        assert len(await store.list_runs()) == 2
    finally:
        await store.aclose()
