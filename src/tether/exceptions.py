"""Every error tether raises, in one tree.

```
TetherError
├── ConfigError                 a developer's mistake: fix the code or the configuration
│   ├── AgentNotFound           `module:attr` does not name an Agent
│   └── ModelFileError          the embedded model's file is missing, corrupt or unreadable
├── StoreError                  the journal could not be read or written
│   ├── StoreUnavailable        read-only file, locked database, server gone (retryable)
│   ├── JournalConflict         someone else appended to the run first (fencing, retryable)
│   ├── LeaseLost               another worker took the run over; this one must stop writing to it
│   └── RunNotFound             no run with that id in the store
├── ModelError                  a model call failed (see `retryable`, `retry_after`)
│   ├── ModelUnreachable        could not connect, or the connection dropped
│   ├── ModelTimeout            no answer within the model-call timeout
│   ├── ModelAuthError          401/403: the key is missing or wrong
│   ├── ModelNotFoundError      404: no such model or endpoint path
│   ├── ModelRateLimited        429: slow down (honour `retry_after`)
│   ├── ModelServerError        5xx from the endpoint
│   ├── ModelResponseError      the answer could not be understood
│   └── ModelCircuitOpen        the model's circuit breaker is open: the call was not sent
├── ToolError                   a tool call failed; its message goes back to the model
│   ├── ToolArgumentsError      the arguments do not match the tool's schema
│   ├── ToolNotFound            the model called a tool this agent does not have
│   └── ToolTimeout             the tool ran past its `timeout_s`
└── RunError                    a run ended without a result (`status`, `reason` say why)
```

Exceptions carry retry intent as data (`retryable`, `retry_after`) rather than in class names, pickle
cleanly (they cross journals and queues), and do nothing in `__init__` but store their fields.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AgentNotFound",
    "ConfigError",
    "JournalConflict",
    "LeaseLost",
    "ModelAuthError",
    "ModelCircuitOpen",
    "ModelError",
    "ModelFileError",
    "ModelNotFoundError",
    "ModelRateLimited",
    "ModelResponseError",
    "ModelServerError",
    "ModelTimeout",
    "ModelUnreachable",
    "RunError",
    "RunNotFound",
    "StoreError",
    "StoreUnavailable",
    "TetherError",
    "ToolArgumentsError",
    "ToolError",
    "ToolNotFound",
    "ToolTimeout",
]


class TetherError(Exception):
    """The root of every error tether raises.

    Args:
        message: what went wrong and what to do about it, in one line.
        retryable: whether the same operation may succeed if tried again.
        retry_after: seconds to wait before retrying, when the source said so.
    """

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        # keyword-only fields must survive pickling across processes and queues
        return (_rebuild, (type(self), self.message, self.__dict__))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[TetherError], message: str, state: dict[str, Any]) -> TetherError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class ConfigError(TetherError):
    """A developer's mistake in code or configuration; retrying will not help."""


class AgentNotFound(ConfigError):
    """`module:attr` does not name an importable Agent."""


class ModelFileError(ConfigError):
    """The embedded model's weights are missing, corrupt or unreadable."""


class StoreError(TetherError):
    """The journal store could not be read or written."""


class StoreUnavailable(StoreError):
    """The store cannot be written now (read-only, locked, server gone)."""

    retryable = True


class JournalConflict(StoreError):
    """Another writer appended to this run first; the caller's view of the journal is stale."""

    retryable = True


class LeaseLost(StoreError):
    """The lease a worker wrote under is no longer the run's: another worker took the run over.

    The store refused the write, so the journal holds only the new holder's events. The worker that gets
    this must stop working on the run (it is not failed: the new holder carries it on). Retrying the
    same write can never succeed, hence `retryable` is False.
    """

    retryable = False


class RunNotFound(StoreError):
    """No run with that id exists in the store."""


class ModelError(TetherError):
    """A model call failed.

    Attributes:
        attempts: every try the resilience wrappers (`tether.models.RetryModel`, `FallbackModel`,
            `CircuitBreakerModel`) made before giving up, oldest first, as `tether.models.Attempt`s;
            empty when the call went through none of them.
    """

    attempts: tuple[Any, ...] = ()


class ModelUnreachable(ModelError):
    """The model endpoint could not be reached."""

    retryable = True


class ModelTimeout(ModelError):
    """The model did not answer within the model-call timeout."""

    retryable = True


class ModelAuthError(ModelError):
    """The endpoint rejected the credentials (401/403)."""


class ModelNotFoundError(ModelError):
    """The endpoint has no such model or path (404)."""


class ModelRateLimited(ModelError):
    """The endpoint asked us to slow down (429)."""

    retryable = True


class ModelServerError(ModelError):
    """The endpoint failed (5xx)."""

    retryable = True


class ModelResponseError(ModelError):
    """The endpoint answered, but the answer could not be understood."""


class ModelCircuitOpen(ModelError):
    """The model's circuit breaker is open: its recent calls failed, so this one was not sent.

    Not retryable (trying again before `open_until` fails the same way); a fallback model can answer.

    Attributes:
        breaker: the breaker's name (usually the provider's model name).
        open_until: wall time (seconds since the epoch) when the breaker lets a probe call through.
    """

    def __init__(self, message: str, *, breaker: str, open_until: float, retry_after: float | None = None):
        super().__init__(message, retryable=False, retry_after=retry_after)
        self.breaker = breaker
        self.open_until = open_until


class ToolError(TetherError):
    """A tool call failed. Its message is shown to the model so that it can correct the call."""


class ToolArgumentsError(ToolError):
    """The arguments the model gave do not match the tool's schema."""


class ToolNotFound(ToolError):
    """The model called a tool that this agent does not have."""


class ToolTimeout(ToolError):
    """The tool ran longer than its `timeout_s`."""


class RunError(TetherError):
    """A run ended without a result.

    Attributes:
        run_id: the run that ended.
        status: its terminal status (`failed`, `cancelled`, `max_steps`, `timed_out`, `budget_exceeded`,
            `blocked`).
        reason: why, in one line.
    """

    def __init__(self, message: str, *, run_id: str, status: str, reason: str):
        super().__init__(message)
        self.run_id = run_id
        self.status = status
        self.reason = reason
