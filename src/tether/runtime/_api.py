"""Module-level shortcuts for the common case: one agent, one input."""

from __future__ import annotations

from typing import Any

import anyio

from ..agents import Agent, RunResult
from ..journal import Store
from ._loop import Runner, RunObserver

__all__ = ["run", "run_sync"]


async def run(
    agent: Agent,
    input: str,
    *,
    store: Store | None = None,
    observer: RunObserver | None = None,
    user_id: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> RunResult:
    """Run `agent` on `input`, journaling to `store` (default: `TETHER_STORE` or `./.tether/tether.db`).

    A store this function opens itself is closed before it returns; one passed in stays open.
    """
    owned = store is None
    runner = Runner(store, observer=observer)
    try:
        return await runner.run(agent, input, user_id=user_id, metadata=metadata)
    finally:
        if owned:
            await runner.store.aclose()


def run_sync(agent: Agent, input: str, **kwargs: Any) -> RunResult:
    """`run`, for scripts: starts an event loop, runs, returns the result."""
    return anyio.run(lambda: run(agent, input, **kwargs))
