"""The embedded default store: one SQLite file in WAL mode.

Durability modes:
- `crash` (default): `synchronous=NORMAL`. A commit survives the process being killed (`kill -9`);
  the last commits before a power cut or kernel crash may be lost, but the file is never corrupt.
- `power-loss`: `synchronous=FULL`. Each commit (one per journal transaction) is fsynced before
  `append` returns.

Calls run on the event loop's thread: a journal transaction takes tens of microseconds, far less than
handing it to a worker thread would cost, and SQLite serialises writers anyway.

WAL checkpoints (copying the log back into the database file, with an fsync) run on a background
thread, not inside a commit: left to SQLite's automatic checkpointing, one commit in a few hundred
paid for a checkpoint of several milliseconds, which made the mean commit five times the median.

The queue of runs (the `leases` table) serves worker processes on this host: a claim, a renewal and a
leased append each run inside `BEGIN IMMEDIATE`, which holds the database's one write lock, so two
processes can never claim the same run and a fenced-out worker's append sees the new epoch.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from ..._clock import Clock, SystemClock
from ...exceptions import JournalConflict, RunNotFound, StoreError, StoreUnavailable
from .._events import TERMINAL_STATUSES, Event, RunFinished, RunStarted, StoredEvent
from .._migrations import SchemaTooNew, migrate_sqlite
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

__all__ = ["SQLiteStore"]

Durability = Literal["crash", "power-loss"]

_RUN_COLUMNS = (
    "run_id, agent, agent_ref, status, reason, input, output, model, user_id, created_at, updated_at, "
    "steps, input_tokens, output_tokens, cost_usd, event_count, head_hash"
)
_RUN_FIELDS = tuple(c.strip() for c in _RUN_COLUMNS.split(","))
# Whether the run of the `leases` row at hand has finished (a release takes such a run out of the queue).
_FINISHED = "(SELECT status FROM runs WHERE runs.run_id = leases.run_id) IN ({})".format(
    ", ".join(f"'{s}'" for s in sorted(TERMINAL_STATUSES))
)
_SUSPENDED = "(SELECT status FROM runs WHERE runs.run_id = leases.run_id) = 'suspended'"


class SQLiteStore(Store):
    """A journal in one SQLite file.

    Several processes on one host may share the file; writers are serialised by SQLite's lock and
    wait up to `busy_timeout_s` for it.

    Args:
        path: the database file; its directory is created if missing.
        durability: `crash` (default) or `power-loss`; see the module docstring.
        busy_timeout_s: how long a writer waits for another process's lock before giving up.
        clock: the time source for leases (a `tether.testing.FakeClock` in tests). Processes sharing
            the file share the host's clock.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Durability = "crash",
        busy_timeout_s: float = 5.0,
        clock: Clock | None = None,
    ):
        if durability not in ("crash", "power-loss"):
            raise StoreError(f"durability must be 'crash' or 'power-loss'; got {durability!r}")
        self.path = Path(path)
        self.durability = durability
        self.clock: Clock = clock or SystemClock()
        self._busy_timeout_s = busy_timeout_s
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot create the directory for the journal {self.path}: {exc.strerror}; "
                "choose another location with --store or TETHER_STORE"
            ) from None
        self._conn = self._connect()
        self._checkpointer: _Checkpointer | None = None
        if self._writable():
            self._conn.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = _Checkpointer(self.path)

    def _writable(self) -> bool:
        try:
            return self._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal" and os.access(
                self.path, os.W_OK
            )
        except sqlite3.Error:
            return False

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(
                f"cannot open the journal {self.path}: {exc}; check the path exists and is writable, "
                "or choose another with --store or TETHER_STORE"
            ) from None
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if self.durability == 'power-loss' else 'NORMAL'}")
            conn.execute("PRAGMA foreign_keys=ON")
            migrate_sqlite(conn, where=str(self.path))
        except SchemaTooNew:
            conn.close()
            raise
        except sqlite3.OperationalError as exc:
            if "readonly" not in str(exc) and "read-only" not in str(exc):
                conn.close()
                raise self._unavailable(exc) from None
            # A read-only journal can still be listed and shown; writes will say what is wrong.
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(
                f"{self.path} is not a tether journal or is corrupt ({exc}); "
                "move it aside and start a new one, or point --store elsewhere"
            ) from None
        return conn

    def _unavailable(self, exc: sqlite3.Error) -> StoreError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return StoreUnavailable(
                f"the journal {self.path} is locked by another process (waited {self._busy_timeout_s:g}s); "
                "stop the other writer or raise busy_timeout_s, then resume the run"
            )
        if "readonly" in text or "read-only" in text:
            return StoreUnavailable(
                f"the journal {self.path} is read-only; make it writable (chmod u+w) or "
                "choose another store with --store or TETHER_STORE"
            )
        if "disk" in text and "full" in text:
            return StoreUnavailable(f"the disk holding {self.path} is full; free space, then resume the run")
        return StoreUnavailable(f"the journal {self.path} could not be written: {text}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise self._unavailable(exc) from None
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise self._unavailable(exc) from None
            raise

    def _summary(self, conn: sqlite3.Connection, run_id: str) -> dict[str, Any] | None:
        row = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else dict(zip(_RUN_FIELDS, row, strict=True))

    def _insert_events(
        self,
        conn: sqlite3.Connection,
        run_id: str,
        summary: dict[str, Any],
        events: Sequence[Event],
        seq: int,
    ) -> int:
        prev = summary["head_hash"]
        rows = []
        for ev in events:
            data = ev.model_dump_json()
            prev = chain_hash(prev, run_id, seq, data)
            rows.append((run_id, seq, ev.type, ev.at, data, prev))
            seq += 1
        conn.executemany(
            "INSERT INTO events (run_id, seq, type, at, data, hash) VALUES (?, ?, ?, ?, ?, ?)", rows
        )
        summarize(summary, events)
        summary["event_count"] = seq
        summary["head_hash"] = prev
        return seq

    def _insert_run(
        self,
        conn: sqlite3.Connection,
        run_id: str,
        events: Sequence[Event],
        *,
        pending: bool,
        key: str | None,
    ) -> None:
        if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
            raise StoreError(f"a run with id {run_id!r} exists already; use a new run id")
        summary = new_summary(run_id)
        self._insert_events(conn, run_id, summary, events, 0)
        if pending:
            summary["status"] = "pending"
        if key is None:  # the statement a run not submitted with a key has always been written with
            conn.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES ({', '.join('?' * len(_RUN_FIELDS))})",
                tuple(summary[f] for f in _RUN_FIELDS),
            )
        else:
            conn.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}, idempotency_key) "
                f"VALUES ({', '.join('?' * len(_RUN_FIELDS))}, ?)",
                (*(summary[f] for f in _RUN_FIELDS), key),
            )

    async def create_run(self, run_id: str, started: RunStarted, *, history: Sequence[Event] = ()) -> None:
        events = [started, *check_history(history)]
        with self._write() as conn:
            self._insert_run(conn, run_id, events, pending=False, key=None)

    async def enqueue(
        self,
        run_id: str,
        started: RunStarted,
        *,
        idempotency_key: str | None = None,
        history: Sequence[Event] = (),
    ) -> str:
        events = [started, *check_history(history)]
        # The write lock is taken before the key is looked up, so a submission racing this one from
        # another process finds either nothing (and waits for the lock) or the committed run.
        with self._write() as conn:
            if idempotency_key is not None:
                row = conn.execute(
                    "SELECT run_id, agent, input FROM runs WHERE idempotency_key = ?", (idempotency_key,)
                ).fetchone()
                if row is not None:
                    return same_submission(idempotency_key, str(row[0]), row[1], row[2], started)
            self._insert_run(conn, run_id, events, pending=True, key=idempotency_key)
            conn.execute(
                "INSERT INTO leases (run_id, epoch, ready_at) VALUES (?, 0, ?)", (run_id, self.clock.now())
            )
        return run_id

    _RUNNABLE = (
        "SELECT run_id FROM leases WHERE ready_at IS NOT NULL AND ready_at <= ? "
        "AND (worker_id IS NULL OR expires_at < ?) ORDER BY ready_at LIMIT 1"
    )

    async def claim(self, worker_id: str, *, lease_s: float) -> Lease | None:
        lease_s = check_lease_s(lease_s)
        # Idle workers poll: look without the write lock first, so polling never blocks journal writes.
        try:
            now = self.clock.now()
            if self._conn.execute(self._RUNNABLE, (now, now)).fetchone() is None:
                return None
        except sqlite3.OperationalError as exc:
            raise self._unavailable(exc) from None
        with self._write() as conn:
            now = self.clock.now()
            row = conn.execute(self._RUNNABLE, (now, now)).fetchone()
            if row is None:
                return None  # another process took it between the look and the lock
            run_id = str(row[0])
            expires_at = now + lease_s
            # no RETURNING: it needs SQLite 3.35, newer than some distributions' Python links against
            conn.execute(
                "UPDATE leases SET worker_id = ?, epoch = epoch + 1, expires_at = ? WHERE run_id = ?",
                (worker_id, expires_at, run_id),
            )
            (epoch,) = conn.execute("SELECT epoch FROM leases WHERE run_id = ?", (run_id,)).fetchone()
        return Lease(
            run_id=run_id, worker_id=worker_id, epoch=int(epoch), expires_at=expires_at, lease_s=lease_s
        )

    def _check_lease(self, conn: sqlite3.Connection, lease: Lease) -> None:
        row = conn.execute("SELECT epoch, worker_id FROM leases WHERE run_id = ?", (lease.run_id,)).fetchone()
        if row is None or row[0] != lease.epoch:
            raise lease_lost(
                lease.run_id, lease, None if row is None else row[0], None if row is None else row[1]
            )

    async def renew(self, lease: Lease) -> Lease:
        with self._write() as conn:
            self._check_lease(conn, lease)
            expires_at = self.clock.now() + lease.lease_s
            conn.execute("UPDATE leases SET expires_at = ? WHERE run_id = ?", (expires_at, lease.run_id))
        return Lease(
            run_id=lease.run_id,
            worker_id=lease.worker_id,
            epoch=lease.epoch,
            expires_at=expires_at,
            lease_s=lease.lease_s,
        )

    async def release(self, lease: Lease, *, delay_s: float = 0.0) -> bool:
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE leases SET worker_id = NULL, expires_at = NULL, epoch = epoch + 1, "
                f"ready_at = CASE WHEN ready_at IS NULL OR {_FINISHED} THEN NULL "
                f"WHEN {_SUSPENDED} THEN ready_at ELSE ? END "  # a suspended run keeps its timer
                "WHERE run_id = ? AND epoch = ?",
                (self.clock.now() + max(0.0, delay_s), lease.run_id, lease.epoch),
            )
            return cur.rowcount == 1

    async def seize(self, run_id: str, worker_id: str, *, lease_s: float) -> Lease:
        lease_s = check_lease_s(lease_s)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
                raise RunNotFound(
                    f"no run {run_id!r} in {self.path}; `tether runs list` shows the runs there"
                )
            expires_at = self.clock.now() + lease_s
            conn.execute(
                "INSERT INTO leases (run_id, worker_id, epoch, expires_at) VALUES (?, ?, 1, ?) "
                "ON CONFLICT (run_id) DO UPDATE SET worker_id = excluded.worker_id, epoch = epoch + 1, "
                "expires_at = excluded.expires_at",
                (run_id, worker_id, expires_at),
            )
            (epoch,) = conn.execute("SELECT epoch FROM leases WHERE run_id = ?", (run_id,)).fetchone()
        return Lease(
            run_id=run_id, worker_id=worker_id, epoch=int(epoch), expires_at=expires_at, lease_s=lease_s
        )

    async def append(
        self, run_id: str, events: Sequence[Event], *, expected_seq: int, lease: Lease | None = None
    ) -> int:
        with self._write() as conn:
            summary = self._summary(conn, run_id)
            if summary is None:
                raise RunNotFound(f"no run {run_id!r} in {self.path}")
            if lease is not None:
                self._check_lease(conn, lease)
            if summary["event_count"] != expected_seq:
                raise JournalConflict(
                    f"run {run_id!r} has {summary['event_count']} events, the writer expected "
                    f"{expected_seq}: another worker is running it; reload the journal before writing"
                )
            seq = self._insert_events(conn, run_id, summary, events, expected_seq)
            conn.execute(
                "UPDATE runs SET status=?, reason=?, output=?, updated_at=?, steps=?, input_tokens=?, "
                "output_tokens=?, cost_usd=?, event_count=?, head_hash=? WHERE run_id=?",
                (
                    summary["status"],
                    summary["reason"],
                    summary["output"],
                    summary["updated_at"],
                    summary["steps"],
                    summary["input_tokens"],
                    summary["output_tokens"],
                    summary["cost_usd"],
                    summary["event_count"],
                    summary["head_hash"],
                    run_id,
                ),
            )
            if lease is not None and any(isinstance(ev, RunFinished) for ev in events):
                conn.execute("UPDATE leases SET ready_at = NULL WHERE run_id = ?", (run_id,))
            wake = wake_time(events)
            if wake is not None:
                conn.execute(
                    "INSERT INTO leases (run_id, epoch, ready_at) VALUES (?, 0, ?) "
                    "ON CONFLICT (run_id) DO UPDATE SET ready_at = excluded.ready_at",
                    (run_id, self.clock.now() if wake == "now" else wake),
                )
            return seq

    def _rows(self, run_id: str) -> list[tuple[int, str, str]]:
        try:
            return self._conn.execute(
                "SELECT seq, data, hash FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
            ).fetchall()
        except sqlite3.OperationalError as exc:
            raise self._unavailable(exc) from None

    async def load(self, run_id: str) -> list[StoredEvent]:
        rows = self._rows(run_id)
        if not rows:
            await self.get_run(run_id)  # raises RunNotFound with the right message
        return stored_events(run_id, rows, str(self.path))

    async def get_run(self, run_id: str) -> RunInfo:
        try:
            summary = self._summary(self._conn, run_id)
        except sqlite3.OperationalError as exc:
            raise self._unavailable(exc) from None
        if summary is None:
            raise RunNotFound(f"no run {run_id!r} in {self.path}; `tether runs list` shows the runs there")
        return RunInfo(**summary)

    async def list_runs(
        self,
        *,
        status: str | None = None,
        agent: str | None = None,
        limit: int = 50,
        updated_before: float | None = None,
    ) -> list[RunInfo]:
        where, params = run_filters("?", status=status, agent=agent, updated_before=updated_before)
        sql = f"SELECT {_RUN_COLUMNS} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC LIMIT ?"
        try:
            rows = self._conn.execute(sql, (*params, limit)).fetchall()
        except sqlite3.OperationalError as exc:
            raise self._unavailable(exc) from None
        return [RunInfo(**dict(zip(_RUN_FIELDS, row, strict=True))) for row in rows]

    async def verify(self, run_id: str) -> list[str]:
        info = await self.get_run(run_id)
        return verify_chain(run_id, self._rows(run_id), info)

    async def delete(self, run_id: str) -> None:
        with self._write() as conn:
            row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(
                    f"no run {run_id!r} in {self.path}; `tether runs list` shows the runs there"
                )
            if row[0] not in TERMINAL_STATUSES:
                raise not_finished(run_id, row[0])
            conn.execute("DELETE FROM events WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM leases WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))

    async def aclose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        self._conn.close()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r}, durability={self.durability!r})"


class _Checkpointer:
    """Checkpoints a WAL database from its own thread and connection when the log has grown."""

    def __init__(self, path: Path, *, interval_s: float = 0.5, min_wal_bytes: int = 4 << 20):
        self._path = path
        self._wal = Path(f"{path}-wal")
        self._interval_s = interval_s
        self._min_wal_bytes = min_wal_bytes
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tether-checkpoint:{path.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self._stopped.wait(self._interval_s):
                try:
                    if self._wal.stat().st_size < self._min_wal_bytes:
                        continue
                except FileNotFoundError:
                    continue
                if conn is None:
                    conn = sqlite3.connect(
                        self._path, timeout=1.0, isolation_level=None, check_same_thread=False
                    )
                # busy or gone: the next round tries again; the WAL stays valid meanwhile
                with contextlib.suppress(sqlite3.Error):
                    # PASSIVE never blocks writers; what it cannot copy now it copies next time
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            if conn is not None:
                conn.close()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
