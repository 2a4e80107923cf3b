"""An in-memory store: for tests and for throwaway runs. Nothing survives the process."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...exceptions import JournalConflict, RunNotFound, StoreError
from .._events import Event, RunStarted, StoredEvent, event_adapter
from .._store import RunInfo, Store, chain_hash, new_summary, summarize, verify_chain

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """Keeps journals in process memory.

    Events are held serialised, exactly as a database would hold them, so that tests on this store also
    prove that every event round-trips through JSON.
    """

    def __init__(self) -> None:
        self._rows: dict[str, list[tuple[int, str, str]]] = {}
        self._summaries: dict[str, dict[str, Any]] = {}

    async def create_run(self, run_id: str, started: RunStarted) -> None:
        if run_id in self._rows:
            raise StoreError(f"a run with id {run_id!r} exists already; use a new run id")
        self._rows[run_id] = []
        self._summaries[run_id] = new_summary(run_id)
        await self.append(run_id, [started], expected_seq=0)

    async def append(self, run_id: str, events: Sequence[Event], *, expected_seq: int) -> int:
        rows = self._rows.get(run_id)
        if rows is None:
            raise RunNotFound(f"no run {run_id!r} in this store")
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
        self, *, status: str | None = None, agent: str | None = None, limit: int = 50
    ) -> list[RunInfo]:
        found = [
            s
            for s in self._summaries.values()
            if (status is None or s["status"] == status) and (agent is None or s["agent"] == agent)
        ]
        found.sort(key=lambda s: s["created_at"], reverse=True)
        return [RunInfo(**s) for s in found[:limit]]

    async def verify(self, run_id: str) -> list[str]:
        return verify_chain(run_id, self._rows.get(run_id, []), await self.get_run(run_id))

    def __repr__(self) -> str:
        return "MemoryStore() (in this process only)"
