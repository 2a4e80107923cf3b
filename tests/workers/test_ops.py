"""Cancelling a run a worker holds; forking into the queue; replay agreeing with what a resume sees."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import inproc_agents as agents
import pytest
from worker_helpers import all_terminal, event_types, wait_for

from tether import ConfigError, ToolContext
from tether.exceptions import RunNotFound
from tether.journal import Store
from tether.runtime import fork, replay
from tether.workers import Worker, cancel, submit

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def fresh_agents() -> Iterator[None]:
    agents.reset()
    yield
    agents.reset()


async def test_cancelling_a_run_a_worker_holds_stops_the_worker_at_its_next_write(store: Store) -> None:
    run_id = await submit(store, agents.agent, "job c: record 1 2 3")
    worker = Worker(store, poll_s=0.05)
    in_tool = anyio.Event()
    release_tool = anyio.Event()

    async def hold(ctx: ToolContext, n: int) -> None:
        if n == 2:
            in_tool.set()
            await release_tool.wait()

    agents.on_tool = hold
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await in_tool.wait()
        info = await cancel(store, run_id, reason="customer withdrew")
        assert (info.status, info.reason) == ("cancelled", "customer withdrew")
        release_tool.set()  # the tool returns; its outcome must not be written after the cancel
        await wait_for(lambda: _true(worker.stats.lost == 1))
        worker.drain()
    types = await event_types(store, run_id)
    assert types[-1] == "run_finished" and types.count("run_finished") == 1
    assert types.count("tool_started") == 2 and types.count("tool_completed") == 1  # call 2's outcome refused
    assert (await store.get_run(run_id)).status == "cancelled" and await store.verify(run_id) == []
    assert (await cancel(store, run_id)).status == "cancelled"  # again: nothing changes
    with pytest.raises(RunNotFound):
        await cancel(store, "run_nope")


async def _true(value: bool) -> bool:
    return value


async def test_a_fork_queued_for_workers_reuses_its_copied_steps(store: Store) -> None:
    run_id = await submit(store, agents.agent, "job f: record 1 2 3")
    worker = Worker(store, poll_s=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await wait_for(lambda: all_terminal(store, [run_id]))
        journal = [s.event for s in await store.load(run_id)]
        # after the second tool result: steps 1 and 2 are copied, 3 and 4 are new
        at = [i for i, ev in enumerate(journal) if ev.type == "tool_completed"][1]
        agents.model_calls.clear()
        forked = await fork(store, run_id, at=at, queue=True, idempotency_key="fork-1")
        assert await fork(store, run_id, at=at, queue=True, idempotency_key="fork-1") == forked
        await wait_for(lambda: all_terminal(store, [forked]))
        worker.drain()
    info = await store.get_run(forked)
    assert (info.status, info.output) == ("completed", "recorded 3 entries")
    assert dict(agents.model_calls) == {("f", 2): 1, ("f", 3): 1}  # never asked again for steps 1 and 2
    assert await store.verify(forked) == []
    started = (await store.load(forked))[0].event
    assert started.metadata["forked_from"]["run_id"] == run_id and started.metadata["forked_from"]["at"] == at
    with pytest.raises(ConfigError, match="fork at an earlier event"):
        await fork(store, run_id, at=len(journal) - 1)


async def test_replay_at_every_event_agrees_with_the_journal(store: Store) -> None:
    run_id = await submit(store, agents.agent, "job r: record 1 2 3")
    worker = Worker(store, poll_s=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await wait_for(lambda: all_terminal(store, [run_id]))
        worker.drain()
    journal = [s.event for s in await store.load(run_id)]
    steps = 0
    for n, ev in enumerate(journal):
        steps = getattr(ev, "step", steps) if ev.type == "model_responded" else steps
        state = await replay(store, run_id, until=n)
        assert state.seq == n and state.events == len(journal) and state.step == steps
        if ev.type == "tool_started":
            assert state.in_doubt == (ev.call_id,)  # started, no outcome yet: what a crash here leaves
        if ev.type == "model_responded" and ev.response.tool_calls:
            assert [c.call_id for c in state.outstanding] == [c.call_id for c in ev.response.tool_calls]
    final = await replay(store, run_id)
    assert final.finished is not None and final.finished.output == "recorded 3 entries"
    assert final.usage.input_tokens == 4 * 20
    with pytest.raises(ConfigError, match="does not exist"):
        await replay(store, run_id, until=len(journal))
