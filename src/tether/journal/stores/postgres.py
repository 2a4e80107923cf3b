"""The scale-out store: PostgreSQL through psycopg 3, with a pool of connections.

Many workers on many hosts share one database. An append checks that the journal is where the writer
thinks it is, inserts the events with their hash chain and updates the run's summary, all in one
transaction under the run's row lock, so two writers of one run are serialised and the slower one gets
`JournalConflict` instead of forking the journal.

An append costs one round trip and one commit when this store wrote the run's previous events itself
(the usual case: one worker drives a run from step to step): a single statement updates the run's row
only if it still has the event count and head hash the store last wrote, and inserts the events only if
it did. Otherwise (the first write after a resume, another writer got there first) it takes the row
lock with `SELECT ... FOR NO KEY UPDATE`, reads the head, and writes under the lock.

A connection the server dropped (a restart, a failover) is replaced and the call tried once more. A
write whose commit was in flight when the connection died is recognised on that retry by its hash: the
journal either holds exactly those events, and the write succeeded, or it does not, and it is made now.

Workers claim runs from the `leases` table with `FOR UPDATE SKIP LOCKED`, so concurrent claimers on
any number of hosts never wait for each other and never get the same run. Lease times are the server's
clock, the one clock all workers share. A leased append takes a `FOR SHARE` lock on the run's lease row
in the same statement as its write, and writes only if the lease still has the writer's epoch: a claim
(which updates that row) either commits before the append, which then matches nothing and fails with
`LeaseLost`, or waits until the append has committed and then loads a journal that includes it. The lease
row is always locked before the run's row, by every statement that takes both, so they cannot deadlock.

The tables live in their own schema (default `tether`), created and upgraded on first use by the
versioned migrations in `tether.journal._migrations`. Events are stored as the exact JSON text their
hash covers (a TEXT column), so `verify` recomputes every hash over the bytes that were written.

Needs the asyncio event loop (psycopg's async driver and pool are built on it).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio

try:
    import psycopg
    import psycopg_pool
    from psycopg import errors as pg_errors
    from psycopg.conninfo import conninfo_to_dict
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError("install 'tether[postgres]' to use PostgresStore") from exc

from ...exceptions import ConfigError, JournalConflict, RunNotFound, StoreError, StoreUnavailable
from .._events import TERMINAL_STATUSES, Event, RunFinished, RunStarted, StoredEvent
from .._migrations import check_schema_name, migrate_postgres
from .._store import (
    Lease,
    RunInfo,
    Store,
    chain_hash,
    check_history,
    check_lease_s,
    lease_lost,
    new_summary,
    not_finished,
    run_filters,
    same_submission,
    stored_events,
    summarize,
    verify_chain,
    wake_time,
)

__all__ = ["PostgresStore"]

T = TypeVar("T")

_RUN_FIELDS = (
    "run_id",
    "agent",
    "agent_ref",
    "status",
    "reason",
    "input",
    "output",
    "model",
    "user_id",
    "created_at",
    "updated_at",
    "steps",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "event_count",
    "head_hash",
)
# What an append reads under the row lock and writes back: the summary fields events can change.
_MUTABLE_FIELDS = (
    "status",
    "reason",
    "output",
    "updated_at",
    "steps",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "event_count",
    "head_hash",
)
_REMEMBERED_RUNS = 4096
"""Runs whose head an instance keeps, so that appending to them takes one round trip."""
# Errors in which the server itself says the database is not there or not usable right now.
_FATAL_CONNECT_HINTS = ("password authentication failed", "does not exist", "no pg_hba.conf entry")


class _Queries:
    """Every statement the store sends, with the schema name in place (validated: it needs no quoting)."""

    def __init__(self, schema: str) -> None:
        runs, events = f'"{schema}".runs', f'"{schema}".events'
        cols = ", ".join(_RUN_FIELDS)
        # The new events travel as column arrays in binary (%b): one statement for any batch size, and
        # the JSON goes over the wire as it is, not escaped into an array literal and parsed back.
        new_events = (
            "unnest(%(seqs)b::integer[], %(types)b::text[], %(ats)b::float8[], %(datas)b::text[], "
            "%(hashes)b::text[]) AS e (seq, type, at, data, hash)"
        )
        self.select_run = f"SELECT {cols} FROM {runs} WHERE run_id = %s"
        self.list_runs = f"SELECT {cols} FROM {runs}"
        self.select_events = f"SELECT seq, data, hash FROM {events} WHERE run_id = %s ORDER BY seq"
        self.first_hash = f"SELECT hash FROM {events} WHERE run_id = %s AND seq = 0"
        # NO KEY UPDATE, not UPDATE: it serialises appenders just the same, but does not block the
        # KEY SHARE lock a foreign key (a lease row) takes on the run, so enqueueing never waits on a write.
        self.lock_run = f"SELECT {', '.join(_MUTABLE_FIELDS)} FROM {runs} WHERE run_id = %s FOR NO KEY UPDATE"
        self.create = (
            f"WITH run AS (INSERT INTO {runs} ({cols}) VALUES ({', '.join(f'%({f})s' for f in _RUN_FIELDS)}) "
            f"RETURNING run_id) INSERT INTO {events} (run_id, seq, type, at, data, hash) "
            f"SELECT run.run_id, e.seq, e.type, e.at, e.data, e.hash FROM run, {new_events}"
        )
        # --- the queue -------------------------------------------------------------------------------
        leases = f'"{schema}".leases'
        now = "extract(epoch FROM now())::float8"  # the server's clock, shared by every worker
        finished = ", ".join(f"'{s}'" for s in sorted(TERMINAL_STATUSES))
        # A run, its first event and its queue row in one statement. A second submission with the same
        # key waits on the unique index for the first to commit, then inserts nothing and returns no
        # row; the caller reads the first run's id. A clash of run ids is not arbitrated: it raises.
        self.enqueue = (
            f"WITH run AS (INSERT INTO {runs} ({cols}, idempotency_key) "
            f"VALUES ({', '.join(f'%({f})s' for f in _RUN_FIELDS)}, %(idempotency_key)s) "
            "ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING run_id), "
            f"ev AS (INSERT INTO {events} (run_id, seq, type, at, data, hash) "
            f"SELECT run.run_id, e.seq, e.type, e.at, e.data, e.hash FROM run, {new_events}), "
            f"queued AS (INSERT INTO {leases} (run_id, epoch, ready_at) SELECT run_id, 0, {now} FROM run) "
            "SELECT run_id FROM run"
        )
        self.run_by_key = f"SELECT run_id, agent, input FROM {runs} WHERE idempotency_key = %s"
        # The oldest runnable run; SKIP LOCKED passes over rows another claimer (or a leased append)
        # holds, so claimers never queue behind each other. `=` on a LIMIT 1 subquery: an InitPlan,
        # run once.
        self.claim = (
            f"UPDATE {leases} SET worker_id = %(worker_id)s, epoch = epoch + 1, "
            f"expires_at = {now} + %(lease_s)s WHERE run_id = (SELECT run_id FROM {leases} "
            f"WHERE ready_at IS NOT NULL AND ready_at <= {now} AND (worker_id IS NULL OR expires_at < {now}) "
            "ORDER BY ready_at LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING run_id, epoch, expires_at"
        )
        self.renew = (
            f"UPDATE {leases} SET expires_at = {now} + %(lease_s)s "
            "WHERE run_id = %(run_id)s AND epoch = %(epoch)s RETURNING expires_at"
        )
        self.release = (
            f"UPDATE {leases} SET worker_id = NULL, expires_at = NULL, epoch = epoch + 1, "
            f"ready_at = CASE WHEN ready_at IS NULL OR (SELECT status FROM {runs} r "
            f"WHERE r.run_id = %(run_id)s) IN ({finished}) THEN NULL "
            f"WHEN (SELECT status FROM {runs} r WHERE r.run_id = %(run_id)s) = 'suspended' THEN ready_at "
            f"ELSE {now} + %(delay_s)s END "  # a suspended run keeps its timer
            "WHERE run_id = %(run_id)s AND epoch = %(epoch)s"
        )
        self.seize = (
            f"INSERT INTO {leases} AS l (run_id, worker_id, epoch, expires_at) "
            f"SELECT run_id, %(worker_id)s, 1, {now} + %(lease_s)s FROM {runs} WHERE run_id = %(run_id)s "
            "ON CONFLICT (run_id) DO UPDATE SET worker_id = EXCLUDED.worker_id, epoch = l.epoch + 1, "
            "expires_at = EXCLUDED.expires_at RETURNING epoch, expires_at"
        )
        self.lease_of = f"SELECT epoch, worker_id FROM {leases} WHERE run_id = %s"
        self.lock_lease = f"SELECT epoch, worker_id FROM {leases} WHERE run_id = %s FOR SHARE"
        self.finish_queue = f"UPDATE {leases} SET ready_at = NULL WHERE run_id = %s"
        self.lock_for_delete = f"SELECT status FROM {runs} WHERE run_id = %s FOR UPDATE"
        self.delete_events = f"DELETE FROM {events} WHERE run_id = %s"
        self.delete_run = f"DELETE FROM {runs} WHERE run_id = %s"  # its lease row goes by ON DELETE CASCADE
        # One statement, so one round trip and an atomic commit even outside a transaction block: the
        # events go in only if the run's row still has the count and head the writer built on. The
        # UPDATE takes the row lock; a writer that lost the race re-checks the WHERE against the
        # winner's row (READ COMMITTED), matches nothing and inserts nothing.
        # It comes in four forms: with a lease to check or not, finishing the run or not.
        set_run = ", ".join(f"{f} = %({f})s" for f in _MUTABLE_FIELDS)
        insert_events = (
            f"INSERT INTO {events} (run_id, seq, type, at, data, hash) "
            f"SELECT run.run_id, e.seq, e.type, e.at, e.data, e.hash FROM run, {new_events}"
        )
        self._appends: dict[tuple[bool, bool, bool], str] = {}
        for leased, finishing, waking in itertools.product((False, True), repeat=3):
            if finishing and waking:
                continue  # a finished run never waits (`wake_time`)
            ctes = []
            condition = ""
            if leased:
                # Locked before the run's row (see the module docstring); held until commit.
                ctes.append(
                    f"lease AS (SELECT 1 FROM {leases} WHERE run_id = %(run_id)s AND epoch = %(epoch)s "
                    "FOR SHARE)"
                )
                condition = " AND EXISTS (SELECT 1 FROM lease)"
            ctes.append(
                f"run AS (UPDATE {runs} SET {set_run} WHERE run_id = %(run_id)s "
                "AND event_count = %(expected_seq)s AND head_hash = %(prev_hash)s"
                f"{condition} RETURNING run_id)"
            )
            if finishing:
                # a finished run leaves the queue in the same transaction as its last event
                ctes.append(
                    f"done AS (UPDATE {leases} SET ready_at = NULL WHERE run_id IN (SELECT run_id FROM run))"
                )
            if waking:
                # an approval request's deadline (a timer) or a decision: when the run may be claimed
                ctes.append(
                    f"wake AS (INSERT INTO {leases} (run_id, epoch, ready_at) "
                    f"SELECT run_id, 0, COALESCE(%(wake_at)s::float8, {now}) FROM run "
                    "ON CONFLICT (run_id) DO UPDATE SET ready_at = EXCLUDED.ready_at)"
                )
            self._appends[leased, finishing, waking] = f"WITH {', '.join(ctes)} {insert_events}"
        self.append = self._appends[False, False, False]

    def append_for(self, *, leased: bool, finishing: bool, waking: bool = False) -> str:
        """The append statement for a write with or without a lease, that does or does not finish the run
        or set when it may be claimed next."""
        return self._appends[leased, finishing, waking]


@dataclass
class _Attempt:
    """How far one try of a call got, so that a failure can be judged safe to retry or in doubt."""

    after_in_doubt: bool = False
    """The previous try lost its connection while its write may have been committing."""
    conn: psycopg.AsyncConnection[Any] | None = None
    committing: bool = False
    """Set just before a statement that commits is sent: a lost connection now leaves the outcome unknown."""


_EventRow = tuple[str, int, str, float, str, str]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _event_rows(run_id: str, summary: dict[str, Any], events: Sequence[Event], seq: int) -> list[_EventRow]:
    """Serialise and chain `events` from `seq` on, folding them into `summary` (which it mutates)."""
    prev = summary["head_hash"]
    rows: list[_EventRow] = []
    for ev in events:
        data = ev.model_dump_json()
        prev = chain_hash(prev, run_id, seq, data)
        rows.append((run_id, seq, ev.type, ev.at, data, prev))
        seq += 1
    summarize(summary, events)
    summary["event_count"] = seq
    summary["head_hash"] = prev
    return rows


def _event_params(rows: Sequence[_EventRow]) -> dict[str, list[Any]]:
    """The rows as the column arrays the write statements unnest (one statement for any batch size)."""
    return {
        "seqs": [r[1] for r in rows],
        "types": [r[2] for r in rows],
        "ats": [r[3] for r in rows],
        "datas": [r[4] for r in rows],
        "hashes": [r[5] for r in rows],
    }


class PostgresStore(Store):
    """A journal in a PostgreSQL database, shared by any number of workers.

    The pool opens on first use (creating or upgrading the schema) and closes with `aclose()`, or by
    itself when its event loop shuts down (`asyncio.run`/`anyio.run` returning): the store can then be
    used again on a new loop. While that loop runs, the store belongs to it; using it from another loop
    at the same time is an error.

    Args:
        conninfo: a libpq connection string or URL: `postgresql://user@host:5432/db`,
            `host=... dbname=...`; empty takes everything from the `PG*` environment variables.
        schema: the PostgreSQL schema holding tether's tables (a plain lowercase identifier); several
            independent tethers can share one database under different schemas.
        min_size: connections the pool keeps open when idle.
        max_size: connections the pool may open at once; more concurrent calls wait for one.
        timeout_s: how long a call waits for a pooled connection, and an append for a run's row lock
            held by another writer, before failing with `StoreUnavailable`.
        connect_timeout_s: how long opening one connection may take.

    Raises:
        ConfigError: the schema name, pool sizes or connection string are invalid.
    """

    def __init__(
        self,
        conninfo: str = "",
        *,
        schema: str = "tether",
        min_size: int = 1,
        max_size: int = 10,
        timeout_s: float = 10.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.schema = check_schema_name(schema)
        if min_size < 0 or max_size < max(min_size, 1):
            raise ConfigError(
                f"PostgresStore pool sizes must satisfy 0 <= min_size <= max_size and max_size >= 1; "
                f"got min_size={min_size}, max_size={max_size}"
            )
        if timeout_s <= 0 or connect_timeout_s <= 0:
            raise ConfigError("PostgresStore timeouts must be positive")
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.ProgrammingError as exc:
            raise ConfigError(f"not a valid PostgreSQL connection string: {_first_line(exc)}") from None
        self.conninfo = conninfo
        self.min_size, self.max_size = min_size, max_size
        self.timeout_s, self.connect_timeout_s = timeout_s, connect_timeout_s
        self._connect_kwargs: dict[str, Any] = {"autocommit": True}
        if "application_name" not in params:
            self._connect_kwargs["application_name"] = "tether"
        if "connect_timeout" not in params:
            self._connect_kwargs["connect_timeout"] = max(1, round(connect_timeout_s))
        host = params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST") or "localhost"
        port = params.get("port") or os.environ.get("PGPORT") or "5432"
        dbname = params.get("dbname") or os.environ.get("PGDATABASE") or params.get("user") or "postgres"
        self._server = f"{host}:{port}/{dbname}"
        self._safe_conninfo = " ".join(f"{k}={v}" for k, v in params.items() if k != "password")
        self._q = _Queries(schema)
        self._pool: psycopg_pool.AsyncConnectionPool[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._keeper: asyncio.Task[None] | None = None
        # The summary fields of the runs this store wrote last, as it wrote them: an append that builds
        # on them needs no read first. Sound because a run's row changes only with its journal, and the
        # write matches the head hash as well as the count. Bounded: a forgotten run costs one more
        # round trip, nothing else.
        self._heads: OrderedDict[str, dict[str, Any]] = OrderedDict()

    @property
    def where(self) -> str:
        """The database and schema, as errors name them (no password)."""
        return f"PostgreSQL {self._server} (schema {self.schema})"

    def __repr__(self) -> str:
        return f"PostgresStore({self._safe_conninfo!r}, schema={self.schema!r})"

    # --- connections ---------------------------------------------------------------------------------

    async def _get_pool(self) -> psycopg_pool.AsyncConnectionPool[Any]:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise ConfigError(
                "PostgresStore needs the asyncio event loop (anyio's asyncio backend)"
            ) from None
        if self._pool is not None:
            if self._loop is loop:
                return self._pool
            raise StoreError(
                f"{self!r} is open on another event loop, which is still running; its connections cannot be "
                "used from here. Use one store per event loop, or `await store.aclose()` on that loop first"
            )
        if self._opening is None or self._opening[0] is not loop:
            self._opening = (loop, asyncio.Lock())
        async with self._opening[1]:
            if self._pool is None:
                await self._prepare_schema()
                pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
                    self.conninfo,
                    kwargs=self._connect_kwargs,
                    min_size=self.min_size,
                    max_size=self.max_size,
                    timeout=self.timeout_s,
                    configure=self._configure,
                    name=f"tether:{self.schema}",
                    # The pool retries a failed connect with exponential backoff; giving up after
                    # timeout_s restarts that backoff at the next call, so a server that comes back is
                    # used again within seconds, not after a delay that doubled all through the outage.
                    reconnect_timeout=self.timeout_s,
                    open=False,
                )
                await pool.open(wait=False)
                self._pool, self._loop = pool, loop
                self._keeper = loop.create_task(
                    self._close_with_loop(pool), name=f"tether:{self.schema}:keeper"
                )
        assert self._pool is not None
        return self._pool

    async def _close_with_loop(self, pool: psycopg_pool.AsyncConnectionPool[Any]) -> None:
        """Wait as long as the event loop runs; when it shuts down, close the pool on it.

        `asyncio.run` cancels every task before it closes the loop: this one then closes the pool while
        the loop can still run the pool's workers down. A pool left open when its loop closes leaves
        worker coroutines that fail when collected, or a shutdown that waits on them.
        """
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if self._pool is pool:  # not closed by aclose(): the loop is ending
                self._pool = self._loop = None
                self._keeper = None
                await pool.close(timeout=self.timeout_s)
            raise

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        # A writer blocked on a run's row lock (a stuck transaction elsewhere) fails instead of hanging:
        # appends are shielded from cancellation, so nothing else would ever stop it.
        await conn.execute(f"SET lock_timeout = {int(self.timeout_s * 1000)}")

    async def _prepare_schema(self) -> None:
        """Connect once, outside the pool, so an unreachable server is reported at once and plainly."""
        try:
            conn = await psycopg.AsyncConnection.connect(self.conninfo, **self._connect_kwargs)
        except psycopg.Error as exc:
            raise self._error(exc, "connect") from None
        try:
            async with conn:
                await migrate_postgres(conn, self.schema, where=self.where)
        except psycopg.Error as exc:
            raise self._error(exc, "create or upgrade its tables") from None

    async def _transact(
        self, doing: str, body: Callable[[psycopg.AsyncConnection[Any], _Attempt], Awaitable[T]]
    ) -> T:
        """Run `body` on a pooled connection, translating driver errors into store errors.

        A connection the server closed (a restart, a failover, an idle timeout) fails on its next use.
        The pool's idle connections are then checked, the dead ones replaced, and `body` tried once more;
        `attempt.after_in_doubt` tells it whether the failed try may have committed, so that a write can
        recognise its own earlier commit instead of reporting a conflict with itself.
        """
        pool = await self._get_pool()
        after_in_doubt = False
        for retry in (False, True):
            attempt = _Attempt(after_in_doubt=after_in_doubt)
            try:
                async with pool.connection() as conn:
                    attempt.conn = conn
                    return await body(conn, attempt)
            except psycopg_pool.PoolTimeout:
                raise await self._pool_timeout(pool) from None
            except psycopg.OperationalError as exc:
                lost = attempt.conn is not None and attempt.conn.broken
                if lost and not retry:
                    after_in_doubt = attempt.committing
                    await pool.check()  # its idle siblings are likely dead too: weed them out first
                    continue
                raise self._error(
                    exc, doing, in_doubt=lost and (attempt.committing or after_in_doubt)
                ) from None
            except psycopg.Error as exc:
                raise self._error(exc, doing) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _remember(self, run_id: str, summary: dict[str, Any]) -> None:
        self._heads[run_id] = {f: summary[f] for f in _MUTABLE_FIELDS}
        self._heads.move_to_end(run_id)
        if len(self._heads) > _REMEMBERED_RUNS:
            self._heads.popitem(last=False)

    async def _pool_timeout(self, pool: psycopg_pool.AsyncConnectionPool[Any]) -> StoreError:
        """Why no connection came: the server is unreachable, is back but not yet reconnected, or busy."""
        try:
            probe = await psycopg.AsyncConnection.connect(self.conninfo, **self._connect_kwargs)
        except psycopg.Error as exc:
            return self._error(exc, "connect")
        await probe.close()
        if pool.get_stats().get("pool_size", 0) < self.max_size:
            return StoreUnavailable(
                f"{self.where} is reachable again, but the connection pool is still reconnecting "
                f"(waited {self.timeout_s:g}s); retry in a few seconds"
            )
        return StoreUnavailable(
            f"all {self.max_size} connections to {self.where} stayed busy for {self.timeout_s:g}s; "
            "raise max_size (or the server's max_connections) or run fewer concurrent runs per process"
        )

    def _error(self, exc: psycopg.Error, doing: str, *, in_doubt: bool = False) -> StoreError:
        """One line naming the server, what failed and what to do; retryable when waiting may fix it."""
        text = _first_line(exc)
        if in_doubt:
            return StoreUnavailable(
                f"lost the connection to {self.where} while committing ({text}); the write may or may not "
                "have been committed: reload the run's journal before writing again"
            )
        if isinstance(exc, pg_errors.LockNotAvailable):
            return StoreUnavailable(
                f"{self.where}: waited {self.timeout_s:g}s for another writer's lock on the run; "
                "a transaction may be stuck (see pg_stat_activity); resume the run when it is gone"
            )
        if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
            return StoreUnavailable(
                f"{self.where} is read-only (a standby?); point --store or TETHER_STORE at the primary"
            )
        if isinstance(exc, pg_errors.InsufficientPrivilege):
            return StoreError(
                f"the PostgreSQL user may not {doing} in {self.where}: {text}; "
                f"grant it USAGE and CREATE on schema {self.schema} (or the database)"
            )
        if isinstance(exc, (pg_errors.UndefinedTable, pg_errors.InvalidSchemaName)):
            return StoreError(
                f"tether's tables are missing from {self.where} ({text}); they were dropped while in use: "
                "open the store again to recreate them"
            )
        if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
            # libpq's own errors: no server answered, or the one we had went away
            reason = text.rsplit(": ", 1)[-1].strip()
            if any(hint in text for hint in _FATAL_CONNECT_HINTS):
                return StoreError(
                    f"{self.where} refused the connection: {reason}; "
                    "fix the user, password or database in --store or TETHER_STORE"
                )
            if doing == "connect":
                return StoreUnavailable(
                    f"cannot connect to {self.where}: {reason}; start the server (or fix the address in "
                    "--store or TETHER_STORE), then resume the run"
                )
            return StoreUnavailable(
                f"lost the connection to {self.where} while trying to {doing} ({reason}); "
                "nothing was written: retry when the server is back"
            )
        if isinstance(exc, psycopg.OperationalError):
            return StoreUnavailable(f"{self.where} could not {doing}: {text}; retry when the server is back")
        return StoreError(f"{self.where} could not {doing}: {text}")

    # --- the contract --------------------------------------------------------------------------------

    async def create_run(self, run_id: str, started: RunStarted, *, history: Sequence[Event] = ()) -> None:
        summary = new_summary(run_id)
        rows = _event_rows(run_id, summary, [started, *check_history(history)], 0)
        params = {**summary, **_event_params(rows)}

        async def body(conn: psycopg.AsyncConnection[Any], attempt: _Attempt) -> None:
            attempt.committing = True
            try:
                await conn.execute(self._q.create, params)
            except pg_errors.UniqueViolation:
                if attempt.after_in_doubt:
                    cur = await conn.execute(self._q.first_hash, (run_id,))
                    if await cur.fetchone() == (rows[0][5],):
                        return  # the try whose connection died had committed it: this very run
                raise StoreError(f"a run with id {run_id!r} exists already; use a new run id") from None

        with anyio.CancelScope(shield=True):
            await self._transact(f"create run {run_id!r}", body)
        self._remember(run_id, summary)

    async def enqueue(
        self,
        run_id: str,
        started: RunStarted,
        *,
        idempotency_key: str | None = None,
        history: Sequence[Event] = (),
    ) -> str:
        summary = new_summary(run_id)
        rows = _event_rows(run_id, summary, [started, *check_history(history)], 0)
        summary["status"] = "pending"
        params = {**summary, **_event_params(rows), "idempotency_key": idempotency_key}

        async def body(conn: psycopg.AsyncConnection[Any], attempt: _Attempt) -> str:
            attempt.committing = True
            try:
                cur = await conn.execute(self._q.enqueue, params)
                row = await cur.fetchone()
            except pg_errors.UniqueViolation:
                if attempt.after_in_doubt:
                    cur = await conn.execute(self._q.first_hash, (run_id,))
                    if await cur.fetchone() == (rows[0][5],):
                        return run_id  # the try whose connection died had committed it: this very run
                raise StoreError(f"a run with id {run_id!r} exists already; use a new run id") from None
            if row is not None:
                return str(row[0])
            # The key was taken (by an earlier submission, or by our own try that lost its connection
            # while committing): the run it created is the answer.
            attempt.committing = False
            cur = await conn.execute(self._q.run_by_key, (idempotency_key,))
            found = await cur.fetchone()
            if found is None:  # its run was deleted between the two statements: the key is free again
                raise StoreUnavailable(
                    f"the run submitted with idempotency key {idempotency_key!r} was deleted while this "
                    "submission was being made; submit again"
                )
            return same_submission(idempotency_key, str(found[0]), found[1], found[2], started)

        with anyio.CancelScope(shield=True):
            got = await self._transact(f"enqueue run {run_id!r}", body)
        if got == run_id:
            self._remember(run_id, summary)
        return got

    async def claim(self, worker_id: str, *, lease_s: float) -> Lease | None:
        lease_s = check_lease_s(lease_s)

        async def body(conn: psycopg.AsyncConnection[Any], attempt: _Attempt) -> tuple[Any, ...] | None:
            # A claim that commits but whose answer is lost is harmless: nobody renews that lease, it
            # expires, and the run is claimed again.
            cur = await conn.execute(self._q.claim, {"worker_id": worker_id, "lease_s": lease_s})
            return await cur.fetchone()

        with anyio.CancelScope(shield=True):
            row = await self._transact("claim a run", body)
        if row is None:
            return None
        return Lease(
            run_id=row[0], worker_id=worker_id, epoch=int(row[1]), expires_at=float(row[2]), lease_s=lease_s
        )

    async def _lease_lost(self, conn: psycopg.AsyncConnection[Any], lease: Lease) -> StoreError:
        cur = await conn.execute(self._q.lease_of, (lease.run_id,))
        row = await cur.fetchone()
        return lease_lost(
            lease.run_id, lease, None if row is None else row[0], None if row is None else row[1]
        )

    async def renew(self, lease: Lease) -> Lease:
        async def body(conn: psycopg.AsyncConnection[Any], attempt: _Attempt) -> float:
            cur = await conn.execute(
                self._q.renew, {"run_id": lease.run_id, "epoch": lease.epoch, "lease_s": lease.lease_s}
            )
            row = await cur.fetchone()
            if row is None:
                raise await self._lease_lost(conn, lease)
            return float(row[0])

        with anyio.CancelScope(shield=True):
            expires_at = await self._transact(f"renew the lease on run {lease.run_id!r}", body)
        return Lease(
            run_id=lease.run_id,
            worker_id=lease.worker_id,
            epoch=lease.epoch,
            expires_at=expires_at,
            lease_s=lease.lease_s,
        )

    async def release(self, lease: Lease, *, delay_s: float = 0.0) -> bool:
        params = {"run_id": lease.run_id, "epoch": lease.epoch, "delay_s": max(0.0, delay_s)}

        async def body(conn: psycopg.AsyncConnection[Any], attempt: _Attempt) -> bool:
            cur = await conn.execute(self._q.release, params)
            # A retry after an in-doubt commit finds the epoch moved on by its own first try: released.
            return cur.rowcount == 1 or attempt.after_in_doubt

        with anyio.CancelScope(shield=True):
            return await self._transact(f"release the lease on run {lease.run_id!r}", body)

    async def seize(self, run_id: str, worker_id: str, *, lease_s: float) -> Lease:
        lease_s = check_lease_s(lease_s)

        async def body(conn: psycopg.AsyncConnection[Any], attempt: _Attempt) -> tuple[Any, ...] | None:
            cur = await conn.execute(
                self._q.seize, {"run_id": run_id, "worker_id": worker_id, "lease_s": lease_s}
            )
            return await cur.fetchone()

        with anyio.CancelScope(shield=True):
            row = await self._transact(f"take over run {run_id!r}", body)
        if row is None:
            raise RunNotFound(f"no run {run_id!r} in {self.where}; `tether runs list` shows the runs there")
        return Lease(
            run_id=run_id, worker_id=worker_id, epoch=int(row[0]), expires_at=float(row[1]), lease_s=lease_s
        )

    async def append(
        self, run_id: str, events: Sequence[Event], *, expected_seq: int, lease: Lease | None = None
    ) -> int:
        # What the journal's head will be once these events are in: how a retry recognises its own commit.
        written: tuple[int, str] | None = None
        wake = wake_time(events)
        statement = self._q.append_for(
            leased=lease is not None,
            finishing=lease is not None and any(isinstance(ev, RunFinished) for ev in events),
            waking=wake is not None,
        )
        fence: dict[str, Any] = {} if lease is None else {"epoch": lease.epoch}
        if wake is not None:
            fence["wake_at"] = None if wake == "now" else wake

        async def fast(
            conn: psycopg.AsyncConnection[Any], attempt: _Attempt, known: dict[str, Any]
        ) -> int | None:
            nonlocal written
            summary = new_summary(run_id) | known
            prev_hash = summary["head_hash"]
            rows = _event_rows(run_id, summary, events, expected_seq)
            written = (summary["event_count"], summary["head_hash"])
            attempt.committing = True
            cur = await conn.execute(
                statement,
                {
                    **summary,
                    **_event_params(rows),
                    **fence,
                    "expected_seq": expected_seq,
                    "prev_hash": prev_hash,
                },
            )
            if cur.rowcount != len(rows):
                return None  # the run moved on, is gone, or the lease was lost: nothing was written
            self._remember(run_id, summary)
            return int(summary["event_count"])

        async def locked(conn: psycopg.AsyncConnection[Any], attempt: _Attempt) -> int:
            async with conn.transaction():
                holder: tuple[Any, ...] | None = None
                if lease is not None:
                    # the lease row before the run's row, as in the single statement: no lock cycles
                    cur = await conn.execute(self._q.lock_lease, (run_id,))
                    holder = await cur.fetchone()
                cur = await conn.execute(self._q.lock_run, (run_id,))
                row = await cur.fetchone()
                if row is None:
                    raise RunNotFound(
                        f"no run {run_id!r} in {self.where}; `tether runs list` shows the runs there"
                    )
                current = dict(zip(_MUTABLE_FIELDS, row, strict=True))
                self._remember(run_id, current)
                if (
                    attempt.after_in_doubt
                    and current["event_count"] != expected_seq
                    and (current["event_count"], current["head_hash"]) == written
                ):
                    return expected_seq + len(events)  # the try that lost its connection had committed
                if lease is not None and (holder is None or holder[0] != lease.epoch):
                    raise lease_lost(
                        run_id,
                        lease,
                        None if holder is None else holder[0],
                        None if holder is None else holder[1],
                    )
                if current["event_count"] != expected_seq:
                    raise JournalConflict(
                        f"run {run_id!r} has {current['event_count']} events, the writer expected "
                        f"{expected_seq}: another worker is running it; reload the journal before writing"
                    )
                seq = await fast(conn, attempt, current)  # under the locks, so it cannot miss
                if seq is None:
                    raise StoreError(f"run {run_id!r} in {self.where} changed under its row lock; verify it")
            return seq

        async def body(conn: psycopg.AsyncConnection[Any], attempt: _Attempt) -> int:
            known = self._heads.get(run_id)
            if (
                events
                and known is not None
                and known["event_count"] == expected_seq
                and not attempt.after_in_doubt
            ):
                seq = await fast(conn, attempt, known)
                if seq is not None:
                    return seq
                attempt.committing = False  # the statement matched nothing, so it wrote nothing
            return await locked(conn, attempt)

        # A cancelled caller must not leave a write half-sent (or a connection mid-protocol) behind:
        # the append completes or fails as a whole, then the cancellation is delivered.
        with anyio.CancelScope(shield=True):
            seq = await self._transact(f"append to run {run_id!r}", body)
        return seq

    async def load(self, run_id: str) -> list[StoredEvent]:
        async def body(conn: psycopg.AsyncConnection[Any], attempt: _Attempt) -> list[tuple[int, str, str]]:
            cur = await conn.execute(self._q.select_events, (run_id,))
            return await cur.fetchall()

        rows = await self._transact(f"read run {run_id!r}", body)
        if not rows:
            await self.get_run(run_id)  # raises RunNotFound with the right message
        return stored_events(run_id, rows, str(self.where))

    async def get_run(self, run_id: str) -> RunInfo:
        async def body(conn: psycopg.AsyncConnection[Any], attempt: _Attempt) -> tuple[Any, ...] | None:
            cur = await conn.execute(self._q.select_run, (run_id,))
            return await cur.fetchone()

        row = await self._transact(f"read run {run_id!r}", body)
        if row is None:
            raise RunNotFound(f"no run {run_id!r} in {self.where}; `tether runs list` shows the runs there")
        return RunInfo(**dict(zip(_RUN_FIELDS, row, strict=True)))

    async def list_runs(
        self,
        *,
        status: str | None = None,
        agent: str | None = None,
        limit: int = 50,
        updated_before: float | None = None,
    ) -> list[RunInfo]:
        where, params = run_filters("%s", status=status, agent=agent, updated_before=updated_before)
        sql = self._q.list_runs
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC LIMIT %s"
        params.append(limit)

        async def body(conn: psycopg.AsyncConnection[Any], attempt: _Attempt) -> list[tuple[Any, ...]]:
            cur = await conn.execute(sql, params)
            return await cur.fetchall()

        rows = await self._transact("list runs", body)
        return [RunInfo(**dict(zip(_RUN_FIELDS, row, strict=True))) for row in rows]

    async def verify(self, run_id: str) -> list[str]:
        async def body(
            conn: psycopg.AsyncConnection[Any], attempt: _Attempt
        ) -> tuple[tuple[Any, ...] | None, list[tuple[int, str, str]]]:
            # one snapshot for the summary and the rows, so an append in between is not taken for tampering
            async with conn.pipeline(), conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                info_cur = await conn.execute(self._q.select_run, (run_id,))
                rows_cur = await conn.execute(self._q.select_events, (run_id,))
                return await info_cur.fetchone(), await rows_cur.fetchall()

        info_row, rows = await self._transact(f"verify run {run_id!r}", body)
        if info_row is None:
            raise RunNotFound(f"no run {run_id!r} in {self.where}; `tether runs list` shows the runs there")
        return verify_chain(run_id, rows, RunInfo(**dict(zip(_RUN_FIELDS, info_row, strict=True))))

    async def delete(self, run_id: str) -> None:
        async def body(conn: psycopg.AsyncConnection[Any], attempt: _Attempt) -> bool:
            async with conn.transaction():
                cur = await conn.execute(self._q.lock_for_delete, (run_id,))
                row = await cur.fetchone()
                if row is None:
                    if attempt.after_in_doubt:
                        return True  # the try that lost its connection had deleted it
                    raise RunNotFound(
                        f"no run {run_id!r} in {self.where}; `tether runs list` shows the runs there"
                    )
                if row[0] not in TERMINAL_STATUSES:
                    raise not_finished(run_id, row[0])
                await conn.execute(self._q.delete_events, (run_id,))
                attempt.committing = True
                await conn.execute(self._q.delete_run, (run_id,))
            return True

        with anyio.CancelScope(shield=True):
            await self._transact(f"delete run {run_id!r}", body)
        self._heads.pop(run_id, None)

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        keeper, self._keeper = self._keeper, None
        if pool is None:
            return
        try:
            same_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            same_loop = False
        if same_loop:
            if keeper is not None:
                keeper.cancel()  # it sees the pool is no longer the store's, and leaves it to us
            await pool.close()
        # else: that loop's connections cannot be closed from here; they close when collected
