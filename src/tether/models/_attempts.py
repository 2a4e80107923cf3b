"""What the resilience wrappers record about each try: one `Attempt` per call of the model they wrap.

The wrapper closest to the model writes the attempt; wrappers further out pass the attempts of the
wrappers inside on, adding the time they waited before the try. So `RetryModel(CircuitBreakerModel(m))`
journals each of `m`'s calls once, and a `FallbackModel` around several of them journals them all, in
order, on the answer (`ModelResponse.attempts`) or on the error raised when every try failed
(`ModelError.attempts`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence

import anyio

from ..exceptions import (
    ModelCircuitOpen,
    ModelError,
    ModelRateLimited,
    ModelResponseError,
    ModelServerError,
    ModelTimeout,
    ModelUnreachable,
)
from ._base import Model, ModelSettings, TokenCallback
from ._messages import Attempt, AttemptOutcome, Message, ModelResponse, ToolDefinition

__all__ = [
    "answered",
    "attempts_failed",
    "bounded_request",
    "classify_error",
    "is_context_length",
    "waited",
    "with_attempts",
]

# Errors quote what the server said; the journal keeps enough of it to see why, not whole HTML pages.
_ERROR_CHARS = 500

# What OpenAI, vLLM, llama.cpp, Ollama, Anthropic and LiteLLM say when a prompt does not fit the window.
_CONTEXT_LENGTH = re.compile(
    r"context[ _-]?(length|window)|maximum context|context_length_exceeded|prompt is too long"
    r"|too many tokens|exceeds? the (model'?s? )?(maximum|max|context)|input is too long",
    re.IGNORECASE,
)

# OpenAICompatModel writes the status into its messages as `HTTP 503`; a backend may instead set
# `http_status` on the error.
_HTTP_STATUS = re.compile(r"\bHTTP (\d{3})\b")


def is_context_length(exc: ModelError) -> bool:
    """Whether the endpoint refused the request because it does not fit the model's context window."""
    return not exc.retryable and _CONTEXT_LENGTH.search(exc.message) is not None


def classify_error(exc: ModelError) -> tuple[AttemptOutcome, int | None]:
    """The attempt outcome of an error, and the HTTP status behind it when there was one."""
    status = getattr(exc, "http_status", None)
    if not isinstance(status, int):
        found = _HTTP_STATUS.search(exc.message)
        status = int(found.group(1)) if found else None
    outcome: AttemptOutcome
    if isinstance(exc, ModelCircuitOpen):
        outcome = "circuit_open"
    elif isinstance(exc, ModelTimeout):
        outcome = "timeout"
    elif isinstance(exc, ModelRateLimited):
        outcome = "rate_limited"
    elif isinstance(exc, ModelServerError):
        outcome = "server_error"
    elif isinstance(exc, ModelUnreachable):
        outcome = "unreachable"
    elif isinstance(exc, ModelResponseError):
        outcome = "invalid_output"
    elif is_context_length(exc):
        outcome = "context_length"
    else:
        outcome = "error"
    return outcome, status


def answered(
    response: ModelResponse,
    *,
    model: str,
    duration_s: float,
    before: tuple[Attempt, ...] = (),
    wait_s: float = 0.0,
) -> ModelResponse:
    """The answer carrying every attempt: those made before it, then its own.

    Its own are those a wrapper inside recorded, else one `ok` for this call. The response is copied
    only when that changes something (the fast path of a stack of wrappers is one copy, not one each).
    """
    if response.attempts and not before and not wait_s:
        return response
    own = response.attempts or (
        # built without validation: every value is ours, and this is on every call's path
        Attempt.model_construct(model=response.model or model, outcome="ok", duration_s=duration_s),
    )
    return response.model_copy(update={"attempts": before + waited(own, wait_s)})


def attempts_failed(exc: ModelError, *, model: str, duration_s: float) -> tuple[Attempt, ...]:
    """The attempts behind an error: those a wrapper inside recorded, else this one call."""
    if exc.attempts:
        return tuple(exc.attempts)
    outcome, status = classify_error(exc)
    return (
        Attempt(
            model=model,
            outcome=outcome,
            http_status=status,
            error=exc.message[:_ERROR_CHARS],
            duration_s=duration_s,
        ),
    )


def waited(attempts: tuple[Attempt, ...], wait_s: float) -> tuple[Attempt, ...]:
    """The attempts with `wait_s` more waited before the first of them."""
    if not wait_s or not attempts:
        return attempts
    first = attempts[0]
    return (first.model_copy(update={"wait_before_s": first.wait_before_s + wait_s}), *attempts[1:])


def with_attempts(
    exc: ModelError, attempts: tuple[Attempt, ...], *, message: str | None = None
) -> ModelError:
    """A copy of `exc` carrying `attempts` (and a new message when given), to raise in its place.

    The copy keeps the class, retry intent, cause and traceback, so the caller still sees why the last
    try failed (a `ModelTimeout` still ends a run `timed_out`); the attempts say what happened before it.
    A copy, because the error a model raised may be raised again (a script, a cached failure) and must
    not collect the attempts of another call.
    """
    new = copy.copy(exc)
    new.attempts = attempts
    if message is not None:
        new.message = message
        new.args = (message,)
    new.__cause__ = exc.__cause__
    new.__suppress_context__ = exc.__suppress_context__
    return new.with_traceback(exc.__traceback__)


async def bounded_request(
    model: Model,
    messages: Sequence[Message],
    tools: Sequence[ToolDefinition],
    settings: ModelSettings,
    on_token: TokenCallback | None,
    *,
    grace_s: float,
    hint: str,
) -> ModelResponse:
    """`model.request(...)`, stopped with `ModelTimeout` `grace_s` after `settings.timeout_s`.

    Models enforce `settings.timeout_s` themselves (the contract), with the more precise message; this
    bounds one that does not. The grace lets the innermost layer see the timeout first: a circuit
    breaker must count it, which it cannot do if a wrapper around it cancels the call at the same moment.
    """
    with anyio.move_on_after(settings.timeout_s + grace_s):
        return await model.request(messages, tools=tools, settings=settings, on_token=on_token)
    raise ModelTimeout(f"{model.name} did not answer within {settings.timeout_s:g}s; {hint}")
