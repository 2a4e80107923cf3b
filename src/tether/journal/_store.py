"""The store contract every journal backend implements, and what the backends share.

A store keeps two things: the journal (one append-only, hash-chained sequence of events per run) and a
summary row per run (status, usage, output) derived from the journal inside the same transaction, so
listing runs never has to read journals and the two can never disagree.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from ._events import (
    TERMINAL_STATUSES,
    Event,
    ModelResponded,
    RunFinished,
    RunResumed,
    RunStarted,
    RunStatus,
    StoredEvent,
    UsageCharged,
)

__all__ = ["GENESIS_HASH", "RunInfo", "Store", "chain_hash", "verify_chain"]

GENESIS_HASH = "0" * 64


def chain_hash(prev_hash: str, run_id: str, seq: int, data: str) -> str:
    """The hash of one journal row: it covers the row's content and, through `prev_hash`, every row before.

    Editing, removing or reordering any row changes every hash after it.
    """
    h = hashlib.sha256(prev_hash.encode())
    h.update(f"|{run_id}|{seq}|".encode())
    h.update(data.encode())
    return h.hexdigest()


class RunInfo(BaseModel):
    """The summary of one run, as listed by `tether runs list`."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    agent: str
    agent_ref: str | None = None
    status: RunStatus
    reason: str = ""
    input: str
    output: str | None = None
    model: str
    user_id: str | None = None
    created_at: float
    updated_at: float
    steps: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    event_count: int = 0
    head_hash: str = GENESIS_HASH

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


def summarize(info: dict[str, Any], events: Sequence[Event]) -> dict[str, Any]:
    """Fold new events into a run's summary fields (mutates and returns `info`)."""
    for ev in events:
        info["updated_at"] = ev.at
        if isinstance(ev, RunStarted):
            info.update(
                agent=ev.agent,
                agent_ref=ev.agent_ref,
                input=ev.input,
                model=ev.model,
                user_id=ev.user_id,
                created_at=ev.at,
                status="running",
            )
        elif isinstance(ev, ModelResponded):
            info["steps"] = ev.step
        elif isinstance(ev, UsageCharged):
            info["input_tokens"] += ev.usage.input_tokens
            info["output_tokens"] += ev.usage.output_tokens
            info["cost_usd"] += ev.cost_usd
        elif isinstance(ev, RunResumed):
            info["status"] = "running"
        elif isinstance(ev, RunFinished):
            info.update(status=ev.status, reason=ev.reason, output=ev.output, steps=ev.steps)
    return info


def new_summary(run_id: str) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "agent": "",
        "agent_ref": None,
        "status": "pending",
        "reason": "",
        "input": "",
        "output": None,
        "model": "",
        "user_id": None,
        "created_at": 0.0,
        "updated_at": 0.0,
        "steps": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": 0.0,
        "event_count": 0,
        "head_hash": GENESIS_HASH,
    }


def verify_chain(run_id: str, rows: Sequence[tuple[int, str, str]], info: RunInfo | None) -> list[str]:
    """Check a run's rows `(seq, data, hash)` against the hash chain and its summary row.

    Returns:
        One line per problem found; empty when the journal is intact.
    """
    problems: list[str] = []
    prev = GENESIS_HASH
    for expected_seq, (seq, data, stored) in enumerate(rows):
        if seq != expected_seq:
            problems.append(f"event {expected_seq} is missing (next stored is {seq}): rows were removed")
            break
        if chain_hash(prev, run_id, seq, data) != stored:
            problems.append(f"event {seq} does not match its hash: it was edited, or rows were reordered")
            break
        prev = stored
    else:
        if info is not None and (len(rows) != info.event_count or prev != info.head_hash):
            problems.append(
                f"the journal has {len(rows)} events but the run records {info.event_count}: "
                "events were removed from the end"
            )
    return problems


class Store(abc.ABC):
    """Where runs and their journals live.

    Implementations: `MemoryStore` (tests), `SQLiteStore` (the embedded default). Every one passes the
    same contract suite (`tests/journal/test_store_contract.py`).
    """

    @abc.abstractmethod
    async def create_run(self, run_id: str, started: RunStarted) -> None:
        """Create a run whose journal begins with `started`.

        Raises:
            StoreError: a run with that id exists already.
        """

    @abc.abstractmethod
    async def append(self, run_id: str, events: Sequence[Event], *, expected_seq: int) -> int:
        """Append events atomically, as one transaction.

        Args:
            expected_seq: the sequence number the first event must get (the number of events the caller
                knows of). Anything else means another writer got there first.

        Returns:
            The sequence number the next event will get.

        Raises:
            JournalConflict: the journal has moved on since the caller read it.
            RunNotFound: no such run.
            StoreUnavailable: the store cannot be written now (read-only, locked).
        """

    @abc.abstractmethod
    async def load(self, run_id: str) -> list[StoredEvent]:
        """Every event of the run, in order.

        Raises:
            RunNotFound: no such run.
        """

    @abc.abstractmethod
    async def get_run(self, run_id: str) -> RunInfo:
        """The run's summary.

        Raises:
            RunNotFound: no such run.
        """

    @abc.abstractmethod
    async def list_runs(
        self, *, status: str | None = None, agent: str | None = None, limit: int = 50
    ) -> list[RunInfo]:
        """Runs, newest first, optionally filtered by status and agent name."""

    @abc.abstractmethod
    async def verify(self, run_id: str) -> list[str]:
        """Check the run's journal against its hash chain; returns the problems found (none: intact)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files."""

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
