"""The conversation a model sees, and what it answers.

These are Pydantic models because they cross the journal: a `ModelResponse` is recorded verbatim and
replayed on resume, so it must round-trip through JSON exactly.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AssistantMessage",
    "Attempt",
    "AttemptOutcome",
    "Message",
    "ModelResponse",
    "Route",
    "SystemMessage",
    "ToolCall",
    "ToolDefinition",
    "ToolResultMessage",
    "Usage",
    "UserMessage",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ToolCall(_Frozen):
    """One call the model asked for.

    Attributes:
        call_id: the id the model (or tether, when the model gave none) assigned to the call.
        name: the tool's name.
        arguments: the arguments as parsed JSON; a string when the model's text was not valid JSON,
            so that the error can be shown back to the model instead of being lost.
        confidence: how sure the model was of this call, in [0, 1], where the backend can tell; None
            when unknown. The embedded model gives the probability it assigned to this tool with these
            argument values: the product of the probabilities of the tokens that wrote the tool's name
            and the argument values, the JSON around them left out (`tether.models.llamacpp.call_confidence`).
            Values copied from the conversation score near 1, values the model made up far lower.
            Approval policies send low-confidence irreversible calls to a human.
    """

    call_id: str
    name: str
    arguments: dict[str, Any] | str
    confidence: float | None = None


class Usage(_Frozen):
    """Tokens used by one model call (or summed over many).

    Attributes:
        input_tokens: prompt tokens the model was sent.
        output_tokens: tokens it generated.
        cached_tokens: prompt tokens served from a cache (KV cache reuse, provider prompt cache)
            and therefore not evaluated again.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
        )


AttemptOutcome = Literal[
    "ok",
    "timeout",
    "rate_limited",
    "server_error",
    "unreachable",
    "invalid_output",
    "context_length",
    "circuit_open",
    "error",
]
"""How one try at a model call ended (`error`: any other refusal, such as 401, 404 or a bad request)."""


class Attempt(_Frozen):
    """One try at a model call, as the resilience wrappers (retry, circuit breaker, fallback) saw it.

    Attributes:
        model: the name of the model tried.
        outcome: how the try ended.
        http_status: the HTTP status the endpoint failed with, when it sent one.
        error: the error's message ("" for `ok`).
        duration_s: how long the try took.
        wait_before_s: how long tether waited before making it (backoff with jitter, `Retry-After`).
    """

    model: str
    outcome: AttemptOutcome
    http_status: int | None = None
    error: str = ""
    duration_s: float = 0.0
    wait_before_s: float = 0.0


class Route(_Frozen):
    """Why a request went to the model it went to: one routing decision, journaled with the response.

    Attributes:
        tier: the tier chosen (`fast`, `standard`, `reasoning`).
        model: the name of the model the tier sent the request to.
        reason: the rules that decided, in words (complexity signals, hints, budget, sensitivity, split,
            escalations after a failed quality check).
        complexity: the request's estimated complexity in [0, 1].
        estimated_cost_usd: the call's estimated worst-case cost (prompt + `max_tokens` of output) on
            `model`; None when the model has no price.
        variant: the A/B split arm the request fell in (`split:arm`), "" when no split applied.
        sensitive: the request was sensitive (marked so, or personal data was found in it).
        private: `model` is configured as private (it runs on this host).
        escalations: tiers tried before this one, each `tier model: why it was not good enough`.
    """

    tier: str
    model: str
    reason: str
    complexity: float = 0.0
    estimated_cost_usd: float | None = None
    variant: str = ""
    sensitive: bool = False
    private: bool = False
    escalations: tuple[str, ...] = ()


class ModelResponse(_Frozen):
    """What a model answered: text, tool calls, or both.

    Attributes:
        text: the text of the answer ("" when the model only called tools).
        tool_calls: the calls the model asked for, in order.
        usage: tokens used by this call.
        model: the name of the model that answered (after routing or fallback).
        finish_reason: `stop`, `tool_calls`, `length` or what the provider said.
        duration_s: wall time of the call.
        repairs: what tether had to fix to understand the answer (a call written as text, a fence...).
        attempts: every try the resilience wrappers made for this answer, oldest first, the last one `ok`
            (empty when the model was called without them).
        route: the router's decision, when a `tether.models.Router` chose the model.
        cache: `exact` or `semantic` when a `tether.models.CachedModel` served the answer from its cache
            (`usage` is then zero: nothing was spent), None when a model answered.
        cache_similarity: for a semantic hit, the cosine similarity of the request to the cached one.
    """

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = Usage()
    model: str = ""
    finish_reason: str = "stop"
    duration_s: float = 0.0
    repairs: tuple[str, ...] = ()
    attempts: tuple[Attempt, ...] = ()
    route: Route | None = None
    cache: Literal["exact", "semantic"] | None = None
    cache_similarity: float | None = None


class SystemMessage(_Frozen):
    role: Literal["system"] = "system"
    content: str


class UserMessage(_Frozen):
    role: Literal["user"] = "user"
    content: str


class AssistantMessage(_Frozen):
    role: Literal["assistant"] = "assistant"
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()


class ToolResultMessage(_Frozen):
    """The result (or error) of one tool call, as the model will read it."""

    role: Literal["tool"] = "tool"
    call_id: str
    name: str
    content: str
    is_error: bool = False


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolResultMessage, Field(discriminator="role")
]


class ToolDefinition(_Frozen):
    """What a model is told about a tool: its name, description and JSON schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any]
