"""Workers on PostgreSQL: completed runs per second with 1, 2 and 4 worker processes, and pickup latency.

Each configuration gets a fresh schema and N `tether worker` processes (`CONCURRENCY` runs each); once
they are up (their start-up banner printed) and idle, they are paused (SIGSTOP), `RUNS` runs of the core
workload (`_workers_agent.py`: scripted model, 10 tool calls, 11 steps) are submitted, and the workers
are let go (SIGCONT). Throughput is read from the journals, not from the outside: completed runs over the
time from the first claim (the first `run_resumed`) to the last `run_finished`.

Pickup latency is the time from a submission (`run_started.at`) to the run's first step being journaled
(`model_responded.at`, step 1) with one idle worker polling at its default interval: what a queued run,
or one handed back by a draining worker, waits before it moves again.

Where the machine has `/proc`, the worker processes' CPU time per completed run is reported too, with how
busy the machine's CPUs were meanwhile: on a machine whose CPUs one worker and PostgreSQL already fill,
more workers cannot add throughput, and these figures say whether that was the case.

Run through `bench/run.py`. Needs PostgreSQL: `TETHER_BENCH_POSTGRES` (a libpq string), else the test
server `host=127.0.0.1 port=5432 dbname=test user=root`.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

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


_STDERR: dict[int, IO[bytes]] = {}
"""Each worker's stderr (warnings and errors), by pid: what to show when one exits early."""


def _start_workers(url: str, n: int, *, poll_s: float = 0.05) -> list[subprocess.Popen[bytes]]:
    procs = []
    for _ in range(n):
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by _stop, after the worker exits
        proc = subprocess.Popen(
            [*TETHER, "worker", "--store", url, "--concurrency", str(CONCURRENCY), "--poll-s", str(poll_s)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        _STDERR[proc.pid] = stderr
        procs.append(proc)
    return procs


def _check_alive(procs: list[subprocess.Popen[bytes]]) -> None:
    """Fail with the end of its stderr if a worker has exited (a benchmark of fewer workers is wrong)."""
    for p in procs:
        if p.poll() is not None:
            stderr = _STDERR[p.pid]
            stderr.seek(0)
            tail = stderr.read().decode(errors="replace").strip().splitlines()[-15:]
            raise RuntimeError(
                f"a `tether worker` process exited early with status {p.returncode}; its stderr ended:\n"
                + "\n".join(tail)
            )


async def _wait_ready(procs: list[subprocess.Popen[bytes]]) -> None:
    """Wait until every worker has imported tether and opened its store (its banner is on stderr).

    Start-up costs a second or more of CPU per process on a loaded machine: inside the timed window, it
    would be counted against the runs, and more so the more workers there are.
    """
    with anyio.fail_after(120):
        waiting = list(procs)
        while waiting:
            _check_alive(procs)
            for p in list(waiting):
                stderr = _STDERR[p.pid]
                stderr.seek(0)
                if b"SIGTERM or Ctrl-C drains" in stderr.read():
                    waiting.remove(p)
            await anyio.sleep(0.1)
    await anyio.sleep(0.5)  # and has polled the queue once: its pool is open


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        _STDERR.pop(p.pid).close()


def _cpu_s(pid: int) -> float:
    """CPU time (user + system) the process has used so far, from /proc (0 where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> tuple[float, float]:
    """Busy and total CPU time of the whole machine so far, from /proc/stat (zeros where there is none)."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = ticks[3] + ticks[4]  # idle and iowait
    return float(sum(ticks) - idle), float(sum(ticks))


async def _throughput(workers: int) -> tuple[float, float, float]:
    """Completed runs per second with `workers` worker processes; the workers' CPU ms per run; and the
    share of the machine's CPU time that was busy (everyone's) while they ran."""
    from tether.journal import open_store
    from tether.workers import submit

    schema = f"tether_bench_{secrets.token_hex(4)}"
    store = open_store(_url(schema))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        await store.list_runs()  # the schema exists before the workers poll it
        procs = _start_workers(_url(schema), workers)
        await _wait_ready(procs)  # start-up is not throughput
        # The workers are stopped while the runs are queued, then let go at once: otherwise they would
        # drain the queue as fast as this process fills it, and with more workers taking CPU from the
        # submitter, the figure would be the submission rate, not theirs.
        for p in procs:
            p.send_signal(signal.SIGSTOP)
        try:
            run_ids = [await submit(store, workload.agent, workload.INPUT) for _ in range(RUNS)]
        finally:
            cpu_before, busy_before = sum(_cpu_s(p.pid) for p in procs), _machine_busy()
            for p in procs:
                p.send_signal(signal.SIGCONT)
        with anyio.fail_after(600):
            while len(await store.list_runs(status="completed", limit=RUNS + 1)) < RUNS:
                _check_alive(procs)
                await anyio.sleep(1.0)  # rarely: this process shares the CPUs being measured
        cpu_ms = (sum(_cpu_s(p.pid) for p in procs) - cpu_before) / RUNS * 1000
        busy_after = _machine_busy()
        busy = (busy_after[0] - busy_before[0]) / max(1.0, busy_after[1] - busy_before[1])
        first_claim, last_finish = float("inf"), 0.0
        for run_id in run_ids:
            events = [s.event for s in await store.load(run_id)]
            first_claim = min(first_claim, next(e.at for e in events if e.type == "run_resumed"))
            last_finish = max(last_finish, events[-1].at)
            if events[-1].type != "run_finished" or events[-1].steps != workload.STEPS_PER_RUN:
                raise RuntimeError(f"the benchmark workload is broken: run {run_id} ended {events[-1]}")
        return RUNS / (last_finish - first_claim), cpu_ms, busy
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
        await _wait_ready(procs)
        await anyio.sleep(1.0)  # and idle
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
    cpu_figures: list[dict[str, Any]] = []
    for n in WORKER_COUNTS:
        log(f"   {RUNS} runs on {n} worker process(es) x {CONCURRENCY}")
        rates[n], cpu_ms, busy = await _throughput(n)
        cpu_figures.append(
            figure(
                f"cpu_ms_per_run.postgres_{n}_workers",
                cpu_ms,
                "ms/run",
                note=f"CPU time (user + system) of the {n} worker process(es) per completed run; the "
                f"machine's {cpus} CPUs were {busy:.0%} busy meanwhile (all processes, PostgreSQL and "
                "other users included)",
            )
        )
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
    figures += cpu_figures
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
