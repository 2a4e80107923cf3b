"""The agents the two-worker governance tests run in `tether worker` processes.

- `metered` and `paced`: two model calls a run (a tool call, then the answer), each reporting 300 prompt
  and 100 generated tokens. `metered` waits 50 ms per call so that runs of one user interleave.
- `stoppable` and `steady`: call `wait_for_gate` every 100 ms until the file named by `GOV_GATE` exists,
  then answer, so a test decides when their runs may end (and can engage a kill switch meanwhile).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tether import Agent, Limits, tool
from tether.models import Message, ToolResultMessage, Usage
from tether.testing import ScriptedModel, call

HERE = Path(__file__).resolve()
USAGE = Usage(input_tokens=300, output_tokens=100)
TOKENS_PER_CALL = USAGE.total_tokens
CALLS_PER_RUN = 2


def _results(messages: Sequence[Message]) -> list[ToolResultMessage]:
    return [m for m in messages if isinstance(m, ToolResultMessage)]


@tool(idempotent=True)
def note(n: int) -> str:
    """Note that step n happened."""
    return f"noted {n}"


def two_calls(messages: Sequence[Message], tools: Any) -> Any:
    return call("note", n=1) if not _results(messages) else "noted"


@tool(idempotent=True)
def wait_for_gate(attempt: int) -> str:
    """Whether the test has opened the gate."""
    return "open" if Path(os.environ["GOV_GATE"]).exists() else "closed"


def until_gate(messages: Sequence[Message], tools: Any) -> Any:
    results = _results(messages)
    if results and results[-1].content == "open":
        return "through the gate"
    return call("wait_for_gate", attempt=len(results) + 1)


def _agent(name: str, tools: list[Any], script: Any, delay_s: float, max_steps: int) -> Agent:
    return Agent(
        name,
        tools=tools,
        model=ScriptedModel(script, usage=USAGE, delay_s=delay_s, record=False),
        limits=Limits(max_steps=max_steps, timeout_s=120),
        grounding=False,
        ref=f"{HERE}:{name}",
    )


metered = _agent("metered", [note], two_calls, 0.05, 4)
paced = _agent("paced", [note], two_calls, 0.0, 4)
stoppable = _agent("stoppable", [wait_for_gate], until_gate, 0.1, 2000)
steady = _agent("steady", [wait_for_gate], until_gate, 0.1, 2000)
