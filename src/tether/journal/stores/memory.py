"""An in-memory store: for tests and for throwaway runs. Nothing survives the process."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..._clock import Clock, SystemClock
from ...exceptions import JournalConflict, RunNotFound, StoreError
from .._events import TERMINAL_STATUSES, Event, RunFinished, RunStarted, StoredEvent, event_adapter
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
    same_submission,
    summarize,
    verify_chain,
    wake_time,
)

__all__ = ["MemoryStore"]


@dataclass
class _LeaseRow:
    """A run's row in the queue, as the SQL stores' `leases` table holds it."""

    worker_id: str | None = None
    epoch: int = 0
    expires_at: float | None = None
    ready_at: float | None = None


class MemoryStore(Store):
    """Keeps journals in process memory.

    Events are held serialised, exactly as a database would hold them, so that tests on this store also
    prove that every event round-trips through JSON. Its queue serves the workers of this one process.

    Args:
        clock: the time source for leases (a `tether.testing.FakeClock` in tests).
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self._rows: dict[str, list[tuple[int, str, str]]] = {}
        self._summaries: dict[str, dict[str, Any]] = {}
        self._leases: dict[str, _LeaseRow] = {}
        self._keys: dict[str, str] = {}

    async def create_run(self, run_id: str, started: RunStarted, *, history: Sequence[Event] = ()) -> None:
        events = [started, *check_history(history)]
        if run_id in self._rows:
            raise StoreError(f"a run with id {run_id!r} exists already; use a new run id")
        self._rows[run_id] = []
        self._summaries[run_id] = new_summary(run_id)
        await self.append(run_id, events, expected_seq=0)

    async def enqueue(
        self,
        run_id: str,
        started: RunStarted,
        *,
        idempotency_key: str | None = None,
        history: Sequence[Event] = (),
    ) -> str:
        # Nothing below suspends, so on one event loop the check and the insert are atomic.
        if idempotency_key is not None and idempotency_key in self._keys:
            first = self._keys[idempotency_key]
            info = self._summaries[first]
            return same_submission(idempotency_key, first, info["agent"], info["input"], started)
        await self.create_run(run_id, started, history=history)
        self._summaries[run_id]["status"] = "pending"
        self._leases[run_id] = _LeaseRow(ready_at=self.clock.now())
        if idempotency_key is not None:
            self._keys[idempotency_key] = run_id
        return run_id

    async def claim(self, worker_id: str, *, lease_s: float) -> Lease | None:
        lease_s = check_lease_s(lease_s)
        now = self.clock.now()
        runnable = [
            (row.ready_at, run_id)
            for run_id, row in self._leases.items()
            if row.ready_at is not None
            and row.ready_at <= now
            and (row.worker_id is None or (row.expires_at is not None and row.expires_at < now))
        ]
        if not runnable:
            return None
        _, run_id = min(runnable)
        row = self._leases[run_id]
        row.worker_id, row.epoch, row.expires_at = worker_id, row.epoch + 1, now + lease_s
        return Lease(
            run_id=run_id, worker_id=worker_id, epoch=row.epoch, expires_at=now + lease_s, lease_s=lease_s
        )

    def _held(self, lease: Lease) -> _LeaseRow:
        row = self._leases.get(lease.run_id)
        if row is None or row.epoch != lease.epoch:
            raise lease_lost(
                lease.run_id,
                lease,
                None if row is None else row.epoch,
                None if row is None else row.worker_id,
            )
        return row

    async def renew(self, lease: Lease) -> Lease:
        row = self._held(lease)
        expires_at = self.clock.now() + lease.lease_s
        row.expires_at = expires_at
        return Lease(
            run_id=lease.run_id,
            worker_id=lease.worker_id,
            epoch=lease.epoch,
            expires_at=expires_at,
            lease_s=lease.lease_s,
        )

    async def release(self, lease: Lease, *, delay_s: float = 0.0) -> bool:
        row = self._leases.get(lease.run_id)
        if row is None or row.epoch != lease.epoch:
            return False
        row.worker_id, row.expires_at, row.epoch = None, None, row.epoch + 1
        status = self._summaries[lease.run_id]["status"]
        if status in TERMINAL_STATUSES:
            row.ready_at = None
        elif status != "suspended" and row.ready_at is not None:  # a suspended run keeps its timer
            row.ready_at = self.clock.now() + max(0.0, delay_s)
        return True

    async def seize(self, run_id: str, worker_id: str, *, lease_s: float) -> Lease:
        lease_s = check_lease_s(lease_s)
        if run_id not in self._summaries:
            raise RunNotFound(f"no run {run_id!r} in this store")
        row = self._leases.setdefault(run_id, _LeaseRow())
        expires_at = self.clock.now() + lease_s
        row.worker_id, row.epoch, row.expires_at = worker_id, row.epoch + 1, expires_at
        return Lease(
            run_id=run_id, worker_id=worker_id, epoch=row.epoch, expires_at=expires_at, lease_s=lease_s
        )

    async def append(
        self, run_id: str, events: Sequence[Event], *, expected_seq: int, lease: Lease | None = None
    ) -> int:
        rows = self._rows.get(run_id)
        if rows is None:
            raise RunNotFound(f"no run {run_id!r} in this store")
        if lease is not None:
            self._held(lease)
        if len(rows) != expected_seq:
            raise JournalConflict(
                f"run {run_id!r} has {len(rows)} events, the writer expected {expected_seq}: "
                "another worker is running it; reload the journal before writing"
            )
        summary = self._summaries[run_id]
        prev = summary["head_hash"]
        seq = expected_seq
        for ev in events:
            data = ev.model_dump_json()
            prev = chain_hash(prev, run_id, seq, data)
            rows.append((seq, data, prev))
            seq += 1
        summarize(summary, events)
        summary["event_count"] = seq
        summary["head_hash"] = prev
        queued = self._leases.get(run_id)
        if lease is not None and queued is not None and any(isinstance(ev, RunFinished) for ev in events):
            queued.ready_at = None
        wake = wake_time(events)
        if wake is not None:
            self._leases.setdefault(run_id, _LeaseRow()).ready_at = (
                self.clock.now() if wake == "now" else wake
            )
        return seq

    async def load(self, run_id: str) -> list[StoredEvent]:
        rows = self._rows.get(run_id)
        if rows is None:
            raise RunNotFound(f"no run {run_id!r} in this store")
        return [
            StoredEvent(run_id=run_id, seq=seq, event=event_adapter.validate_json(data), hash=h)
            for seq, data, h in rows
        ]

    async def get_run(self, run_id: str) -> RunInfo:
        summary = self._summaries.get(run_id)
        if summary is None:
            raise RunNotFound(f"no run {run_id!r} in this store")
        return RunInfo(**summary)

    async def list_runs(
        self,
        *,
        status: str | None = None,
        agent: str | None = None,
        limit: int = 50,
        updated_before: float | None = None,
    ) -> list[RunInfo]:
        found = [
            s
            for s in self._summaries.values()
            if (status is None or s["status"] == status)
            and (agent is None or s["agent"] == agent)
            and (updated_before is None or s["updated_at"] < updated_before)
        ]
        found.sort(key=lambda s: s["created_at"], reverse=True)
        return [RunInfo(**s) for s in found[:limit]]

    async def verify(self, run_id: str) -> list[str]:
        return verify_chain(run_id, self._rows.get(run_id, []), await self.get_run(run_id))

    async def delete(self, run_id: str) -> None:
        summary = self._summaries.get(run_id)
        if summary is None:
            raise RunNotFound(f"no run {run_id!r} in this store")
        if summary["status"] not in TERMINAL_STATUSES:
            raise not_finished(run_id, summary["status"])
        del self._summaries[run_id], self._rows[run_id]
        self._leases.pop(run_id, None)
        self._keys = {k: v for k, v in self._keys.items() if v != run_id}

    def __repr__(self) -> str:
        return "MemoryStore() (in this process only)"
