"""Operations on queued runs from outside a worker: submitting one, cancelling one."""

from __future__ import annotations

import os
import socket
from typing import Any

from .._clock import Clock, SystemClock
from ..agents import Agent
from ..exceptions import JournalConflict, StoreError
from ..journal import RunFinished, RunInfo, Store
from ..runtime import Runner, replay

__all__ = ["cancel", "submit"]

_CANCEL_LEASE_S = 60.0
"""How long a cancel holds the run: far longer than its two statements take."""


async def submit(
    store: Store,
    agent: Agent,
    input: str,
    *,
    idempotency_key: str | None = None,
    run_id: str | None = None,
    user_id: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> str:
    """Queue a run of `agent` on `input` for the workers (`tether worker`); nothing runs here.

    Args:
        idempotency_key: the caller's key for this submission (an order id, a webhook delivery id).
            Submitting again with the same key, at the same time or later, creates nothing and returns
            the first run's id.
        run_id: the new run's id (default: a new time-ordered one).

    Returns:
        The run's id.

    Raises:
        ConfigError: the agent cannot be imported by a worker (define it at module level).
    """
    return await Runner(store).submit(
        agent, input, run_id=run_id, idempotency_key=idempotency_key, user_id=user_id, metadata=metadata
    )


async def cancel(
    store: Store, run_id: str, *, reason: str = "cancelled by an operator", clock: Clock | None = None
) -> RunInfo:
    """End a run as `cancelled`, wherever it is: queued, running on a worker, or stopped.

    The run's lease is taken over first, so the worker running it (if any) can write nothing more: its
    next journal write fails with `LeaseLost` and it drops the run. A tool call in flight on that worker
    finishes, but its outcome is not recorded.

    Returns:
        The run's summary: `cancelled`, or the status it had already ended with (nothing is changed then).

    Raises:
        RunNotFound: no such run.
    """
    clock = clock or SystemClock()
    info = await store.get_run(run_id)
    if info.terminal:
        return info
    lease = await store.seize(run_id, f"cancel:{socket.gethostname()}:{os.getpid()}", lease_s=_CANCEL_LEASE_S)
    try:
        # A writer without a lease (an embedded `tether runs resume`) is not fenced by the lease: if it
        # appends between the read and the write, read again.
        for _ in range(5):
            state = await replay(store, run_id)
            if state.finished is not None:
                return await store.get_run(run_id)
            finished = RunFinished(
                at=clock.now(),
                status="cancelled",
                reason=reason,
                output=None,
                steps=state.step,
                usage=state.usage,
            )
            try:
                await store.append(run_id, [finished], expected_seq=state.events, lease=lease)
            except JournalConflict:
                continue
            return await store.get_run(run_id)
        raise StoreError(
            f"run {run_id} kept changing while it was being cancelled (a process without a lease is "
            "writing to it); stop that process, then cancel again"
        )
    finally:
        await store.release(lease)
