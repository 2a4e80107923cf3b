"""The step loop: answers, tool errors the model can correct, limits, and every way a run ends."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from tether import Agent, Limits, Runner, ToolContext, tool
from tether.exceptions import ModelServerError, ModelTimeout
from tether.journal import Store, ToolFailed
from tether.models import ModelResponse, ToolResultMessage, Usage, UserMessage
from tether.testing import ScriptedModel, call

pytestmark = pytest.mark.anyio

ORDERS = {"1042": {"item": "kettle", "unit_price": 24.5, "quantity": 3}}


@tool
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look an order up.

    Args:
        order_id: the order number, e.g. "1042".
    """
    if order_id not in ORDERS:
        raise KeyError(f"no order {order_id}")
    return ORDERS[order_id]


@tool(run_in_thread=False)
def multiply(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b


def agent_with(model: ScriptedModel, *, limits: Limits | None = None, tools: list | None = None) -> Agent:
    return Agent(
        "orders",
        instructions="Answer from the order database.",
        tools=tools if tools is not None else [lookup_order, multiply],
        model=model,
        limits=limits,
    )


async def events_of(store: Store, run_id: str) -> list[Any]:
    return [s.event for s in await store.load(run_id)]


async def test_two_tool_calls_then_an_answer(store: Store) -> None:
    model = ScriptedModel(
        [call("lookup_order", order_id="1042"), call("multiply", a=24.5, b=2), "Refund for 2 kettles: 49.00"]
    )
    result = await Runner(store).run(agent_with(model), "Refund 2 kettles from order 1042")
    assert result.ok and result.output == "Refund for 2 kettles: 49.00"
    assert result.steps == 3 and result.usage == Usage(input_tokens=60, output_tokens=30)
    types = [e.type for e in await events_of(store, result.run_id)]
    assert types == [
        "run_started",
        *["model_responded", "usage_charged", "tool_started", "tool_completed"] * 2,
        "model_responded",
        "usage_charged",
        "run_finished",
    ]
    # the model saw each tool result before its next turn
    last = model.requests[2]
    results = [m for m in last if isinstance(m, ToolResultMessage)]
    assert [r.content for r in results] == ['{"item": "kettle", "unit_price": 24.5, "quantity": 3}', "49.0"]
    info = await store.get_run(result.run_id)
    assert (info.status, info.output, info.steps) == ("completed", result.output, 3)


async def test_a_tool_that_raises_goes_back_to_the_model(store: Store) -> None:
    model = ScriptedModel(
        [call("lookup_order", order_id="9"), call("lookup_order", order_id="1042"), "found it"]
    )
    result = await Runner(store).run(agent_with(model), "order 9, or was it 1042?")
    assert result.ok
    failed = [e for e in await events_of(store, result.run_id) if isinstance(e, ToolFailed)]
    assert [(f.kind, f.error_type) for f in failed] == [("raised", "KeyError")]
    seen = model.requests[1][-1]
    assert isinstance(seen, ToolResultMessage) and seen.is_error and "no order 9" in seen.content


async def test_unknown_tool_is_reported_to_the_model(store: Store) -> None:
    model = ScriptedModel([call("delete_everything"), "sorry"])
    result = await Runner(store).run(agent_with(model), "x")
    assert result.ok
    failed = [e for e in await events_of(store, result.run_id) if isinstance(e, ToolFailed)]
    assert failed[0].kind == "unknown_tool"
    assert (
        "unknown tool 'delete_everything'; agent 'orders' has ['lookup_order', 'multiply']"
        in failed[0].message
    )
    assert "tool_started" not in [e.type for e in await events_of(store, result.run_id)]


async def test_wrong_arguments_are_reported_with_the_schema(store: Store) -> None:
    model = ScriptedModel([call("multiply", a="two", b=3), call("multiply", a=2, b=3), "6"])
    result = await Runner(store).run(agent_with(model), "2*3")
    assert result.ok and result.output == "6"
    failed = [e for e in await events_of(store, result.run_id) if isinstance(e, ToolFailed)]
    assert failed[0].kind == "invalid_arguments"
    assert (
        "a: Input should be a valid number" in failed[0].message
        and '"required":["a","b"]' in failed[0].message
    )


async def test_arguments_that_are_not_json(store: Store) -> None:
    from tether.models import ToolCall

    model = ScriptedModel([ToolCall(call_id="x", name="multiply", arguments='{"a": 2, "b":'), "gave up"])
    result = await Runner(store).run(agent_with(model), "2*3")
    failed = [e for e in await events_of(store, result.run_id) if isinstance(e, ToolFailed)]
    assert failed[0].kind == "invalid_arguments" and "not valid JSON" in failed[0].message


async def test_a_hung_sync_tool_times_out(store: Store) -> None:
    @tool(timeout_s=0.2)
    def slow_lookup(order_id: str) -> str:
        """Hangs."""
        time.sleep(2)
        return "late"

    model = ScriptedModel([call("slow_lookup", order_id="1"), "it timed out"])
    t0 = time.perf_counter()
    result = await Runner(store).run(agent_with(model, tools=[slow_lookup]), "x")
    assert time.perf_counter() - t0 < 1.5
    assert result.ok
    failed = [e for e in await events_of(store, result.run_id) if isinstance(e, ToolFailed)]
    assert failed[0].kind == "timeout" and "within its timeout of 0.2s" in failed[0].message


async def test_a_hung_async_tool_times_out_and_limits_cap_tool_timeouts(store: Store) -> None:
    @tool(timeout_s=30)
    async def wait_forever() -> str:
        """Hangs."""
        await anyio.sleep_forever()
        return ""

    model = ScriptedModel([call("wait_forever"), "done"])
    limits = Limits(tool_timeout_s=0.1)
    result = await Runner(store).run(agent_with(model, tools=[wait_forever], limits=limits), "x")
    failed = [e for e in await events_of(store, result.run_id) if isinstance(e, ToolFailed)]
    assert failed[0].kind == "timeout" and "0.1s" in failed[0].message


async def test_max_steps(store: Store) -> None:
    # a different call each step (never a repeat), and never an answer
    steps = iter(range(100))
    model = ScriptedModel(lambda messages, tools: call("multiply", a=next(steps), b=1))
    result = await Runner(store).run(agent_with(model, limits=Limits(max_steps=4)), "x")
    assert (result.status, result.steps) == ("max_steps", 4)
    assert "max_steps=4" in result.reason
    assert (await store.get_run(result.run_id)).status == "max_steps"


async def test_token_budget_is_checked_before_each_model_call(store: Store) -> None:
    model = ScriptedModel(
        lambda m, t: call("multiply", a=len(m), b=1), usage=Usage(input_tokens=400, output_tokens=100)
    )
    result = await Runner(store).run(agent_with(model, limits=Limits(max_total_tokens=1200)), "x")
    assert result.status == "budget_exceeded"
    assert model.request_count == 3 and result.usage.total_tokens == 1500
    assert "used 1500 tokens, the limit is max_total_tokens=1200" in result.reason


async def test_loop_detection(store: Store) -> None:
    model = ScriptedModel(lambda m, t: call("multiply", a=2, b=2))
    result = await Runner(store).run(agent_with(model, limits=Limits(max_repeated_calls=3)), "2 times 2")
    assert result.status == "failed" and result.reason.startswith("loop detected: multiply")
    events = await events_of(store, result.run_id)
    # the call runs once; the repeat is answered from its result (and the next turn forced to text);
    # the third identical call ends the run
    assert len([e for e in events if e.type == "tool_started"]) == 1
    assert [e.kind for e in events if e.type == "tool_failed"] == ["repeated"]


async def test_run_timeout(store: Store) -> None:
    model = ScriptedModel(["never"], delay_s=5)
    result = await Runner(store).run(agent_with(model, limits=Limits(timeout_s=0.2)), "x")
    assert result.status == "timed_out" and "timeout of 0.2s" in result.reason


async def test_model_timeout_is_journaled(store: Store) -> None:
    model = ScriptedModel([ModelTimeout("model test:scripted did not answer within 3s")])
    result = await Runner(store).run(agent_with(model), "x")
    assert result.status == "timed_out"
    types = [e.type for e in await events_of(store, result.run_id)]
    assert types == ["run_started", "model_failed", "run_finished"]


async def test_model_error_fails_the_run_with_the_reason(store: Store) -> None:
    model = ScriptedModel([ModelServerError("endpoint http://x returned 503; retry later")])
    result = await Runner(store).run(agent_with(model), "x")
    assert result.status == "failed" and "returned 503" in result.reason
    failed = (await events_of(store, result.run_id))[1]
    assert failed.type == "model_failed" and failed.retryable


async def test_cancellation_is_recorded(store: Store) -> None:
    model = ScriptedModel(["never"], delay_s=10)
    runner = Runner(store)
    agent = agent_with(model)
    with anyio.move_on_after(0.2):
        await runner.run(agent, "x")
    (info,) = await store.list_runs()
    assert info.status == "cancelled"


async def test_raise_for_status() -> None:
    from tether.exceptions import RunError
    from tether.journal import MemoryStore

    model = ScriptedModel(lambda m, t: call("multiply", a=len(m), b=1))
    result = await Runner(MemoryStore()).run(agent_with(model, limits=Limits(max_steps=1)), "x")
    with pytest.raises(RunError, match="ended max_steps"):
        result.raise_for_status()


async def test_tools_receive_a_stable_idempotency_key(store: Store) -> None:
    seen: list[ToolContext] = []

    @tool
    async def charge(amount: float, ctx: ToolContext) -> str:
        """Charge a card."""
        seen.append(ctx)
        return "ok"

    assert "ctx" not in charge.definition.parameters["properties"]
    model = ScriptedModel([call("charge", amount=5), "charged"])
    result = await Runner(store).run(agent_with(model, tools=[charge]), "charge 5")
    (ctx,) = seen
    assert ctx.run_id == result.run_id and ctx.step == 1
    started = next(e for e in await events_of(store, result.run_id) if e.type == "tool_started")
    assert ctx.idempotency_key == started.idempotency_key == f"{result.run_id}:1:{ctx.call_id}"


async def test_observer_sees_events_and_tokens(store: Store) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.events: list[str] = []
            self.tokens: list[str] = []

        def event(self, run_id: str, event: Any) -> None:
            self.events.append(event.type)

        def token(self, run_id: str, text: str) -> None:
            self.tokens.append(text)

    rec = Recorder()
    model = ScriptedModel([call("multiply", a=1, b=2), ModelResponse(text="2", usage=Usage())])
    await Runner(store, observer=rec).run(agent_with(model), "1 times 2")
    assert rec.events[0] == "run_started" and rec.events[-1] == "run_finished"
    assert "tool_completed" in rec.events and rec.tokens == ["2"]


async def test_input_must_be_text(store: Store) -> None:
    from tether.exceptions import ConfigError

    with pytest.raises(ConfigError, match="must be a string"):
        await Runner(store).run(agent_with(ScriptedModel(["x"])), 42)  # type: ignore[arg-type]


async def test_a_repeated_call_is_answered_from_its_result_and_the_next_turn_is_text(store: Store) -> None:
    effects: list[int] = []

    @tool
    def square(x: int) -> int:
        """Square."""
        effects.append(x)
        return x * x

    seen_choices: list[str] = []

    def script(messages: Any, tools: Any) -> Any:
        # the answered repeat comes back as a user turn after the results, not as a second result
        told = [m for m in messages if isinstance(m, UserMessage) and "already called" in m.content]
        return "49" if told else call("square", x=7)

    class Recording(ScriptedModel):
        async def request(
            self, messages: Any, *, tools: Any = (), settings: Any = None, on_token: Any = None
        ) -> Any:
            seen_choices.append(settings.tool_choice)
            return await super().request(messages, tools=tools, settings=settings, on_token=on_token)

    result = await Runner(store).run(agent_with(Recording(script), tools=[square]), "square 7")
    assert result.ok and result.output == "49" and effects == [7]
    assert seen_choices == ["auto", "auto", "none"]
    repeated = [e for e in await events_of(store, result.run_id) if e.type == "tool_failed"]
    assert repeated[0].kind == "repeated" and "its result is above" in repeated[0].message
