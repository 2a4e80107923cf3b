"""An agent for the kill -9 test. Every model request and every tool effect is appended to files in
CRASH_DIR so that the test can count them across processes."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from tether import Agent, Limits, tool
from tether.models import ToolResultMessage
from tether.testing import ScriptedModel, call

DIR = Path(os.environ.get("CRASH_DIR", "."))
HANG_ON = int(os.environ.get("CRASH_HANG_ON", "0"))
CALLS = 5


def _append(name: str, line: str) -> None:
    with open(DIR / name, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def script(messages: Any, tools: Any) -> Any:
    done = sum(isinstance(m, ToolResultMessage) for m in messages)
    _append("model_calls.log", str(done + 1))
    return call("record", n=done + 1) if done < CALLS else f"recorded {CALLS}"


@tool(idempotent=os.environ.get("CRASH_IDEMPOTENT", "1") == "1")
def record(n: int) -> str:
    """Write entry n to the ledger."""
    _append("ledger.log", str(n))
    if n == HANG_ON:
        (DIR / "hanging").touch()
        time.sleep(120)
    return f"entry {n} written"


agent = Agent(
    "crashy",
    tools=[record],
    model=ScriptedModel(script),
    limits=Limits(max_steps=20),
    on_in_doubt=os.environ.get("CRASH_ON_IN_DOUBT", "report"),  # type: ignore[arg-type]
)
