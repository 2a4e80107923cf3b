"""`Runner.resume` under a worker's lease: every write fenced, a lost lease is not a failed run, and
`stop` hands a run back between steps."""

from __future__ import annotations

import pytest

from tether import Agent, ConfigError, Limits, Runner, tool
from tether.exceptions import LeaseLost
from tether.journal import Store
from tether.models import ToolResultMessage
from tether.testing import ScriptedModel, call

pytestmark = pytest.mark.anyio


def script(messages, tools):  # type: ignore[no-untyped-def]
    done = sum(isinstance(m, ToolResultMessage) for m in messages)
    return call("note", n=done + 1) if done < 3 else "noted 3"


@tool(idempotent=True)
def note(n: int) -> str:
    """Note n."""
    return f"noted {n}"


agent = Agent("noter", tools=[note], model=ScriptedModel(script, record=False), limits=Limits(max_steps=8))


async def test_a_queued_run_starts_from_its_first_event_under_the_lease(store: Store) -> None:
    run_id = await Runner(store).submit(agent, "note 1 2 3")
    lease = await store.claim("w", lease_s=30)
    assert lease is not None
    result = await Runner(store).resume(run_id, lease=lease)
    assert (result.status, result.output, result.steps) == ("completed", "noted 3", 4)
    types = [s.event.type for s in await store.load(run_id)]
    assert types[:2] == ["run_started", "run_resumed"] and types[-1] == "run_finished"


async def test_a_lost_lease_stops_the_run_here_without_failing_it(store: Store) -> None:
    run_id = await Runner(store).submit(agent, "note 1 2 3")
    lease = await store.claim("w", lease_s=30)
    assert lease is not None
    await store.seize(run_id, "someone-else", lease_s=30)
    with pytest.raises(LeaseLost):
        await Runner(store).resume(run_id, lease=lease)
    info = await store.get_run(run_id)
    assert info.status == "pending" and info.event_count == 1  # nothing written, nothing failed


async def test_stop_hands_the_run_back_between_steps(store: Store) -> None:
    run_id = await Runner(store).submit(agent, "note 1 2 3")
    lease = await store.claim("w", lease_s=30)
    assert lease is not None
    asked: list[int] = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > 2  # two steps, then the worker is shutting down

    result = await Runner(store).resume(run_id, lease=lease, stop=stop)
    assert (result.status, result.steps, result.output) == ("running", 2, None)
    assert "handed back unfinished after step 2" in result.reason and not result.ok
    journal = [s.event for s in await store.load(run_id)]
    assert [e.type for e in journal].count("tool_completed") == 2  # the second step's call finished first
    assert journal[-1].type == "tool_completed"
    again = await Runner(store).resume(run_id)
    assert (again.status, again.steps) == ("completed", 4)


async def test_submission_needs_a_string_input(store: Store) -> None:
    with pytest.raises(ConfigError, match="must be a string"):
        await Runner(store).submit(agent, 42)  # type: ignore[arg-type]
