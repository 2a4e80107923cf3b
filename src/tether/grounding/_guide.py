"""The tool guide: the rules the grounding guards enforce, told to the model before its first turn.

Every rule here is one the loop enforces anyway (an invented value is refused, a write on a record
never looked up is refused, an ungrounded answer is sent back). Told up front, a small model keeps
more of them on its first try, and a run spends fewer steps on corrections: on the agent task suite
(bench/agents) the 1.5B model's first turn is where most runs go wrong. The text holds no numbers
and no identifiers, so it adds nothing to what a call's arguments can be traced to.
"""

from __future__ import annotations

from typing import Final

__all__ = ["TOOL_GUIDE"]

TOOL_GUIDE: Final = """How to work with the tools:
- Call one tool at a time and wait for its result.
- Every id, name and number you pass to a tool must come from the user's message or an earlier tool result. Never make one up: look it up first.
- Before you change anything (a refund, a cancellation, an update, a reservation), look the record up, and change it only if the user asked for that change.
- If a lookup says a record does not exist, change nothing and tell the user it does not exist.
- For any arithmetic, call a calculator tool if there is one.
- When you have what you need, answer the user in one or two plain sentences that state the values."""
