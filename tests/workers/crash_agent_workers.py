"""The agent the crash tests' worker processes run, and the ledger its tools and model write to.

Input: `job J: record entries 1 2 3 4`. The model (scripted, deterministic by conversation) asks for
`record` (odd entries: not idempotent) or `record_idem` (even entries: idempotent) for entries 1 to 4,
then answers. Every model request is written to `model_calls` (job, tool results seen, time, pid), and
every tool effect to `ledger`, which has a UNIQUE idempotency key and a UNIQUE (job, entry):

- `record` does a plain INSERT: a second execution of a call (same key), or a second call for an entry
  already recorded (a new key), violates a constraint; that is counted in `violations`, then raised.
- `record_idem` uses the key as it should be used (`ON CONFLICT (key) DO NOTHING`): re-running an
  in-doubt call is harmless, but an entry recorded under two keys still violates (job, entry).

Where the ledger is comes from the environment: CRASH_LEDGER_PG (a libpq string; tables in schema
CRASH_LEDGER_SCHEMA) or CRASH_LEDGER_SQLITE (a file). CRASH_DELAY_S slows the model and tools down so
that kills land mid-run. CRASH_STALL_DIR makes the first `record_idem(n=2)` across all processes stall
(for the SIGSTOP test): it creates `stalled-<pid>` there and sleeps CRASH_STALL_S.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio

from tether import Agent, Limits, ToolContext, tool
from tether.models import ToolResultMessage, UserMessage
from tether.testing import ScriptedModel, call

ENTRIES = 4
DELAY_S = float(os.environ.get("CRASH_DELAY_S", "0"))

PG_TABLES = (
    "CREATE TABLE IF NOT EXISTS model_calls (job INTEGER NOT NULL, done INTEGER NOT NULL, "
    "at DOUBLE PRECISION NOT NULL, pid INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS ledger (idempotency_key TEXT NOT NULL UNIQUE, job INTEGER NOT NULL, "
    "n INTEGER NOT NULL, pid INTEGER NOT NULL, UNIQUE (job, n))",
    "CREATE TABLE IF NOT EXISTS violations (kind TEXT NOT NULL, idempotency_key TEXT NOT NULL, "
    "job INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL)",
)
SQLITE_TABLES = tuple(t.replace("DOUBLE PRECISION", "REAL") for t in PG_TABLES)


class Ledger:
    """One connection per process, autocommit: each effect is durable the moment the tool returns."""

    def __init__(self) -> None:
        self._pg: Any = None
        self._lite: sqlite3.Connection | None = None
        self.paramstyle = "%s"

    def _conn(self) -> Any:
        if self._pg is None and self._lite is None:
            if dsn := os.environ.get("CRASH_LEDGER_PG"):
                import psycopg

                self._pg = psycopg.connect(dsn, autocommit=True)
                self._pg.execute(f'SET search_path TO "{os.environ["CRASH_LEDGER_SCHEMA"]}"')
            else:
                self._lite = sqlite3.connect(
                    os.environ["CRASH_LEDGER_SQLITE"], timeout=30, isolation_level=None
                )
                self._lite.execute("PRAGMA journal_mode=WAL")
                self.paramstyle = "?"
        return self._pg if self._pg is not None else self._lite

    def execute(self, sql: str, params: tuple[Any, ...]) -> None:
        conn = self._conn()
        conn.execute(sql.replace("%s", self.paramstyle), params)

    def is_unique_violation(self, exc: BaseException) -> bool:
        if isinstance(exc, sqlite3.IntegrityError):
            return True
        try:
            import psycopg
        except ImportError:  # pragma: no cover
            return False
        return isinstance(exc, psycopg.errors.UniqueViolation)


ledger = Ledger()


def job_of(messages: Any) -> int:
    first = next(m for m in messages if isinstance(m, UserMessage))
    match = re.match(r"job (\d+):", first.content)
    assert match, first.content
    return int(match.group(1))


def script(messages: Any, tools: Any) -> Any:
    job = job_of(messages)
    done = sum(isinstance(m, ToolResultMessage) for m in messages)
    ledger.execute(
        "INSERT INTO model_calls (job, done, at, pid) VALUES (%s, %s, %s, %s)",
        (job, done, time.time(), os.getpid()),
    )
    if done >= ENTRIES:
        return f"recorded {ENTRIES} entries for job {job}"
    n = done + 1
    return call("record" if n % 2 else "record_idem", job=job, n=n)


def _effect(sql: str, ctx: ToolContext, job: int, n: int) -> None:
    try:
        ledger.execute(sql, (ctx.idempotency_key, job, n, os.getpid()))
    except Exception as exc:
        if ledger.is_unique_violation(exc):
            ledger.execute(
                "INSERT INTO violations (kind, idempotency_key, job, n, pid) VALUES (%s, %s, %s, %s, %s)",
                ("duplicate", ctx.idempotency_key, job, n, os.getpid()),
            )
        raise


async def _stall_once(n: int) -> None:
    where = os.environ.get("CRASH_STALL_DIR")
    if not where or n != 2:
        return
    try:
        fd = os.open(Path(where) / "stall-claimed", os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return  # only the first execution of this call, in whichever process, stalls
    os.close(fd)
    (Path(where) / f"stalled-{os.getpid()}").touch()
    await anyio.sleep(float(os.environ.get("CRASH_STALL_S", "3")))


@tool
async def record(job: int, n: int, ctx: ToolContext) -> str:
    """Record entry n of a job (not idempotent: a second execution is a second effect)."""
    _effect("INSERT INTO ledger (idempotency_key, job, n, pid) VALUES (%s, %s, %s, %s)", ctx, job, n)
    # after the effect: a kill now leaves a call that happened but has no recorded outcome, the case
    # in which re-running it blindly would do it twice
    if DELAY_S:
        await anyio.sleep(DELAY_S)
    return f"entry {n} of job {job} recorded"


@tool(idempotent=True)
async def record_idem(job: int, n: int, ctx: ToolContext) -> str:
    """Record entry n of a job, idempotently by the call's key."""
    await _stall_once(n)
    if DELAY_S:
        await anyio.sleep(DELAY_S)
    _effect(
        "INSERT INTO ledger (idempotency_key, job, n, pid) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (idempotency_key) DO NOTHING",
        ctx,
        job,
        n,
    )
    return f"entry {n} of job {job} recorded"


agent = Agent(
    "ledger-writer",
    instructions="Record every entry with the tools, then say so.",
    tools=[record, record_idem],
    model=ScriptedModel(script, record=False, delay_s=DELAY_S),
    limits=Limits(max_steps=12, timeout_s=120),
    ref=f"{Path(__file__).resolve()}:agent",
    on_in_doubt="report",  # no human in this test: an in-doubt call is reported to the model, not re-run
)
