"""Resume rebuilds a run from its journal: no model call is repeated, no completed tool runs again."""

from __future__ import annotations

from typing import Any

import pytest

from tether import Agent, Runner, ToolContext, tool
from tether.journal import Store, ToolFailed
from tether.models import ToolResultMessage
from tether.testing import ScriptedModel, call

pytestmark = pytest.mark.anyio


class ProcessDied(BaseException):
    """Stands in for kill -9: nothing after it runs, nothing is written."""


def build(effects: list[str], *, crash_on: str | None, idempotent: bool, on_in_doubt: str = "ask") -> Agent:
    @tool
    def lookup(order_id: str) -> str:
        """Read."""
        effects.append(f"lookup {order_id}")
        return "kettle x3"

    @tool(idempotent=idempotent, reversible=False)
    def refund(order_id: str, amount: float) -> str:
        """Write."""
        effects.append(f"refund {amount}")
        if crash_on == "refund":
            raise ProcessDied
        return "refunded"

    def script(messages: Any, tools: Any) -> Any:
        done = [m.name for m in messages if isinstance(m, ToolResultMessage)]
        if "lookup" not in done:
            return call("lookup", order_id="1042")
        if "refund" not in done:
            return call("refund", order_id="1042", amount=49.0)
        return "Refunded 49.00"

    return Agent(
        "support",
        tools=[lookup, refund],
        model=ScriptedModel(script),
        ref="tests:unused",
        on_in_doubt=on_in_doubt,  # type: ignore[arg-type]
    )


async def test_resume_after_a_crash_mid_tool_reruns_an_idempotent_call(store: Store) -> None:
    effects: list[str] = []
    agent = build(effects, crash_on="refund", idempotent=True)
    with pytest.raises(ProcessDied):
        await Runner(store).run(agent, "refund 49.0 for order 1042", run_id="r1")
    assert (await store.get_run("r1")).status == "running"
    before = agent.model.request_count  # type: ignore[attr-defined]

    effects.clear()
    agent2 = build(effects, crash_on=None, idempotent=True)
    result = await Runner(store).resume("r1", agent2)
    assert result.ok and result.output == "Refunded 49.00"
    assert effects == ["refund 49.0"]  # the lookup is not run again; the refund is re-run with the same key
    assert before == 2 and agent2.model.request_count == 1  # type: ignore[attr-defined]  # only the new step
    events = [s.event for s in await store.load("r1")]
    resumed = next(e for e in events if e.type == "run_resumed")
    assert len(resumed.in_doubt) == 1
    keys = [e.idempotency_key for e in events if e.type == "tool_started" and e.tool == "refund"]
    assert len(keys) == 2 and keys[0] == keys[1]


async def test_an_in_doubt_call_that_is_not_idempotent_is_never_rerun(store: Store) -> None:
    effects: list[str] = []
    with pytest.raises(ProcessDied):
        await Runner(store).run(build(effects, crash_on="refund", idempotent=False), "refund 49.0 for order 1042", run_id="r1")
    effects.clear()
    agent2 = build(effects, crash_on=None, idempotent=False, on_in_doubt="report")
    result = await Runner(store).resume("r1", agent2)
    assert effects == []  # neither the completed lookup nor the in-doubt refund ran again
    failed = [s.event for s in await store.load("r1") if isinstance(s.event, ToolFailed)]
    assert failed[0].kind == "in_doubt" and "may or may not have taken effect" in failed[0].message
    # the model was told, and (in this script) answers without calling refund again
    assert result.ok


async def test_resume_after_a_crash_during_the_next_model_call(store: Store) -> None:
    effects: list[str] = []
    agent = build(effects, crash_on=None, idempotent=False)
    model = agent.model
    inner = model._function  # type: ignore[attr-defined]

    def dies_on_second_request(messages: Any, tools: Any) -> Any:
        if model.request_count == 1:  # type: ignore[attr-defined]
            raise ProcessDied
        return inner(messages, tools)

    model._function = dies_on_second_request  # type: ignore[attr-defined]
    with pytest.raises(ProcessDied):
        await Runner(store).run(agent, "refund 49.0 for order 1042", run_id="r1")
    assert effects == ["lookup 1042"]
    # the lookup's result was committed before the model call that died
    assert [s.event.type for s in await store.load("r1")][-1] == "tool_completed"

    effects.clear()
    agent2 = build(effects, crash_on=None, idempotent=False)
    result = await Runner(store).resume("r1", agent2)
    assert result.ok and effects == ["refund 49.0"]
    assert agent2.model.request_count == 2  # type: ignore[attr-defined]  # step 1 came from the journal
    assert result.steps == 3


async def test_resuming_a_finished_run_changes_nothing(store: Store) -> None:
    agent = build([], crash_on=None, idempotent=True)
    first = await Runner(store).run(agent, "refund 49.0 for order 1042", run_id="r1")
    count = len(await store.load("r1"))
    again = await Runner(store).resume("r1", agent)
    assert (again.status, again.output) == (first.status, first.output)
    assert len(await store.load("r1")) == count


class CountingStore:
    """Wraps a store and counts journal transactions."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.appends = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def append(self, run_id: str, events: Any, *, expected_seq: int, **kw: Any) -> int:
        self.appends += 1
        return await self.inner.append(run_id, events, expected_seq=expected_seq, **kw)


@pytest.mark.parametrize(("idempotent", "per_step"), [(True, 1), (False, 2)])
async def test_transactions_per_step(store: Store, idempotent: bool, per_step: int) -> None:
    @tool(idempotent=idempotent)
    def record(n: int) -> str:
        """Record."""
        return "ok"

    script = [call("record", n=n) for n in range(2, 7)] + ["recorded"]
    agent = Agent("a", tools=[record], model=ScriptedModel(script))
    counting = CountingStore(store)
    result = await Runner(counting).run(agent, "record 2 3 4 5 6")  # type: ignore[arg-type]
    assert result.ok and result.steps == 6
    # 5 steps with a tool call, then the final answer (which carries the last outcome when deferred)
    assert counting.appends == 5 * per_step + 1


async def test_an_idempotent_outcome_lost_with_the_next_model_call_is_rerun_with_the_same_key(store: Store) -> None:
    keys: list[str] = []

    @tool(idempotent=True)
    def reserve(ctx: ToolContext, item: str) -> str:
        """Reserve."""
        keys.append(ctx.idempotency_key)
        return "reserved"

    def script(messages: Any, tools: Any) -> Any:
        if not any(isinstance(m, ToolResultMessage) for m in messages):
            return call("reserve", item="kettle")
        if crash["on"]:
            raise ProcessDied
        return "reserved it"

    crash = {"on": True}
    agent = Agent("a", tools=[reserve], model=ScriptedModel(script))
    with pytest.raises(ProcessDied):
        await Runner(store).run(agent, "reserve a kettle", run_id="r1")
    crash["on"] = False
    result = await Runner(store).resume("r1", agent)
    assert result.ok and len(keys) == 2 and keys[0] == keys[1]
