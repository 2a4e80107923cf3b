"""The loop fits long conversations into the model's window (journaled), and a failed model call's every
try is journaled with its failure."""

from __future__ import annotations

from typing import Any

import pytest

from tether import Agent, Limits, Runner, tool
from tether.exceptions import ConfigError, ModelServerError
from tether.journal import ContextTrimmed, ModelFailed, Store
from tether.models import Attempt, ToolResultMessage
from tether.testing import ScriptedModel, call

pytestmark = pytest.mark.anyio


@tool
def page(n: int) -> str:
    """Read page n of the manual."""
    return f"page {n}: " + "lorem ipsum dolor sit amet " * 40


async def test_a_conversation_over_the_window_is_pruned_and_journaled(store: Store) -> None:
    asked = 0

    def script(messages: Any, tools: Any) -> Any:
        nonlocal asked  # what it has read, remembered here: pruned turns are not in what it is sent
        asked += 1
        return call("page", n=asked) if asked <= 6 else "Done reading."

    model = ScriptedModel(script)
    agent = Agent(
        "reader", tools=[page], model=model, limits=Limits(context_window_tokens=900, max_output_tokens=100)
    )
    # small models copy numbers: every page number is in the input so that the calls are grounded
    result = await Runner(store).run(agent, "Read pages 1 2 3 4 5 6 7 of the manual.", run_id="r")
    assert result.status == "completed"
    trims = [s.event for s in await store.load("r") if isinstance(s.event, ContextTrimmed)]
    assert trims and all(t.tokens_after <= t.budget_tokens for t in trims if t.fits)
    assert max(t.dropped_turns for t in trims) >= 1
    last = model.requests[-1]
    assert sum(isinstance(m, ToolResultMessage) for m in last) < 6  # the call really was sent less
    assert "[context note]" in " ".join(getattr(m, "content", "") for m in last)
    # the journal says what the model read instead, and the window kept room for the answer and the tools
    assert trims[-1].note in [m.content for m in last]
    assert all(t.budget_tokens < 900 - 100 for t in trims)


def test_a_window_no_bigger_than_the_answer_is_refused() -> None:
    with pytest.raises(ConfigError, match="context_window_tokens=256 leaves no room"):
        Limits(context_window_tokens=256, max_output_tokens=256)


async def test_a_failed_model_call_journals_every_try(store: Store) -> None:
    error = ModelServerError("HTTP 503 from both endpoints")
    error.attempts = (
        Attempt(model="a", outcome="server_error", http_status=503, error="HTTP 503", duration_s=0.1),
        Attempt(model="b", outcome="timeout", error="timed out", duration_s=4.0, wait_before_s=0.5),
    )
    result = await Runner(store).run(Agent("x", model=ScriptedModel([error])), "hello", run_id="f")
    assert result.status == "failed"
    (failed,) = [s.event for s in await store.load("f") if isinstance(s.event, ModelFailed)]
    assert [a.outcome for a in failed.attempts] == ["server_error", "timeout"]
    assert failed.attempts[0].http_status == 503


async def test_a_tool_that_keeps_failing_is_not_called_while_its_breaker_is_open(store: Store) -> None:
    from tether.journal import ToolFailed
    from tether.models import BreakerPolicy

    calls: list[int] = []

    @tool
    def flaky(n: int) -> str:
        """A service that is down."""
        calls.append(n)
        raise ConnectionError("service unavailable")

    asked = 0

    def script(messages: Any, tools: Any) -> Any:
        nonlocal asked
        asked += 1
        return call("flaky", n=asked) if asked <= 3 else "The service is down."

    runner = Runner(store, tool_breaker=BreakerPolicy(failure_threshold=2, window_s=60, open_s=60))
    result = await runner.run(Agent("b", tools=[flaky], model=ScriptedModel(script)), "try 1 2 3", run_id="b")
    assert result.status == "completed" and calls == [1, 2]  # the third call never reached the service
    failed = [s.event for s in await store.load("b") if isinstance(s.event, ToolFailed)]
    assert [f.kind for f in failed] == ["raised", "raised", "blocked"]
    assert failed[2].error_type == "CircuitOpen" and "circuit open" in failed[2].message


async def test_logged_prompts_and_answers_are_redacted_when_the_agent_says_so(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from tether.telemetry import configure_logging

    configure_logging("info", json=True)
    try:
        agent = Agent("l", model=ScriptedModel(["Mail jane.doe@example.com back."]), log_content="redacted")
        await Runner(store).run(agent, "My email is jane.doe@example.com", run_id="l")
    finally:  # back to the default configuration, not bound to this test's captured stderr
        import structlog

        from tether.telemetry import _logging

        structlog.reset_defaults()
        _logging._configured = False
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
    logged = [x for x in lines if x.get("event") in ("model request", "model responded")]
    assert [x["text"] for x in logged] == ["My email is [EMAIL]", "Mail [EMAIL] back."]
    assert "jane.doe" not in capsys.readouterr().err
