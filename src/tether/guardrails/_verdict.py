"""What a guard says: verdicts, the thing checked, and the context it is checked in."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "ACTIONS",
    "Action",
    "Guard",
    "GuardContext",
    "Source",
    "Span",
    "Stage",
    "ToolCallCheck",
    "Verdict",
    "strongest",
]

Stage = Literal["input", "output", "tool_call"]
"""Where in a step the check runs: text entering the model, the model's answer, or a proposed tool call."""

Source = Literal["user", "tool_result", "document", "model"]
"""Who wrote the text. Tool results and documents carry indirect injections; the user writes direct ones."""

Action = Literal["allow", "redact", "flag", "block", "escalate"]
"""What the runtime does: pass, pass rewritten, pass and record, stop, or ask a human."""

# weakest to strongest: the stack's decision is the strongest action any guard asked for. `escalate` sits
# below `block`: a human may still let the step through, a block never does.
ACTIONS: tuple[Action, ...] = ("allow", "redact", "flag", "escalate", "block")
_RANK = {a: i for i, a in enumerate(ACTIONS)}


def strongest(actions: list[Action] | tuple[Action, ...]) -> Action:
    """The strongest of `actions` (`allow` for none).

    Args:
        actions: actions asked for by guards.

    Returns:
        The action ranked highest in `ACTIONS`.
    """
    return max(actions, key=_RANK.__getitem__, default="allow")


@dataclass(frozen=True, kw_only=True, slots=True)
class Span:
    """Where a guard found something, in the text it was given.

    Attributes:
        start: offset of the first character.
        end: offset one past the last character.
        excerpt: the matched text, cut to 80 characters (secrets and PII are masked by their guards).
        label: what was found there (`email`, `aws_access_key`, `instruction_override`, ...).
    """

    start: int
    end: int
    excerpt: str
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form for journal events and span attributes."""
        return {"start": self.start, "end": self.end, "excerpt": self.excerpt, "label": self.label}


@dataclass(frozen=True, kw_only=True, slots=True)
class Verdict:
    """One guard's finding about one text or tool call.

    Attributes:
        guard: the guard's name (`injection_rules`, `pii`, ...).
        category: what kind of problem (`injection`, `pii`, `secret`, `abuse`, `out_of_scope`, `exfiltration`,
            `sensitive_term`, `prompt_leak`, `schema`, `tool_scope`, `tool_args`, `oversize`, `guard_error`).
        action: what the guard asks the runtime to do.
        score: confidence in 0..1 that the finding is real.
        spans: where in the text, when the finding has a place.
        message: one line a person can read.
        redacted_text: the text with the findings replaced, when `action` is `redact`.
    """

    guard: str
    category: str
    action: Action
    score: float
    spans: tuple[Span, ...] = ()
    message: str = ""
    redacted_text: str | None = None

    def __post_init__(self) -> None:
        if self.action not in _RANK:
            raise ValueError(f"unknown action {self.action!r}; expected one of {ACTIONS}")
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score must be in 0..1, got {self.score}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form for journal events and span attributes (the redacted text is left out)."""
        return {
            "guard": self.guard,
            "category": self.category,
            "action": self.action,
            "score": round(self.score, 4),
            "spans": [s.to_dict() for s in self.spans],
            "message": self.message,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolCallCheck:
    """A tool call the model proposed, as tool-call guards see it.

    Attributes:
        tool_name: the tool the model wants to call.
        arguments: the decoded JSON arguments.
        tool_call_id: the model's id for the call, for the journal.
    """

    tool_name: str
    arguments: Mapping[str, Any]
    tool_call_id: str | None = None

    def as_text(self, limit: int = 200_000) -> str:
        """The call as one string, for text guards (secrets, PII, exfiltration) that also watch tool calls.

        Args:
            limit: stop after this many characters.

        Returns:
            The tool name and the JSON arguments.
        """
        try:
            body = json.dumps(self.arguments, ensure_ascii=False, default=str)
        except (ValueError, RecursionError):
            # a circular or absurdly deep structure: its repr still shows the strings a text guard looks for
            body = repr(self.arguments)[:limit]
        return f"{self.tool_name} {body}"[:limit]


@dataclass(frozen=True, kw_only=True, slots=True)
class GuardContext:
    """What a guard knows about the text besides the text.

    Attributes:
        stage: where in the step the check runs.
        source: who wrote the text.
        agent: the agent's name, for messages and per-agent rules.
        run_id: the run, for logs.
        metadata: anything else a custom guard needs.
    """

    stage: Stage
    source: Source = "user"
    agent: str | None = None
    run_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Guard(Protocol):
    """One check. LLM-free guards are synchronous and take microseconds.

    A guard returns no verdict when it finds nothing; it may return `allow` verdicts to record a score.
    A guard never raises on bad input (huge, binary, deeply nested): the stack turns an exception into a
    `guard_error` verdict all the same, so a bug cannot open a hole silently.

    Attributes:
        name: unique within a stack; it names the guard in verdicts and configuration.
        stages: the stages the guard runs at.
    """

    @property
    def name(self) -> str: ...

    @property
    def stages(self) -> frozenset[Stage]: ...

    def check(self, subject: str | ToolCallCheck, context: GuardContext) -> list[Verdict]:
        """Check a text (input and output stages) or a tool call (tool_call stage).

        Args:
            subject: the text, or the proposed tool call.
            context: where and from whom.

        Returns:
            The findings, empty when there are none.
        """
        ...
