"""Agents for the in-process worker tests. Inputs read `job J: record 1 2 3`; each run records 1, 2 and
3 with the `record` tool, then answers. Everything the model and the tool do is counted here."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio

from tether import Agent, Limits, ToolContext, tool
from tether.models import ToolResultMessage, UserMessage
from tether.testing import ScriptedModel, call

ENTRIES = 3

model_calls: Counter[tuple[str, int]] = Counter()
"""(job, tool results seen) -> requests: the same key twice is a model call paid for twice."""
effects: list[tuple[str, int]] = []
"""(idempotency key, n) of every time the tool ran."""
tool_delay_s = 0.0
on_tool: Callable[[ToolContext, int], Awaitable[None]] | None = None
"""Called inside the tool before it records (tests use it to act at that moment)."""


def reset() -> None:
    global tool_delay_s, on_tool
    model_calls.clear()
    effects.clear()
    tool_delay_s = 0.0
    on_tool = None


def job(messages: Sequence[Any]) -> str:
    first = next(m for m in messages if isinstance(m, UserMessage))
    match = re.match(r"job (\w+):", first.content)
    assert match, first.content
    return match.group(1)


def script(messages: Sequence[Any], tools: Any) -> Any:
    done = sum(isinstance(m, ToolResultMessage) for m in messages)
    model_calls[job(messages), done] += 1
    return call("record", n=done + 1) if done < ENTRIES else f"recorded {ENTRIES} entries"


@tool(idempotent=True)
async def record(n: int, ctx: ToolContext) -> str:
    """Record entry n."""
    if on_tool is not None:
        await on_tool(ctx, n)
    if tool_delay_s:
        await anyio.sleep(tool_delay_s)
    effects.append((ctx.idempotency_key, n))
    return f"entry {n} recorded"


agent = Agent(
    "recorder",
    instructions="Record each entry with the record tool.",
    tools=[record],
    model=ScriptedModel(script, record=False),
    limits=Limits(max_steps=10, timeout_s=60),
)

unimportable = Agent("ghost", model=ScriptedModel(["hi"]), ref="no_such_module_here:agent")
