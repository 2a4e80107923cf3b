"""The typed events a run's journal is made of.

A run is an append-only sequence of these. Everything else (resume, audit, the UI timeline, usage
accounting) is derived from them, so they are Pydantic models that round-trip through JSON exactly.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from ..models import ModelResponse, Usage

__all__ = [
    "TERMINAL_STATUSES",
    "AnswerRejected",
    "Event",
    "ModelFailed",
    "ModelResponded",
    "RunFinished",
    "RunResumed",
    "RunStarted",
    "RunStatus",
    "StoredEvent",
    "TerminalStatus",
    "ToolCompleted",
    "ToolFailed",
    "ToolStarted",
    "UsageCharged",
    "event_adapter",
]

TerminalStatus = Literal["completed", "failed", "cancelled", "max_steps", "timed_out", "budget_exceeded"]
RunStatus = Literal["pending", "running", "suspended", TerminalStatus]
TERMINAL_STATUSES: frozenset[str] = frozenset(
    ("completed", "failed", "cancelled", "max_steps", "timed_out", "budget_exceeded")
)


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    at: float
    """When it happened, in seconds since the epoch, from the run's clock."""


class RunStarted(_Event):
    """A run began. Holds everything needed to resume it in another process."""

    type: Literal["run_started"] = "run_started"
    agent: str
    agent_ref: str | None = None
    """`module:attr` (or `path.py:attr`) where the agent is defined, so another process can load it."""
    input: str
    model: str
    instructions: str
    tools: tuple[str, ...] = ()
    limits: dict[str, Any] = {}
    user_id: str | None = None
    metadata: dict[str, Any] = {}


class RunResumed(_Event):
    """A process picked the run up again from its journal."""

    type: Literal["run_resumed"] = "run_resumed"
    from_seq: int
    host: str
    pid: int
    in_doubt: tuple[str, ...] = ()
    """Call ids that had started but not finished when the run stopped."""


class ModelResponded(_Event):
    """The model answered; recorded verbatim so that a resumed run never asks again."""

    type: Literal["model_responded"] = "model_responded"
    step: int
    response: ModelResponse


class UsageCharged(_Event):
    """Tokens (and money) one model call cost."""

    type: Literal["usage_charged"] = "usage_charged"
    step: int
    model: str
    usage: Usage
    cost_usd: float = 0.0


class ModelFailed(_Event):
    """A model call failed."""

    type: Literal["model_failed"] = "model_failed"
    step: int
    model: str
    error_type: str
    message: str
    retryable: bool


class ToolStarted(_Event):
    """A tool call is about to run. Written (and committed) before the tool runs."""

    type: Literal["tool_started"] = "tool_started"
    step: int
    call_id: str
    tool: str
    arguments: dict[str, Any]
    idempotency_key: str


class ToolCompleted(_Event):
    """A tool call returned."""

    type: Literal["tool_completed"] = "tool_completed"
    step: int
    call_id: str
    tool: str
    output: Any
    content: str
    """What the model was shown."""
    duration_s: float


class ToolFailed(_Event):
    """A tool call did not produce a result. The message went back to the model."""

    type: Literal["tool_failed"] = "tool_failed"
    step: int
    call_id: str
    tool: str
    kind: Literal[
        "unknown_tool",
        "invalid_arguments",
        "ungrounded",
        "precondition",
        "repeated",
        "blocked",
        "raised",
        "timeout",
        "in_doubt",
    ]
    error_type: str
    message: str
    arguments: dict[str, Any] | str | None = None
    duration_s: float = 0.0
    needs: tuple[str, ...] = ()
    """For `precondition`: the tools that must succeed first (the model's next turn must call one)."""


class AnswerRejected(_Event):
    """The model's final answer was not accepted (ungrounded numbers, empty, a fake transcript); the model
    was told why and asked again."""

    type: Literal["answer_rejected"] = "answer_rejected"
    step: int
    reason: str
    values: tuple[str, ...] = ()
    message: str
    """What the model was told."""


class RunFinished(_Event):
    """The run reached a terminal status. Nothing is appended after this."""

    type: Literal["run_finished"] = "run_finished"
    status: TerminalStatus
    reason: str
    output: str | None = None
    steps: int
    usage: Usage


Event = Annotated[
    RunStarted
    | RunResumed
    | ModelResponded
    | UsageCharged
    | ModelFailed
    | ToolStarted
    | ToolCompleted
    | ToolFailed
    | AnswerRejected
    | RunFinished,
    Field(discriminator="type"),
]

event_adapter: TypeAdapter[Event] = TypeAdapter(Event)


class StoredEvent(BaseModel):
    """An event as the store holds it: its position in the run and its link in the hash chain."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    seq: int
    event: Event
    hash: str
