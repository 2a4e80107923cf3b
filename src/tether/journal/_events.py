"""The typed events a run's journal is made of.

A run is an append-only sequence of these. Everything else (resume, audit, the UI timeline, usage
accounting) is derived from them, so they are Pydantic models that round-trip through JSON exactly.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from ..models import Attempt, ModelResponse, Usage

__all__ = [
    "TERMINAL_STATUSES",
    "AnswerRejected",
    "ApprovalDecided",
    "ApprovalRequested",
    "ContextTrimmed",
    "Event",
    "GuardChecked",
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
    "call_hash",
    "event_adapter",
]

TerminalStatus = Literal[
    "completed", "failed", "cancelled", "max_steps", "timed_out", "budget_exceeded", "blocked"
]
RunStatus = Literal["pending", "running", "suspended", TerminalStatus]
TERMINAL_STATUSES: frozenset[str] = frozenset(
    ("completed", "failed", "cancelled", "max_steps", "timed_out", "budget_exceeded", "blocked")
)


def call_hash(tool: str, arguments: dict[str, Any] | str) -> str:
    """What an approval binds to: a tool's name and its arguments, canonically serialised and hashed."""
    canonical = (
        arguments
        if isinstance(arguments, str)
        else json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)
    )
    return hashlib.sha256(f"{tool}\0{canonical}".encode()).hexdigest()[:32]


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
    attempts: tuple[Attempt, ...] = ()
    """Every try (retries, fallbacks, open circuits) when the model is wrapped for resilience."""


class ToolStarted(_Event):
    """A tool call is about to run. Written (and committed) before the tool runs."""

    type: Literal["tool_started"] = "tool_started"
    step: int
    call_id: str
    tool: str
    arguments: dict[str, Any]
    idempotency_key: str
    policy: str | None = None
    """What the approval policy decided: `run`, `flag` (run, marked for the audit log), `approved` or
    `edited` (a human decided); None in journals written before approvals existed."""
    policy_reason: str = ""
    original_arguments: dict[str, Any] | None = None
    """For an edited call: the arguments the model proposed (`arguments` are what a human approved)."""
    tainted: str = ""
    """Only a tool's result asked for this call (an excerpt of it); the user's request did not. Set on
    low-risk calls, which run; riskier ones are refused (`tool_failed` of kind `injected`) or asked for."""


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
        "injected",
        "repeated",
        "blocked",
        "raised",
        "timeout",
        "in_doubt",
        "denied",
        "rejected",
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
    then: Literal["tool", "answer", "either", ""] = ""
    """What the next turn had to be: a call (`tool`), text (`answer`), or either; "" in journals written
    before this field (a call after invented values, a recipe or a cut-off answer)."""
    needs: tuple[str, ...] = ()
    """With `then="tool"`: the tools the next call was limited to (empty: any)."""
    soft: bool = False
    """Sent back for its quality, not its truth (a "how much" answer without a number, an id a tool
    looks up): each such rule sends an answer back once per run, and these do not use up
    `Limits.max_answer_retries`."""


class ContextTrimmed(_Event):
    """The conversation did not fit the model's window (`Limits.context_window_tokens`): the oldest turns
    were left out of this step's model call and a note took their place. The journal keeps every turn;
    the trim is a pure function of the conversation, so a resumed run computes the same one."""

    type: Literal["context_trimmed"] = "context_trimmed"
    step: int
    """The model call the trim applied to."""
    dropped_messages: int
    dropped_turns: int
    dropped_call_ids: tuple[str, ...] = ()
    summarized_values: int = 0
    """Values of the dropped tool results carried into the note."""
    tokens_before: int
    tokens_after: int
    budget_tokens: int
    """What the conversation had to fit in: the window less the answer's tokens and the tool definitions."""
    fits: bool = True
    """False: even without every turn it may drop, the conversation is over budget (the call was made)."""
    note: str = ""
    """What the model read in place of the dropped turns."""


class GuardChecked(_Event):
    """The guardrails found something in a text or a tool call: a redaction, a flag, a block or an escalation.

    A check that allowed everything writes nothing (a run with guardrails on and no such event passed
    every check), so a clean step costs no journal space. What the model was shown afterwards is in the
    journal too: the redacted input here (`text`), a tool's result in its `tool_completed.content`, a
    blocked call as a `tool_failed`, the answer in `run_finished.output`. A resumed run takes all of
    these from the journal; it never recomputes them.
    """

    type: Literal["guard_checked"] = "guard_checked"
    stage: Literal["input", "output", "tool_call"]
    """`input`: the user's input or a tool's result; `output`: the answer; `tool_call`: a proposed call."""
    source: Literal["user", "tool_result", "document", "model"] = "user"
    step: int = 0
    call_id: str | None = None
    """The tool call whose arguments or result were checked."""
    action: Literal["allow", "flag", "redact", "escalate", "block"]
    categories: tuple[str, ...] = ()
    verdicts: list[dict[str, Any]] = []
    """Each finding (guard, category, action, score, spans with masked excerpts, message); allows left out."""
    text: str | None = None
    """For the user's input: the text the model was given instead (redacted); None when unchanged."""
    sensitive: bool = False
    """This finding (personal data in the user's input) marked the run sensitive: from here on every model
    call of the run goes to private models only and is never cached."""
    elapsed_ms: float = 0.0


class ApprovalRequested(_Event):
    """A tool call waits for a human. Async requests suspend the run (no process waits); sync ones keep
    the caller waiting. The deadline is this row: whoever resumes the run after `deadline_at` applies
    `on_expiry`, so it survives restarts."""

    type: Literal["approval_requested"] = "approval_requested"
    request_id: str
    """`<run id>.<seq>`: the run and the position of this event in its journal."""
    step: int
    call_id: str
    tool: str
    arguments: dict[str, Any]
    args_hash: str
    """What a decision binds to: the tool's name and a hash of these arguments."""
    kind: Literal["policy", "in_doubt"] = "policy"
    """`policy`: the approval policy asks. `in_doubt`: the run stopped while this non-idempotent call ran;
    approve = it did not happen, run it; reject = do not run it again."""
    mode: Literal["async", "sync"] = "async"
    risk: str = "low"
    reversible: bool = True
    confidence: float | None = None
    reason: str
    approvers: str = "approvers"
    deadline_at: float
    on_expiry: Literal["reject", "escalate", "fail"] = "reject"
    escalate_to: str | None = None
    escalated_from: str | None = None


class ApprovalDecided(_Event):
    """A human (or the deadline) decided an approval request."""

    type: Literal["approval_decided"] = "approval_decided"
    request_id: str
    call_id: str
    tool: str
    decision: Literal["approved", "rejected", "edited", "expired"]
    by: str
    """Who decided; `tether` for an expired deadline."""
    reason: str = ""
    args_hash: str
    """The request's `args_hash`: the decision holds only for that tool and those arguments."""
    arguments: dict[str, Any] | None = None
    """For `edited`: the arguments that run instead of the proposed ones."""
    on_expiry: Literal["reject", "escalate", "fail"] | None = None
    """For `expired`: the action taken."""


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
    | ApprovalRequested
    | ApprovalDecided
    | GuardChecked
    | ContextTrimmed
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
