"""The store contract every journal backend implements, and what the backends share.

A store keeps two things: the journal (one append-only, hash-chained sequence of events per run) and a
summary row per run (status, usage, output) derived from the journal inside the same transaction, so
listing runs never has to read journals and the two can never disagree.

It is also the queue of runs for workers. A run submitted with `enqueue` waits, `pending`, until a worker
`claim`s it; the claim is a lease: the worker holds the run for `lease_s` seconds, `renew`s it with
heartbeats and `release`s it when done. A worker that dies stops renewing; once its lease expires,
another worker claims the run and resumes it from its journal. Every claim gives the lease a higher
`epoch`, and a worker presents its lease with each append (`append(..., lease=...)`): the store checks
the epoch in the same transaction as the write and refuses it with `LeaseLost` when the run has been
taken over, so a worker that was only paused (a long GC pause, SIGSTOP, a VM migration) can never write
into a journal another worker now owns.

Lease times are the store's own clock (PostgreSQL: the server's; SQLite and memory: the store's
`clock`), so workers whose clocks disagree still agree on when a lease has expired. A clock that jumps
forward makes leases expire early: the run is taken over sooner than needed and the old holder's next
write is refused, which is safe. A clock that jumps back delays the takeover of a dead worker's runs by
the size of the jump.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ..exceptions import ConfigError, LeaseLost, StoreError
from ._events import (
    TERMINAL_STATUSES,
    ApprovalDecided,
    ApprovalRequested,
    Event,
    ModelResponded,
    RunFinished,
    RunResumed,
    RunStarted,
    RunStatus,
    StoredEvent,
    UsageCharged,
    event_adapter,
)

__all__ = ["GENESIS_HASH", "Lease", "RunInfo", "Store", "chain_hash", "verify_chain", "wake_time"]

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


@dataclass(frozen=True, kw_only=True)
class Lease:
    """A worker's hold on a run, as `Store.claim` (or `seize`) granted it.

    Attributes:
        run_id: the run held.
        worker_id: who holds it.
        epoch: the fencing token: it grows with every claim, release and takeover of the run, and the
            store refuses an append whose lease has an older epoch than the run's.
        expires_at: when the lease lapses unless renewed, in seconds since the epoch on the store's clock.
        lease_s: the lease's length; `renew` extends it by this much again.
    """

    run_id: str
    worker_id: str
    epoch: int
    expires_at: float
    lease_s: float


def lease_lost(run_id: str, lease: Lease, now_epoch: int | None, holder: str | None) -> LeaseLost:
    """The error for a write or renewal under a lease the run has moved on from."""
    if now_epoch is None:
        detail = "the run has no lease at all now (it was deleted, or never queued)"
    else:
        by = f"worker {holder!r}" if holder else "a release or another worker"
        detail = f"its lease is at epoch {now_epoch}, taken by {by}"
    return LeaseLost(
        f"another worker took run {run_id!r} over: worker {lease.worker_id!r} held lease epoch "
        f"{lease.epoch} but {detail}; this worker must stop writing to it (the run is not failed: "
        "its new holder carries it on)"
    )


def check_history(history: Sequence[Event]) -> list[Event]:
    if any(isinstance(ev, (RunStarted, RunFinished)) for ev in history):
        raise ConfigError(
            "a queued run's history cannot start or finish it: pass the events after run_started and "
            "before run_finished"
        )
    return list(history)


def same_submission(key: str, run_id: str, agent: str, input: str, started: RunStarted) -> str:
    """`run_id`, the run first submitted with idempotency key `key`, if `started` asks for the same thing.

    Raises:
        ConfigError: the key was first used for another agent or input.
    """
    if (agent, input) != (started.agent, started.input):
        what = "another agent" if agent != started.agent else "another input"
        raise ConfigError(
            f"idempotency key {key!r} was first used for run {run_id!r} (agent {agent!r}) with {what}; "
            "a key names one submission: use a new key for a new request, or the same agent and input "
            f"to get run {run_id!r} back"
        )
    return run_id


def check_lease_s(lease_s: float) -> float:
    if not lease_s > 0:
        raise ConfigError(f"lease_s must be a positive number of seconds; got {lease_s!r}")
    return float(lease_s)


def not_finished(run_id: str, status: str) -> StoreError:
    return StoreError(
        f"run {run_id!r} is {status}, not finished; only finished runs can be deleted: "
        f"cancel it first (`tether runs cancel {run_id}`)"
    )


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
        elif isinstance(ev, ApprovalRequested):
            info.update(status="suspended", reason=f"waiting for approval {ev.request_id} of {ev.tool}")
        elif isinstance(ev, ApprovalDecided):
            # decided: ready for whoever resumes it next (a worker, `tether runs resume`, the waiting caller)
            info.update(status="pending", reason=f"approval {ev.request_id} {ev.decision}")
        elif info["status"] in ("pending", "suspended"):
            info.update(status="running", reason="")
    return info


def wake_time(events: Sequence[Event]) -> float | Literal["now"] | None:
    """When a run that these events leave waiting becomes runnable again, for the store's queue.

    A suspending approval request sets a timer at its deadline (the timer is that row: whoever claims
    the run then applies the expiry action); a decision makes the run runnable `now` (the store's clock).
    None: the events change nothing about when the run may be claimed.
    """
    wake: float | Literal["now"] | None = None
    for ev in events:
        if isinstance(ev, ApprovalRequested):
            wake = ev.deadline_at if ev.mode == "async" else None
        elif isinstance(ev, ApprovalDecided):
            wake = "now"
        elif isinstance(ev, RunFinished):
            wake = None
    return wake


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


def stored_events(run_id: str, rows: Sequence[tuple[int, str, str]], where: str) -> list[StoredEvent]:
    """Parse a run's rows `(seq, data, hash)` as a SQL store returns them.

    Raises:
        StoreError: a row does not parse; the message points at `tether audit verify`.
    """
    events = []
    for seq, data, h in rows:
        try:
            event = event_adapter.validate_json(data)
        except ValueError as exc:
            raise StoreError(
                f"event {seq} of run {run_id!r} in {where} cannot be read "
                f"({str(exc).splitlines()[0]}); run `tether audit verify {run_id}` to see whether "
                "the journal was tampered with"
            ) from None
        events.append(StoredEvent(run_id=run_id, seq=seq, event=event, hash=h))
    return events


def run_filters(
    placeholder: str, *, status: str | None, agent: str | None, updated_before: float | None
) -> tuple[list[str], list[Any]]:
    """The WHERE conditions and parameters of `list_runs`, for a SQL store with this placeholder."""
    where: list[str] = []
    params: list[Any] = []
    for column, op, value in (
        ("updated_at", "<", updated_before),
        ("status", "=", status),
        ("agent", "=", agent),
    ):
        if value is not None:
            where.append(f"{column} {op} {placeholder}")
            params.append(value)
    return where, params


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
    """Where runs and their journals live, and the queue workers claim runs from.

    Implementations: `MemoryStore` (tests, one process), `SQLiteStore` (the embedded default; several
    processes on one host), `PostgresStore` (many workers on many hosts). Every one passes the same
    contract suite (`tests/journal/test_store_contract.py`).
    """

    @abc.abstractmethod
    async def create_run(self, run_id: str, started: RunStarted, *, history: Sequence[Event] = ()) -> None:
        """Create a run whose journal begins with `started`, for the caller to drive (not queued).

        Args:
            history: events that follow `started`, written in the same transaction (a fork's copy of
                another run's journal). They must not finish the run.

        Raises:
            StoreError: a run with that id exists already.
            ConfigError: `history` finishes the run.
        """

    @abc.abstractmethod
    async def enqueue(
        self,
        run_id: str,
        started: RunStarted,
        *,
        idempotency_key: str | None = None,
        history: Sequence[Event] = (),
    ) -> str:
        """Create a run whose journal begins with `started`, `pending`, for a worker to claim.

        Args:
            run_id: the new run's id.
            idempotency_key: the submitter's key for this submission. A second submission with the same
                key (at the same time from another process, or later) creates nothing and gets the first
                run's id: a client that retries a submission it is unsure about cannot start a run twice.
            history: events that follow `started`, written in the same transaction (a fork's copy of
                another run's journal), so no worker can claim the run before they are in. They must
                not finish the run.

        Returns:
            The id of the run: `run_id`, or the first run's id when the key was used before.

        Raises:
            StoreError: a run with that id exists already (and the key is not its key).
            ConfigError: `history` finishes the run.
        """

    @abc.abstractmethod
    async def claim(self, worker_id: str, *, lease_s: float) -> Lease | None:
        """Take the oldest runnable run for `worker_id`, leased for `lease_s` seconds.

        Runnable: queued (pending, or released unfinished) and not leased, or leased by a worker whose
        lease expired (a dead or stalled worker's). Each claim raises the run's lease epoch, which fences
        out the previous holder. Concurrent claimers never get the same run.

        Returns:
            The lease, or None when nothing is runnable.
        """

    @abc.abstractmethod
    async def renew(self, lease: Lease) -> Lease:
        """Extend a held lease by its `lease_s` from now (a heartbeat).

        A lease that expired but that no one has claimed since is still the run's, and is renewed.

        Raises:
            LeaseLost: the run was claimed by another worker, released or seized since.
        """

    @abc.abstractmethod
    async def release(self, lease: Lease, *, delay_s: float = 0.0) -> bool:
        """Give a run up. An unfinished run goes back to the queue, claimable after `delay_s`.

        Releasing raises the epoch, so nothing can be written under the released lease afterwards.

        Returns:
            True when released; False when the lease had been lost already (nothing changed).
        """

    @abc.abstractmethod
    async def seize(self, run_id: str, worker_id: str, *, lease_s: float) -> Lease:
        """Take a run's lease now, whoever holds it (an operator's cancel, a forced takeover).

        Works on any run, queued or not; the current holder's next write fails with `LeaseLost`. A run
        that was not queued is not put in the queue by this.

        Raises:
            RunNotFound: no such run.
        """

    @abc.abstractmethod
    async def append(
        self, run_id: str, events: Sequence[Event], *, expected_seq: int, lease: Lease | None = None
    ) -> int:
        """Append events atomically, as one transaction.

        Appending `RunFinished` also takes the run out of the queue, in the same transaction.

        Args:
            expected_seq: the sequence number the first event must get (the number of events the caller
                knows of). Anything else means another writer got there first.
            lease: the caller's lease on the run (workers). The write is refused unless it is still the
                run's lease. Without one (a single embedded process) no lease is checked.

        Returns:
            The sequence number the next event will get.

        Raises:
            LeaseLost: `lease` is no longer the run's; another worker took it over.
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
        self,
        *,
        status: str | None = None,
        agent: str | None = None,
        limit: int = 50,
        updated_before: float | None = None,
    ) -> list[RunInfo]:
        """Runs, newest first, optionally filtered by status, agent name and last update."""

    @abc.abstractmethod
    async def verify(self, run_id: str) -> list[str]:
        """Check the run's journal against its hash chain; returns the problems found (none: intact)."""

    @abc.abstractmethod
    async def delete(self, run_id: str) -> None:
        """Remove a finished run: its journal, its summary and its lease, in one transaction.

        Raises:
            RunNotFound: no such run.
            StoreError: the run has not finished (cancel it first).
        """

    async def prune(
        self, *, before: float, statuses: Collection[str] = ("completed",), batch: int = 500
    ) -> list[str]:
        """Delete the finished runs with one of `statuses` whose last event is older than `before`.

        Returns:
            The ids of the runs deleted.
        """
        unknown = sorted(set(statuses) - TERMINAL_STATUSES)
        if unknown:
            raise ConfigError(
                f"only finished runs can be pruned; {unknown} are not finished statuses "
                f"(use {sorted(TERMINAL_STATUSES)})"
            )
        deleted: list[str] = []
        for status in sorted(statuses):
            while True:
                found = await self.list_runs(status=status, updated_before=before, limit=batch)
                for info in found:
                    await self.delete(info.run_id)
                    deleted.append(info.run_id)
                if len(found) < batch:
                    break
        return deleted

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files."""

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
