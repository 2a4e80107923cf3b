"""Fallback chains, and how the resilience wrappers compose.

Each wrapper is a `Model` around a `Model`, so they nest; the usual stack, per provider, is retries around
a circuit breaker (`resilient()` builds it), and a fallback chain across providers:

```python
from tether.models import BreakerPolicy, FallbackModel, RetryPolicy, resilient
from tether.models.llamacpp import LlamaCppModel
from tether.models.openai_compat import OpenAICompatModel

model = FallbackModel([
    resilient(
        OpenAICompatModel("gpt-4o-mini", base_url="https://api.openai.com/v1"),
        retry=RetryPolicy(max_attempts=3, max_wait_s=20),
        breaker=BreakerPolicy(failure_threshold=5, window_s=60, open_s=30),
    ),
    LlamaCppModel("qwen2.5-coder-0.5b"),  # the local model: the last resort
])
agent = Agent("support", model=model, ...)
```

- `RetryModel(model, RetryPolicy(...))`: retries retryable errors with full-jitter backoff, honouring
  `Retry-After`, within `max_attempts` and `max_wait_s`; bounds each try by `settings.timeout_s`.
- `CircuitBreakerModel(model, CircuitBreaker(name, policy=..., state=...))`: fails fast with
  `ModelCircuitOpen` while the provider's breaker is open. Share a breaker among workers with
  `RedisBreakerState` or `PostgresBreakerState` (`tether.models.breakers`).
- `FallbackModel([a, b, ...])`: tries the models in order, moving on after a timeout, a 5xx, a 429, a
  dropped connection, a context-length refusal, invalid output (`ModelResponseError`) or an open
  circuit; any other error (401, 404, a malformed request) is a mistake to fix, raised at once.

Every try is recorded as an `Attempt` (model, outcome, HTTP status, error, duration, wait before it): on
the answer, `ModelResponse.attempts`, which the journal records with the response; when every try
failed, on the error raised, `ModelError.attempts`, whose message then names each model's failure.
Reflection (sending a validation error back to the model) happens in the runtime's loop, before any of
this: a fallback is for an answer that could not be had or read at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from ..exceptions import (
    ConfigError,
    ModelCircuitOpen,
    ModelError,
    ModelRateLimited,
    ModelResponseError,
    ModelServerError,
    ModelTimeout,
    ModelUnreachable,
)
from ._attempts import answered, attempts_failed, is_context_length, with_attempts
from ._base import Model, ModelSettings, TokenCallback
from ._messages import Attempt, Message, ModelResponse, ToolDefinition

__all__ = ["FallbackModel", "falls_back"]

_FALLBACK_ERRORS = (
    ModelTimeout,
    ModelServerError,
    ModelRateLimited,
    ModelUnreachable,
    ModelResponseError,
    ModelCircuitOpen,
)

# Each model's failure is quoted in the final error; bounded, so that a chain of five stays readable.
_QUOTE_CHARS = 160


def falls_back(exc: ModelError) -> bool:
    """Whether another model may succeed where this error failed: timeouts, 5xx, 429, unreachable,
    invalid output, an open circuit, or a prompt over the model's context window."""
    return isinstance(exc, _FALLBACK_ERRORS) or is_context_length(exc)


class FallbackModel(Model):
    """Tries models in order until one answers.

    The answer's `model` names the model that gave it, and its `attempts` list every try, failed ones
    first. When all fail, the last model's error is raised (its class says how the last try failed), with
    every try in `attempts` and each model's failure named in its message.

    With streaming (`on_token`), text a model sent before failing has reached the callback already; the
    next model's text follows it.

    Args:
        models: the chain, first choice first (at least one).
        falls_back: which errors move on to the next model (default `falls_back`); others are raised.
    """

    def __init__(self, models: Sequence[Model], *, falls_back: Callable[[ModelError], bool] = falls_back):
        if not models:
            raise ConfigError("FallbackModel needs at least one model; pass the chain, first choice first")
        for model in models:
            if not isinstance(model, Model):
                raise ConfigError(f"FallbackModel: {model!r} is not a Model")
        self.models = tuple(models)
        self._falls_back = falls_back
        self._name = "fallback(" + ", ".join(m.name for m in self.models) + ")"

    def __repr__(self) -> str:
        return f"FallbackModel({list(self.models)!r})"

    @property
    def name(self) -> str:
        """`fallback(<first>, <second>, ...)`; each answer names the model that gave it."""
        return self._name

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        settings: ModelSettings = ModelSettings(),  # noqa: B008 - frozen dataclass, safe as a default
        on_token: TokenCallback | None = None,
    ) -> ModelResponse:
        attempts: tuple[Attempt, ...] = ()
        failures: list[tuple[Model, ModelError]] = []
        for position, model in enumerate(self.models):
            started = time.perf_counter()
            try:
                response = await model.request(messages, tools=tools, settings=settings, on_token=on_token)
            except ModelError as exc:
                attempts += attempts_failed(exc, model=model.name, duration_s=time.perf_counter() - started)
                failures.append((model, exc))
                if not self._falls_back(exc):
                    left = len(self.models) - position - 1
                    note = (
                        f" (not a failure another model can fix; {left} fallback model(s) not tried)"
                        if left
                        else None
                    )
                    message = exc.message + note if note else None
                    raise with_attempts(exc, attempts, message=message) from exc.__cause__
                if position == len(self.models) - 1:
                    raise with_attempts(
                        exc, attempts, message=_all_failed(failures, attempts)
                    ) from exc.__cause__
                continue
            return answered(
                response, model=model.name, duration_s=time.perf_counter() - started, before=attempts
            )
        raise AssertionError("unreachable: the last model returns or raises")  # pragma: no cover

    async def aclose(self) -> None:
        for model in self.models:
            await model.aclose()


def _all_failed(failures: Sequence[tuple[Model, ModelError]], attempts: Sequence[Attempt]) -> str:
    parts = []
    for model, exc in failures:
        quoted = " ".join(exc.message.split())
        if len(quoted) > _QUOTE_CHARS:
            quoted = quoted[: _QUOTE_CHARS - 1] + "…"
        parts.append(f"{model.name}: {type(exc).__name__}: {quoted}")
    return (
        f"every model of the fallback chain failed ({len(attempts)} tries): "
        + "; ".join(parts)
        + ". Check the providers' health, or add a model to the chain"
    )
