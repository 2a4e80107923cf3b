"""What tether's model wrappers cost per call, around a model that costs nothing.

Each part is a function returning figures; `main()` concatenates them (add a part to `PARTS`).

- `resilience`: retry, circuit breaker and fallback around a zero-cost model that always answers (the
  wrappers' fast path: no failure, no wait), in µs per call, as the difference to calling the model
  bare; and the same stack with the breaker's state in Redis (one round trip per call), when a Redis
  server answers at 127.0.0.1:6379.

Run through `bench/run.py models`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio
from _common import figure, log, median, quiet_gc, skipped

from tether.models import (
    CircuitBreaker,
    FallbackModel,
    Message,
    Model,
    ModelResponse,
    ModelSettings,
    RetryModel,
    TokenCallback,
    ToolDefinition,
    Usage,
    UserMessage,
    resilient,
)

__all__ = ["main"]

ROUNDS = 15
"""Timed rounds per variant; figures are medians over rounds."""
CALLS = 2000
"""Calls per timed round (in-process variants)."""
REDIS_CALLS = 300
REDIS_URL = "redis://127.0.0.1:6379/0"

MESSAGES = [UserMessage(content="Name a colour.")]
SETTINGS = ModelSettings()


class _Free(Model):
    """Answers at once with the same response: what is left to time is the wrappers around it."""

    def __init__(self, name: str = "bench:free") -> None:
        self._name = name
        self._response = ModelResponse(text="Blue.", usage=Usage(input_tokens=5, output_tokens=2), model=name)

    @property
    def name(self) -> str:
        return self._name

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        settings: ModelSettings = SETTINGS,
        on_token: TokenCallback | None = None,
    ) -> ModelResponse:
        return self._response


async def _us_per_call(model: Model, calls: int) -> float:
    with quiet_gc():
        started = time.perf_counter()
        for _ in range(calls):
            await model.request(MESSAGES, settings=SETTINGS)
        return (time.perf_counter() - started) / calls * 1e6


async def _rounds(variants: dict[str, Model], calls: int) -> dict[str, float]:
    """Median µs per call of each variant; they take turns first in each round, so drift hits all alike."""
    for model in variants.values():
        await _us_per_call(model, min(calls, 200))  # warm up
    samples: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(ROUNDS):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            samples[name].append(await _us_per_call(variants[name], calls))
    return {name: median(values) for name, values in samples.items()}


async def _resilience() -> list[dict[str, Any]]:
    bare = _Free()
    variants: dict[str, Model] = {
        "bare": bare,
        "retry": RetryModel(bare),
        "retry_breaker": resilient(bare),
        "fallback_retry_breaker": FallbackModel([resilient(bare), _Free("bench:second")]),
    }
    checked = await variants["fallback_retry_breaker"].request(MESSAGES)
    if [a.outcome for a in checked.attempts] != ["ok"]:
        raise RuntimeError(f"the resilience workload is broken: attempts {checked.attempts}")
    log(f"   resilience: {ROUNDS} rounds of {CALLS} calls per variant")
    us = await _rounds(variants, CALLS)
    figures = [figure("resilience.bare_call_us", us["bare"], "µs/call", note="the zero-cost model alone")]
    notes = {
        "retry": "RetryModel: a per-try deadline (cancel scope) and one Attempt on the answer",
        "retry_breaker": "resilient(): RetryModel(CircuitBreakerModel(model)), in-memory breaker state",
        "fallback_retry_breaker": "FallbackModel([resilient(model), other]), the first answering",
    }
    for name, note in notes.items():
        figures.append(
            figure(
                f"resilience.overhead_us.{name}",
                us[name] - us["bare"],
                "µs/call",
                note=f"{note}, minus the bare call",
            )
        )
    return figures + await _redis_breaker(bare)


async def _redis_breaker(bare: Model) -> list[dict[str, Any]]:
    name = "resilience.overhead_us.retry_breaker_redis"
    try:
        from tether.models.breakers.redis import RedisBreakerState
    except ImportError as exc:
        return [skipped(name, f"{exc}")]
    state = RedisBreakerState(url=REDIS_URL, prefix=f"tether-bench:{time.time_ns()}:", ttl_s=60)
    try:
        permit = await CircuitBreaker("probe", state=state).acquire()
        if permit.degraded:
            return [skipped(name, f"no Redis server at {REDIS_URL} (start redis-server)")]
        model = resilient(bare, breaker=CircuitBreaker(bare.name, state=state))
        us = await _rounds({"bare": bare, "redis": model}, REDIS_CALLS)
    finally:
        await state.aclose()
    note = (
        "resilient() with the breaker's state in Redis on 127.0.0.1: one read per call, minus the bare call"
    )
    return [figure(name, us["redis"] - us["bare"], "µs/call", note=note)]


def resilience() -> list[dict[str, Any]]:
    """The resilience wrappers' overhead per call."""
    return anyio.run(_resilience)


PARTS: tuple[Callable[[], list[dict[str, Any]]], ...] = (resilience,)
"""The parts `main()` runs, in order; each returns its figures."""


def main() -> list[dict[str, Any]]:
    """Measure every part; the figures as `_common.figure` dicts."""
    figures: list[dict[str, Any]] = []
    for part in PARTS:
        figures += part()
    return figures
