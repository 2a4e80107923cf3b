"""The contract every store backend passes (parametrised over all of them by the `store` fixture)."""

from __future__ import annotations

import pytest

from tether.exceptions import JournalConflict, RunNotFound, StoreError
from tether.journal import (
    ModelResponded,
    RunFinished,
    RunStarted,
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
        ToolStarted(at=101.5, step=step, call_id="c1", tool="lookup", arguments={"order_id": "1042"}, idempotency_key="r:1:c1"),
        ToolCompleted(at=102.0, step=step, call_id="c1", tool="lookup", output={"total": 12.5}, content='{"total": 12.5}', duration_s=0.5),
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
        [RunFinished(at=110.0, status="completed", reason="done", output="12.5", steps=1, usage=Usage(input_tokens=30, output_tokens=7))],
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
