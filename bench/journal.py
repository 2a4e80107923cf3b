"""The durable journal's costs: one step's write against a bare INSERT of the same bytes, and resume.

1. **Journaling cost per step.** The events the runtime appends for one step of the core workload, in one
   transaction (the previous call's `ToolCompleted`, then `ModelResponded`, `UsageCharged` and
   `ToolStarted`), are captured from a real run and appended with `store.append(run_id, events,
   expected_seq=...)`, 10 steps to a run, on SQLite (crash and power-loss durability) and PostgreSQL,
   with and without a worker's lease. The baseline writes the same serialised bytes with a bare
   `BEGIN; INSERT INTO bare (run_id, seq, data) VALUES ...; COMMIT` (one row per event, one transaction
   per step, primary key `(run_id, seq)` as the journal's) on a connection set up as the store's: for
   SQLite the same file, PRAGMAs and checkpointing; for PostgreSQL a psycopg async pool with the store's
   settings, in the same database, one autocommitted statement per step. The variants take turns in
   rounds, the one that goes first rotating; each ratio is the median of the per-round ratios.
2. **Resume latency.** A run of `_workers_agent.approval_agent` takes N steps, then proposes a high-risk
   call: the default approval policy suspends it (an `ApprovalRequested` row; no process waits). Once a
   human approved it (untimed), another store instance (as a worker in another process would be) calls
   `Runner.resume(run_id)`; the figure is the time from that call to its first append committed: the
   approved call's `ToolStarted`, journaled before the tool runs. Measured with 10 and 100 steps in the
   journal, and with 10 steps in a store that also holds 10,000 runs suspended for approval (undecided:
   a row in `runs`, four in `events` and a timer in the queue each), interleaved with the store that holds
   only the measured runs and with a second such store (a control: the noise between two stores).

Run through `bench/run.py`. `python bench/journal.py profile [sqlite_crash|sqlite_power_loss|postgres]
[STEPS]` prints a cProfile of the store's appends. PostgreSQL: `TETHER_BENCH_POSTGRES` (a libpq string),
else the test server `host=127.0.0.1 port=5432 dbname=test user=root`; without it the PostgreSQL figures
are skipped.
"""

from __future__ import annotations

import math
import os
import secrets
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import anyio
from _common import figure, interleaved_samples, log, median, print_profile, quiet_gc, skipped

from tether import Runner
from tether.journal import (
    Event,
    Lease,
    MemoryStore,
    ModelResponded,
    RunStarted,
    SQLiteStore,
    Store,
    ToolCompleted,
    ToolStarted,
    UsageCharged,
    chain_hash,
)
from tether.runtime import new_run_id

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # _workers_agent, when this module is loaded by path
import _workers_agent as workload  # noqa: E402 - needs the path above

__all__ = ["main"]

DSN = os.environ.get("TETHER_BENCH_POSTGRES", "host=127.0.0.1 port=5432 dbname=test user=root")

ROUNDS = 21
"""Timed rounds per variant; figures are medians over rounds."""
BATCH_S = 0.1
"""Rough length of one timed batch of steps (the batch size is calibrated per variant)."""
STEPS_PER_RUN = 10
"""Steps appended to a run before the next run is begun (a run of the core workload has 11)."""
TARGET_RATIO = 1.5
LEASE_S = 3600.0

RESUME_STEPS = (10, 100)
RESUME_SAMPLES = 15
WAITING_RUNS = 10_000
WAITING_CONCURRENCY = 8
"""Suspended runs are written by this many tasks at once (PostgreSQL's pool serves them in parallel)."""
GENESIS = "0" * 64


class _Recorder(MemoryStore):
    """A memory store that keeps each batch `append` was given: the runtime's own transactions."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[Event]] = []

    async def append(
        self, run_id: str, events: Sequence[Event], *, expected_seq: int, lease: Lease | None = None
    ) -> int:
        self.batches.append(list(events))
        return await super().append(run_id, events, expected_seq=expected_seq, lease=lease)


async def _one_step() -> tuple[RunStarted, list[Event]]:
    """The run's first event and the events of one step mid-run, as the runtime appends them."""
    store = _Recorder()
    result = await Runner(store).run(workload.agent, workload.INPUT)
    if result.status != "completed" or result.steps != workload.STEPS_PER_RUN:
        raise RuntimeError(f"the benchmark workload is broken: {result.status} after {result.steps} steps")
    started = (await store.load(result.run_id))[0].event
    assert isinstance(started, RunStarted)
    batch = store.batches[len(store.batches) // 2]
    kinds = [type(ev) for ev in batch]
    if kinds != [ToolCompleted, ModelResponded, UsageCharged, ToolStarted]:
        raise RuntimeError(f"a step of the workload no longer appends what this benchmark says: {kinds}")
    return started, batch


# -- 1. a step's journal write against a bare INSERT of the same bytes -------------------------------

_Todo = list[tuple[str, int, Lease | None]]


class _Writer(Protocol):
    async def prepare(self, n: int) -> _Todo:
        """Runs ready for `n` step writes (untimed): (run id, the seq to write at, lease)."""
        ...

    async def write(self, run_id: str, seq: int, lease: Lease | None) -> None:
        """Write one step (timed)."""
        ...


def _fresh_runs(n: int, events_per_step: int) -> _Todo:
    todo: _Todo = []
    for _ in range(math.ceil(n / STEPS_PER_RUN)):
        run_id = new_run_id()
        todo += [(run_id, 1 + k * events_per_step, None) for k in range(STEPS_PER_RUN)]
    return todo[:n]


class _StoreWriter:
    """`store.append` of the step's events, as the runtime calls it (with a lease: as a worker does)."""

    def __init__(self, store: Store, started: RunStarted, events: Sequence[Event], *, leased: bool):
        self.store, self.started, self.events, self.leased = store, started, list(events), leased

    async def prepare(self, n: int) -> _Todo:
        todo: _Todo = []
        for _ in range(math.ceil(n / STEPS_PER_RUN)):
            run_id = new_run_id()
            lease = None
            if self.leased:
                await self.store.enqueue(run_id, self.started)
                lease = await self.store.seize(run_id, "bench-journal", lease_s=LEASE_S)
            else:
                await self.store.create_run(run_id, self.started)
            todo += [(run_id, 1 + k * len(self.events), lease) for k in range(STEPS_PER_RUN)]
        return todo[:n]

    async def write(self, run_id: str, seq: int, lease: Lease | None) -> None:
        await self.store.append(run_id, self.events, expected_seq=seq, lease=lease)


class _Encoder:
    """Only what both stores do in Python before any SQL: serialise each event and chain its hash."""

    def __init__(self, events: Sequence[Event]):
        self.events = list(events)

    async def prepare(self, n: int) -> _Todo:
        return _fresh_runs(n, len(self.events))

    async def write(self, run_id: str, seq: int, lease: Lease | None) -> None:
        prev = GENESIS
        for ev in self.events:
            prev = chain_hash(prev, run_id, seq, ev.model_dump_json())
            seq += 1


class _BareSQLite:
    """The same bytes by a bare `BEGIN; INSERT ...; COMMIT`, in the store's file, with its PRAGMAs.

    The store's own background checkpointer serves this table too (it checkpoints the file's one WAL), so
    neither side pays for a checkpoint inside a commit.
    """

    def __init__(self, path: Path, durability: str, datas: Sequence[str]):
        self.datas = list(datas)
        self.conn = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
        synchronous = "FULL" if durability == "power-loss" else "NORMAL"
        for pragma in (
            "journal_mode=WAL",
            f"synchronous={synchronous}",
            "foreign_keys=ON",
            "wal_autocheckpoint=0",
        ):
            self.conn.execute(f"PRAGMA {pragma}")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS bare (run_id TEXT NOT NULL, seq INTEGER NOT NULL, "
            "data TEXT NOT NULL, PRIMARY KEY (run_id, seq)) WITHOUT ROWID"  # as the journal's `events` table
        )

    async def prepare(self, n: int) -> _Todo:
        return _fresh_runs(n, len(self.datas))

    async def write(self, run_id: str, seq: int, lease: Lease | None) -> None:
        conn = self.conn
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO bare (run_id, seq, data) VALUES (?, ?, ?)",
            [(run_id, seq + i, data) for i, data in enumerate(self.datas)],
        )
        conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


class _BarePostgres:
    """The same bytes by one bare autocommitted `INSERT ... VALUES (...), (...)` per step, through a
    psycopg async pool opened with the store's settings, in the store's schema."""

    def __init__(self, pool: Any, schema: str, datas: Sequence[str]):
        self.pool, self.datas = pool, list(datas)
        rows = ", ".join(["(%s, %s, %s)"] * len(self.datas))
        self.sql = f'INSERT INTO "{schema}".bare (run_id, seq, data) VALUES {rows}'

    @classmethod
    async def open(cls, store: Any, datas: Sequence[str]) -> _BarePostgres:
        import psycopg_pool

        timeout_ms = int(store.timeout_s * 1000)

        async def configure(conn: Any) -> None:
            await conn.execute(f"SET lock_timeout = {timeout_ms}")  # as the store's pool does

        pool = psycopg_pool.AsyncConnectionPool(
            store.conninfo,
            kwargs={"autocommit": True},
            min_size=store.min_size,
            max_size=store.max_size,
            timeout=store.timeout_s,
            configure=configure,
            open=False,
        )
        await pool.open(wait=True)
        async with pool.connection() as conn:
            await conn.execute(
                f'CREATE TABLE "{store.schema}".bare (run_id TEXT NOT NULL, seq INTEGER NOT NULL, '
                "data TEXT NOT NULL, PRIMARY KEY (run_id, seq))"
            )
        return cls(pool, store.schema, datas)

    async def prepare(self, n: int) -> _Todo:
        return _fresh_runs(n, len(self.datas))

    async def write(self, run_id: str, seq: int, lease: Lease | None) -> None:
        params: list[Any] = []
        for i, data in enumerate(self.datas):
            params += (run_id, seq + i, data)
        async with self.pool.connection() as conn:
            await conn.execute(self.sql, params)

    async def aclose(self) -> None:
        await self.pool.close()


async def _time_steps(writer: _Writer, n: int) -> float:
    """Seconds per step over `n` step writes, the collector off."""
    todo = await writer.prepare(n)
    write = writer.write
    with quiet_gc():
        started = time.perf_counter()
        for run_id, seq, lease in todo:
            await write(run_id, seq, lease)
        return (time.perf_counter() - started) / n


async def _postgres_ready() -> str | None:
    """Why PostgreSQL cannot be measured here, or None when it can."""
    try:
        import psycopg
        import psycopg_pool  # noqa: F401 - the store's pool, needed as well
    except ImportError:
        return "needs PostgreSQL support: pip install 'tether[postgres]'"
    try:
        conn = await psycopg.AsyncConnection.connect(DSN, connect_timeout=3)
        await conn.close()
    except psycopg.OperationalError as exc:
        return f"PostgreSQL is not reachable at {DSN!r} ({str(exc).strip()}); set TETHER_BENCH_POSTGRES"
    return None


def _postgres_store(schema: str, store_class: type[Store] | None = None) -> Store:
    from tether.journal.stores.postgres import PostgresStore

    return (store_class or PostgresStore)(DSN, schema=schema)  # type: ignore[call-arg]


async def _drop(schema: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def _journal_cost(workdir: Path, postgres_down: str | None) -> list[dict[str, Any]]:
    started, events = await _one_step()
    datas = [ev.model_dump_json() for ev in events]
    step_bytes = sum(len(d.encode()) for d in datas)

    # backend -> {"bare": writer, "store": writer, "store_leased": writer}
    backends: dict[str, dict[str, _Writer]] = {}
    closers: list[Callable[[], Awaitable[None]]] = []
    schema = f"tether_bench_{secrets.token_hex(4)}"
    try:
        for durability in ("crash", "power-loss"):
            name = f"sqlite_{durability.replace('-', '_')}"
            path = workdir / f"{name}.db"
            store = SQLiteStore(path, durability=durability)  # type: ignore[arg-type]
            bare = _BareSQLite(path, durability, datas)
            closers += [store.aclose, _async(bare.close)]
            backends[name] = {
                "bare": bare,
                "store": _StoreWriter(store, started, events, leased=False),
            }
            if durability == "crash":
                backends[name]["store_leased"] = _StoreWriter(store, started, events, leased=True)
        if postgres_down is None:
            pg = _postgres_store(schema)
            await pg.list_runs(limit=1)  # creates the schema
            closers.append(pg.aclose)
            pg_bare = await _BarePostgres.open(pg, datas)
            closers.append(pg_bare.aclose)
            backends["postgres"] = {
                "bare": pg_bare,
                "store": _StoreWriter(pg, started, events, leased=False),
                "store_leased": _StoreWriter(pg, started, events, leased=True),
            }
        variants: dict[str, _Writer] = {"encode": _Encoder(events)}
        for backend, writers in backends.items():
            for kind, writer in writers.items():
                variants[f"{backend}.{kind}"] = writer

        # µs per step
        samples = await interleaved_samples(
            variants, _time_steps, rounds=ROUNDS, batch_s=BATCH_S, min_batch=5, scale=1e6, label="step writes"
        )
    finally:
        for close in reversed(closers):
            await close()
        if postgres_down is None:
            await _drop(schema)

    def ratio(name: str, base: str) -> float:
        return median(v / b for v, b in zip(samples[name], samples[base], strict=True))

    what = {
        "sqlite_crash": "SQLite, WAL, synchronous=NORMAL",
        "sqlite_power_loss": "SQLite, WAL, synchronous=FULL (an fsync per commit)",
        "postgres": "PostgreSQL, psycopg async pool, autocommit",
    }
    how = {
        "sqlite_crash": "BEGIN; INSERT; COMMIT",
        "sqlite_power_loss": "BEGIN; INSERT; COMMIT",
        "postgres": "one autocommitted INSERT",
    }
    figures = [
        figure(
            "append_us.encode",
            median(samples["encode"]),
            "µs/step",
            note=f"serialise the step's {len(events)} events ({step_bytes} B of JSON) and chain their "
            "hashes, no I/O: what both stores do in Python before any SQL",
        )
    ]
    for backend in what:
        if backend not in backends:
            figures.append(skipped(f"append_us.{backend}", postgres_down or ""))
            continue
        base = f"{backend}.bare"
        figures.append(
            figure(
                f"append_us.{backend}.bare_insert",
                median(samples[base]),
                "µs/step",
                note=f"{what[backend]}: {how[backend]} of the {len(events)} rows (run_id, seq, data)",
            )
        )
        for kind in ("store", "store_leased"):
            if kind not in backends[backend]:
                continue
            r = ratio(f"{backend}.{kind}", base)
            figures.append(
                figure(
                    f"append_us.{backend}.{kind}",
                    median(samples[f"{backend}.{kind}"]),
                    "µs/step",
                    ratio=r,
                    target=f"≤ {TARGET_RATIO:g}x bare",
                    ok=r <= TARGET_RATIO,
                    note=(
                        f"store.append of the step's events, {STEPS_PER_RUN} steps per run"
                        if kind == "store"
                        else "the same with a worker's lease (checked in the same transaction)"
                    )
                    + f"; encoding is {ratio('encode', f'{backend}.{kind}'):.0%} of it",
                )
            )
    return figures


def _async(fn: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        fn()

    return call


# -- 2. resume latency -----------------------------------------------------------------------------


def _timing(store_class: type[Store]) -> type[Store]:
    """A subclass of `store_class` that notes when its first append since `first_append_at = None`
    committed."""

    class Timed(store_class):  # type: ignore[valid-type,misc]
        first_append_at: float | None = None

        async def append(self, *args: Any, **kwargs: Any) -> int:
            seq = await super().append(*args, **kwargs)
            if self.first_append_at is None:
                self.first_append_at = time.perf_counter()
            return seq

    return Timed


async def _suspend(runner: Runner, steps: int) -> tuple[str, str]:
    """A run that took `steps` steps, then proposed a high-risk call and was suspended for a human:
    its run id and approval request id."""
    result = await runner.run(workload.approval_agent, workload.approval_input(steps))
    if result.status != "suspended" or result.waiting_for is None or result.steps != steps + 1:
        raise RuntimeError(
            f"the approval workload is broken: {result.status} after {result.steps} steps, expected "
            f"suspended after {steps + 1}"
        )
    return result.run_id, result.waiting_for


async def _suspend_many(runner: Runner, n: int) -> None:
    """`n` runs waiting for a human (a high-risk call at their first step), left undecided."""
    left = n

    async def suspender() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await _suspend(runner, 0)

    async with anyio.create_task_group() as tg:
        for _ in range(WAITING_CONCURRENCY):
            tg.start_soon(suspender)
    waiting = await runner.store.list_runs(status="suspended", limit=n + 1)
    if len(waiting) != n:
        raise RuntimeError(f"expected {n} suspended runs in {runner.store!r}, found {len(waiting)}")


async def _resume_latency(backend: str, workdir: Path) -> list[dict[str, Any]]:
    """Resume latency on one backend: 10 and 100 steps, and 10 steps among 10,000 suspended runs."""
    from tether.approvals import Approvals

    schemas: list[str] = []

    def open_pair(where: str) -> tuple[Store, Store]:
        """Two instances on one journal: one suspends and decides, the other (timed) resumes, as a worker
        in another process would."""
        if backend == "postgres":
            from tether.journal.stores.postgres import PostgresStore

            schema = f"tether_bench_{secrets.token_hex(4)}"
            schemas.append(schema)
            return _postgres_store(schema), _postgres_store(schema, _timing(PostgresStore))
        path = workdir / f"resume-{where}.db"
        return SQLiteStore(path), _timing(SQLiteStore)(path)  # type: ignore[call-arg]

    short, long = RESUME_STEPS
    cases = {
        f"steps_{short}": ("alone", short),
        f"steps_{long}": ("alone", long),
        # the same as the first, in a store of its own: how far two stores differ with nothing else
        # between them, the yardstick for the next one
        "control": ("control", short),
        f"steps_{short}_among_{WAITING_RUNS}_suspended": ("waiting", short),
    }
    stores: dict[str, tuple[Store, Store]] = {}
    try:
        for where in ("alone", "control", "waiting"):
            stores[where] = open_pair(where)
        log(f"   {backend}: {WAITING_RUNS:,} runs suspended for approval")
        await _suspend_many(Runner(stores["waiting"][0]), WAITING_RUNS)
        log(f"   {backend}: {RESUME_SAMPLES + 1} suspended runs per case {list(cases)}, each approved")
        runs: dict[str, list[str]] = {}
        for case, (where, steps) in cases.items():
            builder = stores[where][0]
            runs[case] = []
            for _ in range(RESUME_SAMPLES + 1):
                run_id, request_id = await _suspend(Runner(builder), steps)
                await Approvals(builder).approve(request_id, by="bench")
                runs[case].append(run_id)
        samples: dict[str, list[float]] = {case: [] for case in cases}
        names = list(cases)
        for i in range(RESUME_SAMPLES + 1):  # the first round warms up: agent import, statements, caches
            for case in names[i % len(names) :] + names[: i % len(names)]:
                store: Any = stores[cases[case][0]][1]
                runner = Runner(store)
                store.first_append_at = None
                with quiet_gc():
                    t0 = time.perf_counter()
                    # the approved call runs (its ToolStarted is the first append), then it is handed back
                    result = await runner.resume(runs[case][i], stop=lambda: True)
                if store.first_append_at is None or result.status != "running":
                    raise RuntimeError(f"resuming {runs[case][i]} did not go on: {result.status}")
                if i:
                    samples[case].append((store.first_append_at - t0) * 1000)
    finally:
        for pair in stores.values():
            for store in pair:
                await store.aclose()
        for schema in schemas:
            await _drop(schema)

    first, longer, control, among = names

    def ratio(case: str) -> float:
        return median(a / s for a, s in zip(samples[case], samples[first], strict=True))

    per_step_us = (median(samples[longer]) - median(samples[first])) / (long - short) * 1000
    durability = " (crash durability)" if backend == "sqlite" else ""
    return [
        figure(
            f"resume_ms.{backend}.{first}",
            median(samples[first]),
            "ms",
            note=f"Runner.resume(run_id) of a run suspended for approval after {short} steps, once approved, "
            f"by another store instance{durability}, to its first append committed (the approved call's "
            f"ToolStarted); median of {RESUME_SAMPLES}",
        ),
        figure(
            f"resume_ms.{backend}.{longer}",
            median(samples[longer]),
            "ms",
            note=f"the same after {long} steps: {per_step_us:.0f} µs more per journaled step (load, replay)",
        ),
        figure(
            f"resume_ms.{backend}.{among}",
            median(samples[among]),
            "ms",
            ratio=ratio(among),
            note=f"{short} steps, in a store also holding {WAITING_RUNS:,} runs suspended for approval "
            f"(undecided); ratio to {first}, interleaved; the same runs in a second store without them: "
            f"{ratio(control):.2f}x (the noise between two stores)",
        ),
    ]


# -- entry points ----------------------------------------------------------------------------------


async def _main() -> list[dict[str, Any]]:
    postgres_down = await _postgres_ready()
    with tempfile.TemporaryDirectory(prefix="tether-bench-journal-") as tmp:
        workdir = Path(tmp)
        log("-- journal cost per step, against a bare INSERT of the same bytes")
        figures = await _journal_cost(workdir, postgres_down)
        log("-- resume latency")
        figures += await _resume_latency("sqlite", workdir)
        if postgres_down is None:
            figures += await _resume_latency("postgres", workdir)
        else:
            figures.append(skipped("resume_ms.postgres", postgres_down))
    return figures


def main() -> list[dict[str, Any]]:
    """Measure everything; the figures as `_common.figure` dicts."""
    return anyio.run(_main)


async def _profile(variant: str, steps: int) -> None:
    """Print where the time of `steps` step appends goes, by cProfile (read shares, not absolute time)."""
    import cProfile

    started, events = await _one_step()
    schema = f"tether_bench_{secrets.token_hex(4)}"
    with tempfile.TemporaryDirectory(prefix="tether-profile-") as tmp:
        if variant == "postgres":
            store = _postgres_store(schema)
        else:
            durability = "power-loss" if variant == "sqlite_power_loss" else "crash"
            store = SQLiteStore(Path(tmp) / "profile.db", durability=durability)  # type: ignore[arg-type]
        try:
            writer = _StoreWriter(store, started, events, leased=False)
            await _time_steps(writer, 50)
            todo = await writer.prepare(steps)
            profiler = cProfile.Profile()
            with quiet_gc():
                profiler.enable()
                for run_id, seq, lease in todo:
                    await writer.write(run_id, seq, lease)
                profiler.disable()
        finally:
            await store.aclose()
            if variant == "postgres":
                await _drop(schema)

    print_profile(profiler, steps=steps, heading=f"{variant}: {steps} step appends", top=25)


if __name__ == "__main__":
    if sys.argv[1:2] == ["profile"]:
        args = sys.argv[2:]
        anyio.run(_profile, args[0] if args else "sqlite_crash", int(args[1]) if len(args) > 1 else 2000)
    else:
        from _common import format_table

        print(format_table(main()))
