"""Retries: try a failed model call again, after an exponential backoff with full jitter.

Only errors that say so are retried (`ModelError.retryable`: timeouts, 5xx, 429, dropped connections,
answers cut off); a refusal (401, 404, a prompt over the context window, an open circuit) is raised at
once. The wait before retry `n` is drawn uniformly from `[0, min(max_delay_s, base_delay_s * 2**(n-1))]`
("full jitter": clients that failed together do not retry together), and is never shorter than the
`Retry-After` the endpoint sent (`ModelError.retry_after`). The waits of one call add up to at most
`max_wait_s`; a wait that would pass it ends the retries there, with the reason in the error.

Each try is bounded by `settings.timeout_s` (the per-call timeout the runtime passes, from
`Limits.model_timeout_s`), or by `RetryPolicy.attempt_timeout_s` when that is shorter: the model is told
the bound, and one that ignores it is stopped a second later.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

import anyio

from .._clock import Clock, SystemClock
from ..exceptions import ConfigError, ModelError
from ._attempts import answered, attempts_failed, bounded_request, waited, with_attempts
from ._base import Model, ModelSettings, TokenCallback
from ._breaker import BreakerPolicy, BreakerState, CircuitBreaker, CircuitBreakerModel
from ._messages import Attempt, Message, ModelResponse, ToolDefinition

__all__ = ["RetryModel", "RetryPolicy", "Sleep", "resilient"]

# A model (or a circuit breaker inside) that honours settings.timeout_s raises its own ModelTimeout, so
# that the breaker counts it; this wrapper stops only a model that does not, a little later.
_GUARD_GRACE_S = 1.0
_TIMEOUT_HINT = "raise settings.timeout_s or RetryPolicy.attempt_timeout_s, or use a faster model"

Sleep = Callable[[float], Awaitable[None]]
"""How a retry waits: `anyio.sleep`, or in tests a function that moves a `FakeClock` forward."""


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often and how long to retry a failed model call.

    Attributes:
        max_attempts: tries in all, the first included (1: never retry).
        base_delay_s: the backoff's cap before the first retry; it doubles with each retry.
        max_delay_s: the backoff never draws from a range wider than this (a `Retry-After` may be longer).
        max_wait_s: the most time one call may spend waiting between its tries, in all.
        attempt_timeout_s: bound each try by this when it is shorter than `settings.timeout_s` (a hung
            endpoint then costs this, not the whole call's timeout, before the retry or the fallback).
    """

    max_attempts: int = 3
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_wait_s: float = 60.0
    attempt_timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"RetryPolicy.max_attempts must be at least 1; got {self.max_attempts!r}")
        for name in ("base_delay_s", "max_delay_s", "max_wait_s"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"RetryPolicy.{name} must be 0 or more; got {getattr(self, name)!r}")
        if self.attempt_timeout_s is not None and not self.attempt_timeout_s > 0:
            raise ConfigError(
                f"RetryPolicy.attempt_timeout_s must be positive; got {self.attempt_timeout_s!r}"
            )

    def backoff_s(self, retry: int, rng: random.Random) -> float:
        """The full-jitter wait before retry number `retry` (1 for the second try)."""
        cap = min(self.max_delay_s, self.base_delay_s * 2 ** (retry - 1))
        return rng.uniform(0.0, cap)


class RetryModel(Model):
    """A model whose failed calls are tried again, with backoff and jitter, honouring `Retry-After`.

    The answer carries every try in `ModelResponse.attempts`; when the tries run out, the last error is
    raised with every try in `ModelError.attempts` and the reason the retries stopped in its message.

    Args:
        model: the model to call.
        policy: how often and how long to retry.
        clock: measures each try's duration (a `tether.testing.FakeClock` in tests).
        sleep: waits between tries (default `anyio.sleep`).
        rng: draws the jitter (seed one for repeatable waits).
    """

    def __init__(
        self,
        model: Model,
        policy: RetryPolicy | None = None,
        *,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
    ):
        self.model = model
        self.policy = policy or RetryPolicy()
        self._clock = clock or SystemClock()
        self._sleep = sleep or anyio.sleep
        self._rng = rng or random.Random()
        # a circuit breaker bounds each try itself (it must, to count timeouts): one bound is enough
        self._guarded = isinstance(model, CircuitBreakerModel)

    def __repr__(self) -> str:
        return f"RetryModel({self.model!r}, policy={self.policy!r})"

    @property
    def name(self) -> str:
        return self.model.name

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        settings: ModelSettings = ModelSettings(),  # noqa: B008 - frozen dataclass, safe as a default
        on_token: TokenCallback | None = None,
    ) -> ModelResponse:
        policy = self.policy
        if policy.attempt_timeout_s is not None and policy.attempt_timeout_s < settings.timeout_s:
            settings = replace(settings, timeout_s=policy.attempt_timeout_s)
        attempts: tuple[Attempt, ...] = ()
        wait_s = 0.0
        waited_s = 0.0
        for number in range(1, policy.max_attempts + 1):
            started = self._clock.monotonic()
            try:
                if self._guarded:
                    response = await self.model.request(
                        messages, tools=tools, settings=settings, on_token=on_token
                    )
                else:
                    response = await bounded_request(
                        self.model,
                        messages,
                        tools,
                        settings,
                        on_token,
                        grace_s=_GUARD_GRACE_S,
                        hint=_TIMEOUT_HINT,
                    )
            except ModelError as exc:
                duration = self._clock.monotonic() - started
                attempts += waited(attempts_failed(exc, model=self.name, duration_s=duration), wait_s)
                stop = self._why_stop(exc, number, waited_s)
                if stop is not None:
                    message = f"{exc.message} ({stop})" if stop else None
                    raise with_attempts(exc, attempts, message=message) from exc.__cause__
                # jitter is cut to what is left of max_wait_s; a Retry-After that does not fit stopped above
                jitter = min(policy.backoff_s(number, self._rng), policy.max_wait_s - waited_s)
                wait_s = max(jitter, exc.retry_after or 0.0)
                await self._sleep(wait_s)
                waited_s += wait_s
                continue
            duration = self._clock.monotonic() - started
            return answered(response, model=self.name, duration_s=duration, before=attempts, wait_s=wait_s)
        raise AssertionError("unreachable: the last try returns or raises")  # pragma: no cover

    def _why_stop(self, exc: ModelError, number: int, waited_s: float) -> str | None:
        """Why no further try will be made after try `number` failed with `exc` ("" when it goes without
        saying); None to retry."""
        policy = self.policy
        if not exc.retryable:
            return f"after {_tries(number)}; this error is not retried" if number > 1 else ""
        if number >= policy.max_attempts:
            return f"gave up after {_tries(number)} (RetryPolicy.max_attempts={policy.max_attempts})"
        if exc.retry_after is not None and waited_s + exc.retry_after > policy.max_wait_s:
            left = max(0.0, policy.max_wait_s - waited_s)
            return (
                f"gave up after {_tries(number)}: the endpoint asked to wait {exc.retry_after:g}s, more than "
                f"the {left:g}s left of RetryPolicy.max_wait_s={policy.max_wait_s:g}"
            )
        if waited_s >= policy.max_wait_s:
            budget = f"RetryPolicy.max_wait_s={policy.max_wait_s:g}"
            return f"gave up after {_tries(number)}: the waits used up {budget}"
        return None

    async def aclose(self) -> None:
        await self.model.aclose()


def _tries(number: int) -> str:
    return "1 try" if number == 1 else f"{number} tries"


def resilient(
    model: Model,
    *,
    retry: RetryPolicy | None = None,
    breaker: CircuitBreaker | BreakerPolicy | None = None,
    state: BreakerState | None = None,
    clock: Clock | None = None,
    sleep: Sleep | None = None,
    rng: random.Random | None = None,
) -> RetryModel:
    """`model` with retries and a circuit breaker, in the order that makes them work together.

    The breaker sits inside the retries (`RetryModel(CircuitBreakerModel(model))`): every try counts
    against the provider's health, and once the breaker opens the remaining tries fail at once (an open
    circuit is not retryable), so a `FallbackModel` around this moves on without waiting.

    Args:
        model: the model to protect.
        retry: the retry policy (default `RetryPolicy()`).
        breaker: a `CircuitBreaker` (to share one among models or workers), or the policy of a new one
            named after the model (default `BreakerPolicy()`).
        state: with a policy, where the new breaker keeps its state (default: in this process).
        clock, sleep, rng: passed to `RetryModel`.
    """
    if not isinstance(breaker, CircuitBreaker):
        breaker = CircuitBreaker(model.name, policy=breaker, state=state)
    elif state is not None:
        raise ConfigError("pass state= only with a BreakerPolicy; a CircuitBreaker already has its state")
    return RetryModel(CircuitBreakerModel(model, breaker), retry, clock=clock, sleep=sleep, rng=rng)
