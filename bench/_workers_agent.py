"""The agent the worker benchmark's `tether worker` processes run (imported by path; no bench imports).

The workload of `bench/core.py`: a scripted model that costs nothing, replying by the conversation, one
trivial tool, 10 tool calls per run, then a final answer (11 model steps).
"""

from __future__ import annotations

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
