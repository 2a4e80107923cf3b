"""The contract every store backend passes (parametrised over all of them by the `store` fixture)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from tether.exceptions import ConfigError, JournalConflict, LeaseLost, RunNotFound, StoreError
from tether.journal import (
    MemoryStore,
    ModelResponded,
    RunFinished,
    RunStarted,
    SQLiteStore,
    Store,
    ToolCompleted,
    ToolStarted,
    UsageCharged,
)
from tether.models import ModelResponse, ToolCall, Usage

pytestmark = pytest.mark.anyio


def started(agent: str = "a", at: float = 100.0) -> RunStarted:
    return RunStarted(at=at, agent=agent, input="hello", model="test:m", instructions="be brief")


def step_events(step: int = 1) -> list:
    call = ToolCall(call_id="c1", name="lookup", arguments={"order_id": "1042", "n": 2})
    return [
        ModelResponded(at=101.0, step=step, response=ModelResponse(tool_calls=(call,), model="test:m")),
        UsageCharged(at=101.0, step=step, model="test:m", usage=Usage(input_tokens=30, output_tokens=7)),
        ToolStarted(
            at=101.5,
            step=step,
            call_id="c1",
            tool="lookup",
            arguments={"order_id": "1042"},
            idempotency_key="r:1:c1",
        ),
        ToolCompleted(
            at=102.0,
            step=step,
            call_id="c1",
            tool="lookup",
            output={"total": 12.5},
            content='{"total": 12.5}',
            duration_s=0.5,
        ),
    ]


async def test_round_trip_is_exact(store: Store) -> None:
    await store.create_run("r1", started())
    events = step_events()
    assert await store.append("r1", events, expected_seq=1) == 5
    loaded = await store.load("r1")
    assert [s.seq for s in loaded] == [0, 1, 2, 3, 4]
    assert [s.event for s in loaded] == [started(), *events]
    assert len({s.hash for s in loaded}) == 5


async def test_summary_follows_the_journal(store: Store) -> None:
    await store.create_run("r1", started())
    info = await store.get_run("r1")
    assert (info.status, info.agent, info.input, info.event_count) == ("running", "a", "hello", 1)
    await store.append("r1", step_events(), expected_seq=1)
    await store.append(
        "r1",
        [
            RunFinished(
                at=110.0,
                status="completed",
                reason="done",
                output="12.5",
                steps=1,
                usage=Usage(input_tokens=30, output_tokens=7),
            )
        ],
        expected_seq=5,
    )
    info = await store.get_run("r1")
    assert info.status == "completed" and info.terminal
    assert (info.output, info.steps, info.input_tokens, info.output_tokens) == ("12.5", 1, 30, 7)
    assert info.updated_at == 110.0 and info.created_at == 100.0


async def test_stale_writer_is_rejected(store: Store) -> None:
    await store.create_run("r1", started())
    await store.append("r1", step_events()[:2], expected_seq=1)
    with pytest.raises(JournalConflict, match="expected 1"):
        await store.append("r1", step_events()[2:], expected_seq=1)
    assert len(await store.load("r1")) == 3  # nothing of the rejected batch was written


async def test_unknown_run(store: Store) -> None:
    with pytest.raises(RunNotFound, match="nope"):
        await store.get_run("nope")
    with pytest.raises(RunNotFound):
        await store.load("nope")
    with pytest.raises(RunNotFound):
        await store.append("nope", step_events(), expected_seq=0)


async def test_duplicate_run_id(store: Store) -> None:
    await store.create_run("r1", started())
    with pytest.raises(StoreError, match="exists already"):
        await store.create_run("r1", started())


async def test_list_filters_and_orders_newest_first(store: Store) -> None:
    await store.create_run("old", started("a", at=1.0))
    await store.create_run("mid", started("b", at=2.0))
    await store.create_run("new", started("a", at=3.0))
    await store.append(
        "mid", [RunFinished(at=4.0, status="failed", reason="x", steps=0, usage=Usage())], expected_seq=1
    )
    assert [r.run_id for r in await store.list_runs()] == ["new", "mid", "old"]
    assert [r.run_id for r in await store.list_runs(agent="a")] == ["new", "old"]
    assert [r.run_id for r in await store.list_runs(status="failed")] == ["mid"]
    assert [r.run_id for r in await store.list_runs(limit=1)] == ["new"]


async def test_intact_journal_verifies(store: Store) -> None:
    await store.create_run("r1", started())
    await store.append("r1", step_events(), expected_seq=1)
    assert await store.verify("r1") == []


# --- the queue: enqueue, claim, renew, release, fencing ------------------------------------------------


async def expire_by_hand(store: Store, run_id: str) -> None:
    """Make the run's lease look expired, as if its worker had died long ago (no sleeping)."""
    if isinstance(store, MemoryStore):
        store._leases[run_id].expires_at = 0.0
    elif isinstance(store, SQLiteStore):
        store._conn.execute("UPDATE leases SET expires_at = 0 WHERE run_id = ?", (run_id,))
    else:
        import psycopg

        async with await psycopg.AsyncConnection.connect(store.conninfo, autocommit=True) as conn:
            await conn.execute(
                f'UPDATE "{store.schema}".leases SET expires_at = 0 WHERE run_id = %s', (run_id,)
            )


async def another(store: Store, tmp_path: Path) -> Store:
    """A second handle on the same store, as a second worker process would have (memory: the same)."""
    if isinstance(store, SQLiteStore):
        return SQLiteStore(store.path)
    if isinstance(store, MemoryStore):
        return store
    from tether.journal.stores.postgres import PostgresStore

    assert isinstance(store, PostgresStore)
    return PostgresStore(store.conninfo, schema=store.schema, max_size=4)


def finished(at: float = 120.0, status: str = "completed") -> RunFinished:
    return RunFinished(at=at, status=status, reason="done", output="ok", steps=1, usage=Usage())


async def test_enqueued_run_is_pending_until_claimed(store: Store) -> None:
    assert await store.enqueue("q1", started()) == "q1"
    info = await store.get_run("q1")
    assert (info.status, info.event_count, info.terminal) == ("pending", 1, False)
    assert [s.event for s in await store.load("q1")] == [started()]
    lease = await store.claim("w1", lease_s=30)
    assert lease is not None
    assert (lease.run_id, lease.worker_id, lease.epoch, lease.lease_s) == ("q1", "w1", 1, 30.0)
    assert lease.expires_at > time.time() + 20  # the store's clock, not the event's `at`
    assert await store.claim("w2", lease_s=30) is None  # held, not expired: nobody else gets it


async def test_claims_take_the_oldest_first_and_never_runs_that_were_not_queued(store: Store) -> None:
    await store.create_run("embedded", started())  # driven by its own process, not a queue
    for n in range(3):
        await store.enqueue(f"q{n}", started())
    claimed = [await store.claim("w", lease_s=30) for _ in range(4)]
    assert [c.run_id if c else None for c in claimed] == ["q0", "q1", "q2", None]


async def test_concurrent_claimers_never_get_the_same_run(store: Store, tmp_path: Path) -> None:
    for n in range(12):
        await store.enqueue(f"q{n}", started())
    second = await another(store, tmp_path)
    got: list[str] = []

    async def claimer(s: Store, name: str) -> None:
        while (lease := await s.claim(name, lease_s=30)) is not None:
            got.append(lease.run_id)

    try:
        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(claimer, store, f"a{n}")
                tg.start_soon(claimer, second, f"b{n}")
    finally:
        if second is not store:
            await second.aclose()
    assert sorted(got) == sorted(f"q{n}" for n in range(12))


async def test_same_idempotency_key_in_sequence_creates_one_run(store: Store) -> None:
    assert await store.enqueue("q1", started(), idempotency_key="order-1042") == "q1"
    # a retry of the same submission under a fresh run id gets the first run, and creates nothing
    assert await store.enqueue("q2", started(), idempotency_key="order-1042") == "q1"
    assert await store.enqueue("q3", started(), idempotency_key="order-1043") == "q3"
    assert sorted(r.run_id for r in await store.list_runs()) == ["q1", "q3"]
    with pytest.raises(RunNotFound):
        await store.get_run("q2")
    assert (await store.claim("w", lease_s=30)).run_id == "q1"  # type: ignore[union-attr]
    assert (await store.claim("w", lease_s=30)).run_id == "q3"  # type: ignore[union-attr]
    assert await store.claim("w", lease_s=30) is None  # q2 was never queued either


async def test_same_idempotency_key_concurrently_creates_one_run(store: Store, tmp_path: Path) -> None:
    second = await another(store, tmp_path)
    ids: list[str] = []

    async def submit(s: Store, n: int) -> None:
        ids.append(await s.enqueue(f"q{n}", started(), idempotency_key="same"))

    try:
        async with anyio.create_task_group() as tg:
            for n in range(8):
                tg.start_soon(submit, store if n % 2 else second, n)
    finally:
        if second is not store:
            await second.aclose()
    assert len(ids) == 8 and len(set(ids)) == 1, ids
    assert [r.run_id for r in await store.list_runs()] == ids[:1]


async def test_a_run_id_clash_is_not_mistaken_for_a_repeated_submission(store: Store) -> None:
    await store.enqueue("q1", started(), idempotency_key="k1")
    with pytest.raises(StoreError, match="exists already"):
        await store.enqueue("q1", started(), idempotency_key="k2")
    await store.create_run("r1", started())
    with pytest.raises(StoreError, match="exists already"):
        await store.enqueue("r1", started())


async def test_renew_extends_a_held_lease(store: Store) -> None:
    await store.enqueue("q1", started())
    lease = await store.claim("w1", lease_s=0.5)
    assert lease is not None
    renewed = await store.renew(replace(lease, lease_s=60))
    assert renewed.epoch == lease.epoch and renewed.expires_at > lease.expires_at + 50
    await expire_by_hand(store, "q1")
    # expired but claimed by nobody since: the lease is still the run's, and renewing keeps it
    again = await store.renew(renewed)
    assert again.epoch == lease.epoch
    assert await store.claim("w2", lease_s=30) is None


async def test_an_expired_lease_is_claimed_by_another_worker_who_fences_the_first_out(store: Store) -> None:
    await store.enqueue("q1", started())
    first = await store.claim("w1", lease_s=30)
    assert first is not None
    assert await store.append("q1", step_events()[:2], expected_seq=1, lease=first) == 3
    await expire_by_hand(store, "q1")  # w1 stalled (a pause, SIGSTOP) past its lease
    second = await store.claim("w2", lease_s=30)
    assert second is not None and (second.run_id, second.epoch) == ("q1", first.epoch + 1)
    # the stalled worker wakes up and writes at the head it knows: refused, and nothing of it is stored
    with pytest.raises(LeaseLost, match=r"another worker took run 'q1' over.*'w2'") as caught:
        await store.append("q1", step_events()[2:], expected_seq=3, lease=first)
    assert isinstance(caught.value, StoreError) and not caught.value.retryable
    assert len(await store.load("q1")) == 3
    with pytest.raises(LeaseLost):
        await store.renew(first)
    assert await store.release(first) is False  # giving up a lost lease changes nothing
    # the new holder writes at the same place, and the run has had exactly one writer at a time
    assert await store.append("q1", step_events()[2:], expected_seq=3, lease=second) == 5
    assert [s.event for s in await store.load("q1")] == [started(), *step_events()]
    assert await store.verify("q1") == []


async def test_a_lease_lost_before_a_conflict_is_reported_as_lost(store: Store) -> None:
    await store.enqueue("q1", started())
    first = await store.claim("w1", lease_s=30)
    assert first is not None
    await store.seize("q1", "operator", lease_s=30)
    with pytest.raises(LeaseLost):  # a stale seq too, but the lease is the reason to stop
        await store.append("q1", step_events(), expected_seq=0, lease=first)


async def test_release_requeues_an_unfinished_run_and_fences_the_released_lease(store: Store) -> None:
    await store.enqueue("q1", started())
    lease = await store.claim("w1", lease_s=30)
    assert lease is not None
    assert await store.release(lease) is True
    with pytest.raises(LeaseLost):  # nothing can be written under a lease once it is given up
        await store.append("q1", step_events(), expected_seq=1, lease=lease)
    again = await store.claim("w2", lease_s=30)
    assert again is not None and again.run_id == "q1" and again.epoch > lease.epoch


async def test_release_with_a_delay_keeps_the_run_back(store: Store) -> None:
    await store.enqueue("q1", started())
    lease = await store.claim("w1", lease_s=30)
    assert lease is not None
    await store.release(lease, delay_s=0.4)
    assert await store.claim("w2", lease_s=30) is None
    await anyio.sleep(0.5)
    assert (await store.claim("w2", lease_s=30)) is not None


async def test_a_finished_run_leaves_the_queue_with_its_last_event(store: Store) -> None:
    await store.enqueue("q1", started())
    lease = await store.claim("w1", lease_s=30)
    assert lease is not None
    await store.append("q1", [finished()], expected_seq=1, lease=lease)
    assert (await store.get_run("q1")).status == "completed"
    await expire_by_hand(store, "q1")  # even a worker that died before releasing leaves nothing to claim
    assert await store.claim("w2", lease_s=30) is None
    assert await store.release(lease) is True
    assert await store.claim("w2", lease_s=30) is None


async def test_a_run_finished_without_a_lease_leaves_the_queue_when_released(store: Store) -> None:
    await store.enqueue("q1", started())
    lease = await store.claim("w1", lease_s=30)
    assert lease is not None
    await store.append("q1", [finished()], expected_seq=1)  # an operator's `tether runs resume`
    assert await store.release(lease) is True
    assert await store.claim("w2", lease_s=30) is None


async def test_appends_without_a_lease_work_as_before_on_queued_runs(store: Store) -> None:
    await store.enqueue("q1", started())
    lease = await store.claim("w1", lease_s=30)
    assert lease is not None
    assert await store.append("q1", step_events(), expected_seq=1) == 5
    with pytest.raises(JournalConflict):  # the journal itself is still protected
        await store.append("q1", step_events(), expected_seq=1, lease=lease)


async def test_seize_takes_any_run_over(store: Store) -> None:
    await store.create_run("embedded", started())
    seized = await store.seize("embedded", "operator", lease_s=30)
    assert seized.epoch == 1
    assert await store.append("embedded", [finished()], expected_seq=1, lease=seized) == 2
    assert await store.claim("w", lease_s=30) is None  # seizing does not queue a run
    await store.enqueue("q1", started())
    held = await store.claim("w1", lease_s=30)
    assert held is not None
    taken = await store.seize("q1", "operator", lease_s=30)
    assert taken.epoch == held.epoch + 1
    with pytest.raises(LeaseLost, match="'operator'"):
        await store.renew(held)
    with pytest.raises(RunNotFound):
        await store.seize("nope", "operator", lease_s=30)


async def test_lease_lengths_must_be_positive(store: Store) -> None:
    await store.enqueue("q1", started())
    with pytest.raises(ConfigError, match="lease_s must be a positive"):
        await store.claim("w", lease_s=0)


# --- retention: delete and prune ---------------------------------------------------------------------


async def test_delete_removes_a_finished_run_and_refuses_an_unfinished_one(store: Store) -> None:
    await store.enqueue("q1", started(), idempotency_key="k")
    with pytest.raises(StoreError, match=r"pending, not finished.*tether runs cancel q1"):
        await store.delete("q1")
    lease = await store.claim("w", lease_s=30)
    await store.append("q1", [finished()], expected_seq=1, lease=lease)
    await store.delete("q1")
    for read in (store.get_run, store.load, store.verify, store.delete):
        with pytest.raises(RunNotFound):
            await read("q1")
    assert await store.list_runs() == []
    # the key went with the run: a new submission with it is a new run
    assert await store.enqueue("q2", started(), idempotency_key="k") == "q2"


async def test_prune_deletes_old_finished_runs_with_the_given_statuses(store: Store) -> None:
    for run_id, status, at in [
        ("old_done", "completed", 10.0),
        ("old_failed", "failed", 10.0),
        ("new_done", "completed", 1000.0),
    ]:
        await store.create_run(run_id, started(at=1.0))
        await store.append(run_id, [finished(at=at, status=status)], expected_seq=1)
    await store.create_run("old_running", started(at=1.0))
    old = await store.list_runs(updated_before=500.0)
    assert sorted(r.run_id for r in old) == ["old_done", "old_failed", "old_running"]
    assert await store.prune(before=500.0) == ["old_done"]
    assert sorted(r.run_id for r in await store.list_runs()) == ["new_done", "old_failed", "old_running"]
    assert await store.prune(before=500.0, statuses=("failed", "completed"), batch=1) == ["old_failed"]
    with pytest.raises(ConfigError, match="only finished runs can be pruned"):
        await store.prune(before=500.0, statuses=("running",))
    assert sorted(r.run_id for r in await store.list_runs()) == ["new_done", "old_running"]


async def test_a_run_can_be_created_or_queued_with_its_history_in_one_write(store: Store) -> None:
    await store.create_run("copy", started(), history=step_events())
    assert [s.event for s in await store.load("copy")] == [started(), *step_events()]
    assert (await store.get_run("copy")).event_count == 5 and await store.verify("copy") == []
    assert await store.enqueue("queued", started(), history=step_events()[:2]) == "queued"
    info = await store.get_run("queued")
    assert (info.status, info.event_count, info.steps) == ("pending", 3, 1)
    lease = await store.claim("w", lease_s=30)
    assert lease is not None and lease.run_id == "queued"
    assert await store.append("queued", step_events()[2:], expected_seq=3, lease=lease) == 5
    for bad in ([finished()], [started()]):
        with pytest.raises(ConfigError, match="cannot start or finish it"):
            await store.enqueue("bad", started(), history=bad)
        with pytest.raises(ConfigError, match="cannot start or finish it"):
            await store.create_run("bad", started(), history=bad)
    with pytest.raises(RunNotFound):
        await store.get_run("bad")
