"""A clock that jumps, forward and back, under the stores' leases and under workers.

The defined outcomes (`tether.journal._store`'s docstring): lease times are the store's clock. On the
stores that keep time themselves (memory, SQLite: the host's clock) a jump forward makes leases expire
early, so a run is taken over sooner than needed and the old holder's next write is refused (safe); a
jump back delays the takeover of a dead worker's runs by the size of the jump. On PostgreSQL the
server's clock is the only one that counts: a worker whose clock jumps either way keeps its run, and
says in its log that the clock jumped. Journal times may then go backwards; the hash chain does not care.
(A forward jump under two live SQLite workers is `test_worker.py`'s
`test_a_wall_clock_jump_forward_lets_another_worker_take_over_and_fences_the_first`.)
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import inproc_agents as agents
import pytest
from structlog.testing import capture_logs
from worker_helpers import (
    POSTGRES_DSN,
    all_terminal,
    drop_schema,
    new_schema_name,
    require_postgres,
    wait_for,
)

from tether import ToolContext
from tether.exceptions import LeaseLost
from tether.journal import MemoryStore, RunStarted, SQLiteStore, Store, UsageCharged
from tether.journal.stores.postgres import PostgresStore
from tether.models import Usage
from tether.workers import Worker, submit

pytestmark = pytest.mark.anyio


class ManualClock:
    """Wall time that moves only when told, and may jump either way; monotonic time never jumps."""

    def __init__(self) -> None:
        self.wall = 1_767_225_600.0
        self.mono = 0.0

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        """Time passes."""
        self.wall += seconds
        self.mono += seconds

    def jump(self, seconds: float) -> None:
        """The wall clock is stepped (NTP, a VM resumed, an operator), by `seconds`, either way."""
        self.wall += seconds


class JumpClock:
    """The system clock, whose wall time can be stepped by `offset`."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.perf_counter()


@pytest.fixture(autouse=True)
def fresh_agents() -> Iterator[None]:
    agents.reset()
    yield
    agents.reset()


@pytest.fixture(params=["memory", "sqlite"])
async def own_clock_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Store, ManualClock]]:
    """A store that judges leases by a clock of its own (the host's), here one the test moves."""
    clock = ManualClock()
    store: Store = (
        MemoryStore(clock=clock) if request.param == "memory" else SQLiteStore(tmp_path / "j.db", clock=clock)
    )
    try:
        yield store, clock
    finally:
        await store.aclose()


def started() -> RunStarted:
    return RunStarted(at=1.0, agent="a", input="hi", model="test:m", instructions="")


def charge(at: float) -> list[UsageCharged]:
    return [UsageCharged(at=at, step=1, model="test:m", usage=Usage(input_tokens=1))]


async def test_a_jump_forward_expires_leases_early_and_fences_the_old_holder(
    own_clock_store: tuple[Store, ManualClock],
) -> None:
    store, clock = own_clock_store
    await store.enqueue("r1", started())
    first = await store.claim("first", lease_s=30)
    assert first is not None
    clock.advance(5)
    assert await store.claim("second", lease_s=30) is None  # held: 25 s of the lease left
    clock.jump(+60)  # the host's clock is stepped a minute ahead
    second = await store.claim("second", lease_s=30)
    assert second is not None and second.run_id == "r1"  # taken over sooner than needed
    with pytest.raises(LeaseLost, match="worker 'first' held lease epoch 1"):
        await store.append("r1", charge(clock.now()), expected_seq=1, lease=first)
    with pytest.raises(LeaseLost):
        await store.renew(first)
    assert await store.append("r1", charge(clock.now()), expected_seq=1, lease=second) == 2
    assert await store.verify("r1") == []


async def test_a_jump_back_delays_the_takeover_of_a_dead_workers_run_by_the_jump(
    own_clock_store: tuple[Store, ManualClock],
) -> None:
    store, clock = own_clock_store
    await store.enqueue("r1", started())
    dead = await store.claim("dead", lease_s=30)  # and its worker dies: no more heartbeats
    assert dead is not None
    clock.jump(-100)
    clock.advance(31)  # the lease's 30 s have really passed...
    assert await store.claim("second", lease_s=30) is None  # ...but by the clock 99 s of it remain
    clock.advance(98)
    assert await store.claim("second", lease_s=30) is None
    clock.advance(2)  # 131 s: the 30 s lease + the 100 s jump, and a little
    second = await store.claim("second", lease_s=30)
    assert second is not None and second.run_id == "r1"
    with pytest.raises(LeaseLost):  # the dead worker, had it only been paused, is fenced out as ever
        await store.append("r1", charge(clock.now()), expected_seq=1, lease=dead)


async def test_a_live_worker_keeps_its_run_through_a_jump_back_on_its_own_clock(tmp_path: Path) -> None:
    """SQLite, the clock shared by the store and the worker: the heartbeat renews on the new clock."""
    clock = JumpClock()
    store = SQLiteStore(tmp_path / "j.db", clock=clock)
    try:
        run_id = await submit(store, agents.agent, "job b: record 1 2 3")

        async def jump_back(ctx: ToolContext, n: int) -> None:
            if n == 2:
                clock.offset -= 3600
                await anyio.sleep(0.5)  # heartbeats (every 0.2 s) pass meanwhile

        agents.on_tool = jump_back
        with capture_logs() as logs:
            worker = Worker(store, poll_s=0.05, lease_s=0.6, clock=clock)
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                await wait_for(lambda: all_terminal(store, [run_id]))
                worker.drain()
        assert (worker.stats.finished, worker.stats.lost) == (1, 0)
        jumps = [e for e in logs if "wall clock jumped" in e["event"]]
        assert jumps and -3601 < jumps[0]["jump_s"] < -3599
        events = [s.event for s in await store.load(run_id)]
        ats = [e.at for e in events]
        assert ats != sorted(ats)  # the journal's times went back with the clock...
        assert await store.verify(run_id) == []  # ...and the journal is intact: order is its sequence
        assert (await store.get_run(run_id)).status == "completed"
    finally:
        await store.aclose()


@pytest.fixture
async def pg_store() -> AsyncIterator[PostgresStore]:
    await require_postgres()
    schema = new_schema_name()
    store = PostgresStore(POSTGRES_DSN, schema=schema, max_size=6)
    try:
        yield store
    finally:
        await store.aclose()
        await drop_schema(schema)


@pytest.mark.parametrize("jump_s", [+3600.0, -3600.0], ids=["forward", "back"])
async def test_on_postgres_a_workers_clock_jump_changes_nothing_about_its_leases(
    pg_store: PostgresStore, jump_s: float
) -> None:
    run_id = await submit(pg_store, agents.agent, "job p: record 1 2 3")
    first_clock, second_clock = JumpClock(), JumpClock()
    first = Worker(pg_store, concurrency=1, poll_s=0.05, lease_s=0.9, worker_id="first", clock=first_clock)
    # another worker polls all along: on a store that judged leases by worker clocks it would take over
    second = Worker(pg_store, poll_s=0.05, lease_s=0.9, worker_id="second", clock=second_clock)

    async def jump(ctx: ToolContext, n: int) -> None:
        if n == 1:
            first_clock.offset += jump_s
            second_clock.offset += jump_s
            await anyio.sleep(1.2)  # longer than the lease: only heartbeats keep the run

    agents.on_tool = jump
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(first.run)
            await wait_for(lambda: _true(first.stats.claimed == 1))
            tg.start_soon(second.run)
            await wait_for(lambda: all_terminal(pg_store, [run_id]))
            first.drain()
            second.drain()
    assert (first.stats.finished, first.stats.lost, second.stats.claimed) == (1, 0, 0)
    jumps = [e for e in logs if "wall clock jumped" in e["event"] and e["worker_id"] == "first"]
    assert jumps and abs(jumps[0]["jump_s"] - jump_s) < 1
    assert await pg_store.verify(run_id) == []
    assert [s.event.type for s in await pg_store.load(run_id)].count("run_resumed") == 1


async def _true(value: bool) -> bool:
    return value
