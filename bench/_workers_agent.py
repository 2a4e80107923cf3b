"""The agents the worker and journal benchmarks run (imported by path, by workers too; no bench imports).

`agent` has the workload of `bench/core.py`: a scripted model that costs nothing, replying by the
conversation, one trivial tool, 10 tool calls per run, then a final answer (11 model steps).
`approval_agent` (for the resume benchmark) adds as many times as its input says, then calls a high-risk
tool, which suspends the run until a human decides: suspended runs with journals of any length.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tether import Agent, Limits, tool
from tether.models import ModelResponse, ToolCall, ToolDefinition, Usage
from tether.testing import ScriptedModel

CALLS_PER_RUN = 10
STEPS_PER_RUN = CALLS_PER_RUN + 1
INPUT = "Numbers: 0 1 2 3 4 5 6 7 8 9"
_USAGE = Usage(input_tokens=20, output_tokens=10)


@tool(run_in_thread=False, idempotent=True)
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


RESPONSES = (
    *(
        ModelResponse(
            tool_calls=(ToolCall(call_id=f"call_{i}", name="add", arguments={"a": i, "b": 1}),),
            usage=_USAGE,
            model="test:scripted",
            finish_reason="tool_calls",
        )
        for i in range(CALLS_PER_RUN)
    ),
    ModelResponse(text="Done: 1 2 3 4 5 6 7 8 9 10", usage=_USAGE, model="test:scripted"),
)


def _reply(messages: Sequence[Any], tools: Sequence[ToolDefinition]) -> ModelResponse:
    return RESPONSES[(len(messages) - 2) // 2]  # system + user, then an assistant turn and a result per step


agent = Agent(
    "bench-worker",
    instructions="Add one to each number with the add tool, then say you are done.",
    tools=[add],
    model=ScriptedModel(_reply, record=False),
    limits=Limits(max_steps=STEPS_PER_RUN),
    ref=f"{Path(__file__).resolve()}:agent",
)


APPROVAL_MAX_STEPS = 1_000


def approval_input(steps: int) -> str:
    """The input on which `approval_agent` takes `steps` steps before the call that needs a human."""
    return f"Numbers: 0 1. Add 1 to the last result {steps} times, then refund order 1042."


@tool(risk="high", reversible=False)
def refund(order_id: str) -> str:
    """Refund an order (high risk: the default approval policy suspends the run until a human decides)."""
    return f"refunded order {order_id}"


def _approval_reply(messages: Sequence[Any], tools: Sequence[ToolDefinition]) -> ModelResponse:
    # step n adds 1 to n: the argument is the previous result (grounded), and no call repeats; the
    # refund comes once the input's count is reached
    steps = int(re.search(r"(\d+) times", messages[1].content).group(1))  # type: ignore[union-attr]
    step = (len(messages) - 2) // 2
    if step < steps:
        call = ToolCall(call_id=f"call_{step}", name="add", arguments={"a": step, "b": 1})
    elif step == steps:
        call = ToolCall(call_id=f"call_{step}", name="refund", arguments={"order_id": "1042"})
    else:
        return ModelResponse(text="Refunded order 1042.", usage=_USAGE, model="test:scripted")
    return ModelResponse(tool_calls=(call,), usage=_USAGE, model="test:scripted", finish_reason="tool_calls")


approval_agent = Agent(
    "bench-approval",
    instructions="Add 1 as many times as asked with the add tool, then refund the order.",
    tools=[add, refund],
    model=ScriptedModel(_approval_reply, record=False),
    limits=Limits(max_steps=APPROVAL_MAX_STEPS),
    ref=f"{Path(__file__).resolve()}:approval_agent",
)
