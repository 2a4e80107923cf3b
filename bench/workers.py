"""Workers on PostgreSQL: completed runs per second with 1, 2 and 4 worker processes, and pickup latency.

Each configuration gets a fresh schema and N `tether worker` processes (`CONCURRENCY` runs each); once
they are up and idle, `RUNS` runs of the core workload (`_workers_agent.py`: scripted model, 10 tool
calls, 11 steps) are submitted. Throughput is read from the journals, not from the outside: completed
runs over the time from the first claim (the first `run_resumed`) to the last `run_finished`.

Pickup latency is the time from a submission (`run_started.at`) to the run's first step being journaled
(`model_responded.at`, step 1) with one idle worker polling at its default interval: what a queued run,
or one handed back by a draining worker, waits before it moves again.

Run through `bench/run.py`. Needs PostgreSQL: `TETHER_BENCH_POSTGRES` (a libpq string), else the test
server `host=127.0.0.1 port=5432 dbname=test user=root`.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
from _common import Skip, figure, log, median

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # _workers_agent, when this module is loaded by path
import _workers_agent as workload  # noqa: E402 - needs the path above

__all__ = ["main"]

DSN = os.environ.get("TETHER_BENCH_POSTGRES", "host=127.0.0.1 port=5432 dbname=test user=root")
RUNS = 400
WORKER_COUNTS = (1, 2, 4)
CONCURRENCY = 8
LATENCY_SAMPLES = 20
POLL_S = 0.5
"""The worker's default idle poll interval (`tether worker --poll-s`)."""
TETHER = [sys.executable, "-m", "tether.cli", "--log-level", "warning"]


def _url(schema: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    p = conninfo_to_dict(DSN)
    user = f"{p['user']}@" if p.get("user") else ""
    where = f"{p.get('host', '127.0.0.1')}:{p.get('port', 5432)}/{p.get('dbname', 'test')}"
    return f"postgresql://{user}{where}?schema={schema}"


async def _drop(schema: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _start_workers(url: str, n: int, *, poll_s: float = 0.05) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [*TETHER, "worker", "--store", url, "--concurrency", str(CONCURRENCY), "--poll-s", str(poll_s)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(n)
    ]


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def _throughput(workers: int) -> float:
    """Completed runs per second with `workers` worker processes."""
    from tether.journal import open_store
    from tether.workers import submit

    schema = f"tether_bench_{secrets.token_hex(4)}"
    store = open_store(_url(schema))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        await store.list_runs()  # the schema exists before the workers poll it
        procs = _start_workers(_url(schema), workers)
        # every worker up and polling before the first run is queued: start-up is not throughput
        await anyio.sleep(2.0)
        run_ids = [await submit(store, workload.agent, workload.INPUT) for _ in range(RUNS)]
        with anyio.fail_after(600):
            while len(await store.list_runs(status="completed", limit=RUNS + 1)) < RUNS:
                if any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"a worker exited early: {[p.returncode for p in procs]}")
                await anyio.sleep(1.0)  # rarely: this process shares the CPUs being measured
        first_claim, last_finish = float("inf"), 0.0
        for run_id in run_ids:
            events = [s.event for s in await store.load(run_id)]
            first_claim = min(first_claim, next(e.at for e in events if e.type == "run_resumed"))
            last_finish = max(last_finish, events[-1].at)
            if events[-1].type != "run_finished" or events[-1].steps != workload.STEPS_PER_RUN:
                raise RuntimeError(f"the benchmark workload is broken: run {run_id} ended {events[-1]}")
        return RUNS / (last_finish - first_claim)
    finally:
        _stop(procs)
        await store.aclose()
        await _drop(schema)


async def _pickup_latency() -> list[float]:
    """Seconds from submission to the first journaled step, with one idle worker at the default poll."""
    from tether.journal import open_store
    from tether.workers import submit

    schema = f"tether_bench_{secrets.token_hex(4)}"
    store = open_store(_url(schema))
    await store.list_runs()  # the schema exists before the worker starts polling it
    procs = _start_workers(_url(schema), 1, poll_s=POLL_S)
    samples: list[float] = []
    try:
        await anyio.sleep(1.5)  # the worker is up and idle
        for i in range(LATENCY_SAMPLES):
            run_id = await submit(store, workload.agent, workload.INPUT)
            with anyio.fail_after(60):
                while not (await store.get_run(run_id)).terminal:
                    await anyio.sleep(0.02)
            events = [s.event for s in await store.load(run_id)]
            first_step = next(e.at for e in events if e.type == "model_responded")
            samples.append(first_step - events[0].at)
            await anyio.sleep(0.05 + (i % 7) * POLL_S / 7)  # submissions land at every phase of the poll
        return samples
    finally:
        _stop(procs)
        await store.aclose()
        await _drop(schema)


async def _main() -> list[dict[str, Any]]:
    try:
        import psycopg
    except ImportError:
        raise Skip("needs PostgreSQL support: pip install 'tether[postgres]'") from None
    try:
        conn = await psycopg.AsyncConnection.connect(DSN, connect_timeout=3)
        await conn.close()
    except psycopg.OperationalError as exc:
        raise Skip(f"PostgreSQL is not reachable at {DSN!r} ({exc}); set TETHER_BENCH_POSTGRES") from None

    figures: list[dict[str, Any]] = []
    rates: dict[int, float] = {}
    cpus = os.cpu_count() or 1
    for n in WORKER_COUNTS:
        log(f"   {RUNS} runs on {n} worker process(es) x {CONCURRENCY}")
        rates[n] = await _throughput(n)
        figures.append(
            figure(
                f"runs_per_s.postgres_{n}_workers",
                rates[n],
                "runs/s",
                ratio=None if n == 1 else rates[n] / rates[1],
                scale="" if n != 1 else "LangGraph 20 (in one process, issue 2)",
                note=(
                    f"{RUNS} runs of 11 steps, {n} `tether worker` processes x {CONCURRENCY}; "
                    "first claim to last finish, from the journals"
                )
                if n == 1
                else "",
            )
        )
    top = WORKER_COUNTS[-1]
    figures.append(
        figure(
            f"scaling.{top}_vs_1_workers",
            rates[top] / rates[1],
            "x",
            note=(
                f"runs/s with {top} worker processes over 1; they share this machine's {cpus} CPUs with "
                f"PostgreSQL, so {min(top, cpus)}x is the ceiling here"
            ),
        )
    )
    log(f"   pickup latency, {LATENCY_SAMPLES} submissions to one idle worker (poll {POLL_S:g}s)")
    samples = sorted(await _pickup_latency())
    figures.append(
        figure(
            "pickup_latency_ms.p50",
            median(samples) * 1000,
            "ms",
            note=(
                f"submission to first journaled step, one idle worker polling every {POLL_S:g}s "
                "(the default): about half the interval on average"
            ),
        )
    )
    figures.append(figure("pickup_latency_ms.max", samples[-1] * 1000, "ms"))
    return figures


def main() -> list[dict[str, Any]]:
    """Measure everything; the figures as `_common.figure` dicts."""
    return anyio.run(_main)


if __name__ == "__main__":
    from _common import format_table

    print(format_table(main()))
