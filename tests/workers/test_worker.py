"""Workers in one process, on every store: claiming, finishing, draining, takeovers, bad runs."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import inproc_agents as agents
import pytest
from structlog.testing import capture_logs
from worker_helpers import all_terminal, event_types, expire_by_hand, wait_for

from tether import Agent, ConfigError, ToolContext
from tether.journal import SQLiteStore, Store
from tether.testing import ScriptedModel
from tether.workers import Worker, submit

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def fresh_agents() -> Iterator[None]:
    agents.reset()
    yield
    agents.reset()


async def submit_jobs(store: Store, n: int) -> list[str]:
    return [await submit(store, agents.agent, f"job j{i}: record 1 2 3") for i in range(n)]


def check_exactly_once(jobs: list[str]) -> None:
    """Every model step was asked for once, and every entry recorded once under one key."""
    assert all(count == 1 for count in agents.model_calls.values()), agents.model_calls
    assert len(agents.model_calls) == len(jobs) * (agents.ENTRIES + 1)
    keys = {key for key, _ in agents.effects}
    assert len(keys) == len(jobs) * agents.ENTRIES


@pytest.fixture
async def tg() -> AsyncIterator[anyio.abc.TaskGroup]:
    async with anyio.create_task_group() as group:
        yield group


async def test_a_worker_runs_submitted_runs_to_the_end(store: Store) -> None:
    run_ids = await submit_jobs(store, 6)
    assert {(await store.get_run(r)).status for r in run_ids} == {"pending"}  # submitting ran nothing
    assert agents.model_calls == {}
    worker = Worker(store, concurrency=3, poll_s=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await wait_for(lambda: all_terminal(store, run_ids))
        worker.drain()
    for run_id in run_ids:
        info = await store.get_run(run_id)
        assert (info.status, info.output, info.steps) == ("completed", "recorded 3 entries", 4)
        assert await store.verify(run_id) == []
        assert (await event_types(store, run_id)).count("run_resumed") == 1  # the one claim, recorded
    assert (worker.stats.claimed, worker.stats.finished, worker.stats.errors) == (6, 6, 0)
    check_exactly_once(run_ids)
    assert await store.claim("someone", lease_s=30) is None  # finished runs left the queue


async def test_submitting_with_one_key_in_sequence_and_concurrently_makes_one_run(store: Store) -> None:
    first = await submit(store, agents.agent, "job k: record 1 2 3", idempotency_key="order-1042")
    assert await submit(store, agents.agent, "job k: record 1 2 3", idempotency_key="order-1042") == first
    got: list[str] = []

    async def again() -> None:
        got.append(await submit(store, agents.agent, "job k2: record 1 2 3", idempotency_key="order-7"))

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(again)
    assert len(set(got)) == 1 and got[0] != first
    assert len(await store.list_runs()) == 2


async def test_an_agent_workers_cannot_import_is_refused_at_submission(store: Store) -> None:
    local = Agent("local", model=ScriptedModel(["hi"]))  # defined in a function: no `module:attr`
    with pytest.raises(ConfigError, match=r"cannot be submitted.*module level"):
        await submit(store, local, "hi")
    assert await store.list_runs() == []


async def test_draining_hands_a_run_back_after_its_step_and_another_worker_finishes_it(store: Store) -> None:
    (run_id,) = await submit_jobs(store, 1)
    first = Worker(store, poll_s=0.05)

    async def drain_during_the_second_call(ctx: ToolContext, n: int) -> None:
        if n == 2:
            first.drain()  # SIGTERM arrives while a tool runs: the step completes first

    agents.on_tool = drain_during_the_second_call
    with anyio.fail_after(20):
        stats = await first.run()
    assert (stats.handed_back, stats.finished) == (1, 0)
    info = await store.get_run(run_id)
    assert info.status == "running" and info.steps == 2  # unfinished, but its two steps are journaled
    assert [n for _, n in agents.effects] == [1, 2]  # the call in flight at the signal completed

    second = Worker(store, poll_s=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(second.run)
        await wait_for(lambda: all_terminal(store, [run_id]))
        second.drain()
    assert second.stats.finished == 1
    assert (await store.get_run(run_id)).status == "completed"
    assert await store.verify(run_id) == []
    check_exactly_once([run_id])


async def test_a_run_claimed_by_two_workers_ends_with_one_writer(store: Store) -> None:
    """Force it: the first holder's lease is expired by hand while it runs a tool."""
    (run_id,) = await submit_jobs(store, 1)
    # concurrency 1: the stalled worker has no free slot to claim the run back itself
    first = Worker(store, concurrency=1, poll_s=0.05, worker_id="first")
    second = Worker(store, poll_s=0.05, worker_id="second")
    stalled = anyio.Event()

    async def stall_the_first_holder(ctx: ToolContext, n: int) -> None:
        if n == 2 and not stalled.is_set():
            stalled.set()
            await expire_by_hand(store, run_id)
            # the first worker is stuck here while the second claims the run and finishes it
            await wait_for(lambda: all_terminal(store, [run_id]))

    agents.on_tool = stall_the_first_holder
    async with anyio.create_task_group() as tg:
        tg.start_soon(first.run)
        await stalled.wait()
        tg.start_soon(second.run)
        await wait_for(lambda: all_terminal(store, [run_id]))
        await wait_for(lambda: _true(first.stats.lost == 1))
        first.drain()
        second.drain()
    assert (first.stats.lost, first.stats.finished, second.stats.finished) == (1, 0, 1)
    info = await store.get_run(run_id)
    assert info.status == "completed"  # not failed: losing the lease is not the run's failure
    types = await event_types(store, run_id)
    assert types.count("run_finished") == 1 and types.count("run_resumed") == 2
    journal = await store.load(run_id)
    completed = [e.event.call_id for e in journal if e.event.type == "tool_completed"]
    assert len(completed) == len(set(completed)) == 3  # the stalled worker's late outcome was refused
    assert await store.verify(run_id) == []
    # the in-doubt call was idempotent, so the second holder re-ran it under the same key
    assert [n for _, n in agents.effects].count(2) == 2
    assert len({key for key, n in agents.effects if n == 2}) == 1


async def _true(value: bool) -> bool:
    return value


async def test_a_run_whose_agent_cannot_be_imported_is_released_for_a_later_retry(store: Store) -> None:
    run_id = await submit(store, agents.unimportable, "job g: hi")
    worker = Worker(store, poll_s=0.05, retry_delay_s=0.3)
    t0 = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await wait_for(lambda: _true(worker.stats.errors >= 2))
        worker.drain()
    # claimed, refused, kept back retry_delay_s, claimed again: never failed, never lost
    assert time.monotonic() - t0 >= 0.3
    info = await store.get_run(run_id)
    assert info.status == "pending" and info.event_count == 1
    await anyio.sleep(0.35)  # past the last release's delay: the run is still in the queue
    lease = await store.claim("other", lease_s=30)
    assert lease is not None and lease.run_id == run_id


async def test_worker_settings_are_checked(store: Store) -> None:
    with pytest.raises(ConfigError, match="concurrency must be"):
        Worker(store, concurrency=0)
    with pytest.raises(ConfigError, match="lease_s must be a positive"):
        Worker(store, lease_s=0)


class JumpClock:
    """The system clock, whose wall time can jump (an NTP step, a VM resumed); monotonic time does not."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.perf_counter()


async def test_a_wall_clock_jump_forward_lets_another_worker_take_over_and_fences_the_first(
    tmp_path: Any,
) -> None:
    clock = JumpClock()
    store = SQLiteStore(tmp_path / "j.db", clock=clock)
    try:
        (run_id,) = await submit_jobs(store, 1)
        first = Worker(store, concurrency=1, poll_s=0.05, worker_id="first", clock=clock)
        second = Worker(
            SQLiteStore(tmp_path / "j.db", clock=clock), poll_s=0.05, worker_id="second", clock=clock
        )
        jumped = anyio.Event()

        async def jump(ctx: ToolContext, n: int) -> None:
            if n == 1 and not jumped.is_set():
                jumped.set()
                clock.offset += 3600  # every lease on this host now looks an hour old
                await wait_for(lambda: all_terminal(store, [run_id]))

        agents.on_tool = jump
        async with anyio.create_task_group() as tg:
            tg.start_soon(first.run)
            await jumped.wait()
            tg.start_soon(second.run)
            await wait_for(lambda: _true(first.stats.lost == 1))
            first.drain()
            second.drain()
        assert (await store.get_run(run_id)).status == "completed" and await store.verify(run_id) == []
        assert (await event_types(store, run_id)).count("run_finished") == 1
        await second.store.aclose()
    finally:
        await store.aclose()


async def test_a_wall_clock_jump_is_logged_at_the_next_heartbeat(tmp_path: Any) -> None:
    clock = JumpClock()
    store = SQLiteStore(tmp_path / "j.db", clock=clock)
    try:
        (run_id,) = await submit_jobs(store, 1)

        async def jump(ctx: ToolContext, n: int) -> None:
            if n == 1:
                clock.offset -= 120
                await anyio.sleep(0.5)  # a heartbeat (every 0.2 s) passes meanwhile

        agents.on_tool = jump
        with capture_logs() as logs:
            worker = Worker(store, poll_s=0.05, lease_s=0.6, clock=clock)
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                await wait_for(lambda: all_terminal(store, [run_id]))
                worker.drain()
        jumps = [e for e in logs if "wall clock jumped" in e["event"]]
        assert jumps and -121 < jumps[0]["jump_s"] < -119 and jumps[0]["log_level"] == "warning"
        # the heartbeat renewed on the new clock, so the run stayed with its worker
        assert worker.stats.finished == 1 and worker.stats.lost == 0
    finally:
        await store.aclose()


async def test_a_run_whose_journal_does_not_parse_is_released_not_failed(tmp_path: Any) -> None:
    store = SQLiteStore(tmp_path / "j.db")
    try:
        (run_id,) = await submit_jobs(store, 1)
        # a row that no longer reads as an event (a bad restore, a hand edit)
        store._conn.execute('UPDATE events SET data = \'{"type": "nonsense"}\' WHERE run_id = ?', (run_id,))
        with capture_logs() as logs:
            worker = Worker(store, poll_s=0.05, retry_delay_s=60)
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                await wait_for(lambda: _true(worker.stats.errors == 1))
                worker.drain()
        (error,) = [e for e in logs if e["log_level"] == "error"]
        assert "cannot be read" in error["error"] and error["run_id"] == run_id
        info = await store.get_run(run_id)
        assert info.status == "pending"  # not failed by a worker that could not read it; kept back
        assert await store.claim("other", lease_s=30) is None
    finally:
        await store.aclose()


async def test_stopping_at_once_redoes_the_step_elsewhere_and_never_marks_the_run_cancelled(
    store: Store,
) -> None:
    (run_id,) = await submit_jobs(store, 1)
    first = Worker(store, poll_s=0.05)
    in_tool = anyio.Event()

    async def hang(ctx: ToolContext, n: int) -> None:
        if n == 2 and not in_tool.is_set():
            in_tool.set()
            await anyio.sleep(60)

    agents.on_tool = hang
    async with anyio.create_task_group() as tg:
        tg.start_soon(first.run)
        await in_tool.wait()
        first.stop_now()  # a second SIGTERM: the tool in flight is abandoned
    info = await store.get_run(run_id)
    assert info.status == "running" and not info.terminal  # not `cancelled`: the run is not over
    assert await store.claim("peek", lease_s=0.001) is not None  # released at once, not after the lease
    await anyio.sleep(0.01)
    second = Worker(store, poll_s=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(second.run)
        await wait_for(lambda: all_terminal(store, [run_id]))
        second.drain()
    info = await store.get_run(run_id)
    assert info.status == "completed" and await store.verify(run_id) == []
    # the abandoned call was in doubt; its tool is idempotent, so it was run again under its key
    assert sorted(n for _, n in agents.effects) == [1, 2, 3]
    assert all(count == 1 for count in agents.model_calls.values())


async def test_cancelling_the_worker_task_is_a_stop_at_once(store: Store) -> None:
    (run_id,) = await submit_jobs(store, 1)
    worker = Worker(store, poll_s=0.05)
    in_tool = anyio.Event()

    async def hang(ctx: ToolContext, n: int) -> None:
        in_tool.set()
        await anyio.sleep(60)

    agents.on_tool = hang
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await in_tool.wait()
        tg.cancel_scope.cancel()
    assert (await store.get_run(run_id)).status == "running"
    assert await store.claim("next", lease_s=30) is not None
