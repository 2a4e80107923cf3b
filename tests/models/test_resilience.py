"""Retries, circuit breakers and fallback chains, on scripted models and a fake clock (no sleeping)."""

from __future__ import annotations

import pickle
import random
from collections.abc import Sequence

import anyio
import pytest

from tether import Agent, Limits, Runner
from tether.exceptions import (
    ConfigError,
    ModelAuthError,
    ModelCircuitOpen,
    ModelError,
    ModelRateLimited,
    ModelResponseError,
    ModelServerError,
    ModelTimeout,
    ModelUnreachable,
)
from tether.journal import ModelFailed, ModelResponded, RunFinished, Store
from tether.models import (
    Attempt,
    BreakerPolicy,
    CircuitBreaker,
    CircuitBreakerModel,
    FallbackModel,
    InMemoryBreakerState,
    Message,
    Model,
    ModelResponse,
    ModelSettings,
    RetryModel,
    RetryPolicy,
    TokenCallback,
    ToolDefinition,
    UserMessage,
    resilient,
)
from tether.testing import FakeClock, ScriptedModel

pytestmark = pytest.mark.anyio

HELLO = [UserMessage(content="hello")]


class Sleeps:
    """A `sleep` for RetryModel that moves a FakeClock instead of waiting, and remembers each wait."""

    def __init__(self, clock: FakeClock):
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)


def server_error(status: int = 503) -> ModelServerError:
    return ModelServerError(
        f"http://provider/v1/chat/completions failed (HTTP {status}: overloaded); retry later"
    )


def rate_limited(after: float | None) -> ModelRateLimited:
    return ModelRateLimited("http://provider/v1 is rate limiting (HTTP 429)", retry_after=after)


def retrying(model: Model, clock: FakeClock, policy: RetryPolicy, seed: int = 1) -> tuple[RetryModel, Sleeps]:
    sleeps = Sleeps(clock)
    return RetryModel(model, policy, clock=clock, sleep=sleeps, rng=random.Random(seed)), sleeps


# -- retry -------------------------------------------------------------------------------------------


async def test_retry_answers_after_transient_failures_and_journals_each_try() -> None:
    clock = FakeClock()
    inner = ScriptedModel([server_error(500), server_error(503), "hi"], name="openai:m@http://provider/v1")
    model, sleeps = retrying(inner, clock, RetryPolicy(max_attempts=3, base_delay_s=1.0))

    response = await model.request(HELLO)

    assert response.text == "hi"
    assert [a.outcome for a in response.attempts] == ["server_error", "server_error", "ok"]
    assert [a.http_status for a in response.attempts] == [500, 503, None]
    assert [a.wait_before_s for a in response.attempts] == [0.0, *sleeps.waits]
    assert all(a.model == "openai:m@http://provider/v1" for a in response.attempts)
    assert "HTTP 500" in response.attempts[0].error


async def test_backoff_is_full_jitter_within_the_doubling_cap() -> None:
    # retry n waits uniformly in [0, min(max_delay, base * 2**(n-1))]: over many calls the waits of each
    # retry fill that whole range (full jitter), and never leave it
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=5, base_delay_s=0.5, max_delay_s=3.0, max_wait_s=1000)
    waits_by_retry: dict[int, list[float]] = {1: [], 2: [], 3: [], 4: []}
    for seed in range(200):
        inner = ScriptedModel([server_error()] * 4 + ["ok"])
        model, sleeps = retrying(inner, clock, policy, seed=seed)
        await model.request(HELLO)
        for retry, wait in enumerate(sleeps.waits, start=1):
            waits_by_retry[retry].append(wait)

    for retry, waits in waits_by_retry.items():
        cap = min(3.0, 0.5 * 2 ** (retry - 1))
        assert len(waits) == 200
        assert all(0.0 <= w <= cap for w in waits), (retry, max(waits))
        assert min(waits) < 0.05 * cap and max(waits) > 0.95 * cap, (retry, min(waits), max(waits))


async def test_retry_after_is_honoured_even_beyond_the_backoff_cap() -> None:
    clock = FakeClock()
    inner = ScriptedModel([rate_limited(after=7.0), "hi"])
    model, sleeps = retrying(inner, clock, RetryPolicy(base_delay_s=0.1, max_delay_s=1.0, max_wait_s=30))

    response = await model.request(HELLO)

    assert sleeps.waits == [7.0]
    assert [(a.outcome, a.wait_before_s) for a in response.attempts] == [("rate_limited", 0.0), ("ok", 7.0)]


async def test_a_retry_after_longer_than_the_wait_budget_ends_the_retries_at_once() -> None:
    clock = FakeClock()
    inner = ScriptedModel([rate_limited(after=120.0), "never reached"])
    model, sleeps = retrying(inner, clock, RetryPolicy(max_attempts=5, max_wait_s=30))

    with pytest.raises(ModelRateLimited, match=r"asked to wait 120s, more than the 30s left") as caught:
        await model.request(HELLO)

    assert sleeps.waits == [] and inner.request_count == 1
    assert [a.outcome for a in caught.value.attempts] == ["rate_limited"]


async def test_waits_add_up_to_at_most_max_wait() -> None:
    clock = FakeClock()
    inner = ScriptedModel([rate_limited(after=4.0)] * 10)
    model, sleeps = retrying(inner, clock, RetryPolicy(max_attempts=10, base_delay_s=0.1, max_wait_s=10))

    with pytest.raises(ModelRateLimited, match=r"gave up after 3 tries") as caught:
        await model.request(HELLO)

    assert sleeps.waits == [4.0, 4.0] and sum(sleeps.waits) <= 10
    assert len(caught.value.attempts) == 3


async def test_jittered_waits_are_cut_to_the_wait_budget() -> None:
    clock = FakeClock()
    inner = ScriptedModel([server_error()] * 20)
    model, sleeps = retrying(
        inner, clock, RetryPolicy(max_attempts=20, base_delay_s=10, max_delay_s=10, max_wait_s=12)
    )

    with pytest.raises(ModelServerError, match=r"the waits used up RetryPolicy.max_wait_s=12"):
        await model.request(HELLO)

    assert sum(sleeps.waits) == pytest.approx(12)


async def test_gives_up_after_max_attempts_with_every_try_on_the_error() -> None:
    clock = FakeClock()
    inner = ScriptedModel([server_error()] * 3)
    model, _ = retrying(inner, clock, RetryPolicy(max_attempts=3, base_delay_s=0.01))

    with pytest.raises(
        ModelServerError, match=r"gave up after 3 tries \(RetryPolicy.max_attempts=3\)"
    ) as caught:
        await model.request(HELLO)

    assert inner.request_count == 3
    assert [a.outcome for a in caught.value.attempts] == ["server_error"] * 3


@pytest.mark.parametrize(
    "error",
    [
        ModelAuthError("HTTP 401: bad key"),
        ModelError("refused (HTTP 400: this model's maximum context length is 4096 tokens)"),
        ModelResponseError("not JSON"),
    ],
)
async def test_errors_that_are_not_retryable_are_raised_at_once(error: ModelError) -> None:
    inner = ScriptedModel([error, "never reached"])
    model, sleeps = retrying(inner, FakeClock(), RetryPolicy(max_attempts=5))

    with pytest.raises(type(error)) as caught:
        await model.request(HELLO)

    assert inner.request_count == 1 and sleeps.waits == []
    assert str(caught.value) == str(error)  # nothing added: there was no retry to explain
    assert len(caught.value.attempts) == 1


class _Hangs(Model):
    """Ignores settings.timeout_s: hangs on its first `hangs` calls, answers after."""

    def __init__(self, hangs: int = 1) -> None:
        self.hangs = hangs
        self.calls = 0
        self.seen_timeouts: list[float] = []

    @property
    def name(self) -> str:
        return "test:hangs"

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        settings: ModelSettings = ModelSettings(),  # noqa: B008 - frozen dataclass, safe as a default
        on_token: TokenCallback | None = None,
    ) -> ModelResponse:
        self.calls += 1
        self.seen_timeouts.append(settings.timeout_s)
        if self.calls <= self.hangs:
            await anyio.sleep_forever()
        return ModelResponse(text="answered", model=self.name)


async def test_a_try_is_bounded_by_the_attempt_timeout_even_for_a_model_that_ignores_it() -> None:
    inner = _Hangs()
    model = RetryModel(inner, RetryPolicy(attempt_timeout_s=0.05, base_delay_s=0.0), rng=random.Random(0))

    response = await model.request(HELLO, settings=ModelSettings(timeout_s=60))

    assert response.text == "answered"
    assert inner.seen_timeouts == [0.05, 0.05]  # the model is told the shorter bound
    first = response.attempts[0]
    assert first.outcome == "timeout" and "test:hangs did not answer within 0.05s" in first.error


async def test_the_settings_timeout_bounds_each_try_when_no_attempt_timeout_is_set() -> None:
    inner = _Hangs()
    model = RetryModel(inner, RetryPolicy(base_delay_s=0.0))

    response = await model.request(HELLO, settings=ModelSettings(timeout_s=0.05))

    assert response.text == "answered"
    assert [a.outcome for a in response.attempts] == ["timeout", "ok"]


async def test_the_breaker_counts_timeouts_inside_retries() -> None:
    # the retry's own bound is later than the breaker's, so the breaker sees every timeout
    inner = _Hangs(hangs=10)
    model = resilient(
        inner, retry=RetryPolicy(max_attempts=3, base_delay_s=0.0), breaker=BreakerPolicy(failure_threshold=2)
    )

    with pytest.raises(ModelCircuitOpen) as caught:
        await model.request(HELLO, settings=ModelSettings(timeout_s=0.05))

    assert [a.outcome for a in caught.value.attempts] == ["timeout", "timeout", "circuit_open"]
    assert inner.calls == 2


def test_policies_refuse_nonsense() -> None:
    with pytest.raises(ConfigError, match="max_attempts must be at least 1"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigError, match="failure_threshold must be at least 1"):
        BreakerPolicy(failure_threshold=0)
    with pytest.raises(ConfigError, match="open_s must be positive"):
        BreakerPolicy(open_s=0)
    with pytest.raises(ConfigError, match="at least one model"):
        FallbackModel([])


# -- circuit breaker -----------------------------------------------------------------------------------


def breaker_model(
    script: list[object], clock: FakeClock, policy: BreakerPolicy, name: str = "openai:m@http://provider/v1"
) -> tuple[CircuitBreakerModel, ScriptedModel]:
    inner = ScriptedModel(script, name=name)  # type: ignore[arg-type]
    breaker = CircuitBreaker(inner.name, policy=policy, state=InMemoryBreakerState(clock=clock))
    return CircuitBreakerModel(inner, breaker), inner


async def call_outcome(model: Model) -> str:
    try:
        response = await model.request(HELLO)
    except ModelError as exc:
        return exc.attempts[-1].outcome if exc.attempts else type(exc).__name__
    return response.attempts[-1].outcome


async def test_breaker_opens_after_threshold_failures_and_fails_fast_naming_until_when() -> None:
    clock = FakeClock()
    policy = BreakerPolicy(failure_threshold=3, window_s=60, open_s=30)
    model, inner = breaker_model([server_error()] * 3 + ["never reached"], clock, policy)

    for _ in range(3):
        with pytest.raises(ModelServerError):
            await model.request(HELLO)
    with pytest.raises(ModelCircuitOpen) as caught:
        await model.request(HELLO)

    error = caught.value
    assert inner.request_count == 3  # the fourth call never reached the provider
    assert error.open_until == clock.now() + 30 and error.retry_after == 30
    assert not error.retryable
    assert "circuit open for openai:m@http://provider/v1 until 2026-01-01T00:00:30.000Z" in str(error)
    assert "3 failures within 60s" in str(error) and "HTTP 503" in str(error)
    assert [a.outcome for a in error.attempts] == ["circuit_open"]
    assert [(t.from_state, t.to_state) for t in model.breaker.transitions] == [("closed", "open")]


async def test_failures_spread_wider_than_the_window_do_not_open_it() -> None:
    clock = FakeClock()
    model, _ = breaker_model(
        [server_error()] * 6 + ["fine"], clock, BreakerPolicy(failure_threshold=3, window_s=10)
    )

    for _ in range(6):
        with pytest.raises(ModelServerError):
            await model.request(HELLO)
        clock.advance(6)  # at most two failures within any 10 s

    assert (await model.request(HELLO)).text == "fine"
    assert model.breaker.transitions == type(model.breaker.transitions)()


async def test_refusals_do_not_count_against_the_provider() -> None:
    clock = FakeClock()
    refusals: list[object] = [ModelAuthError("HTTP 401")] * 5
    model, _ = breaker_model([*refusals, "fine"], clock, BreakerPolicy(failure_threshold=2))

    for _ in range(5):
        with pytest.raises(ModelAuthError):
            await model.request(HELLO)

    assert (await model.request(HELLO)).text == "fine"


async def test_half_open_lets_one_probe_through_and_its_success_closes_the_breaker() -> None:
    clock = FakeClock()
    policy = BreakerPolicy(failure_threshold=1, open_s=30, half_open_probes=1)

    def script(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> object:
        return server_error() if inner.request_count == 0 else "probe answered"

    inner = ScriptedModel(script, name="p")  # type: ignore[arg-type]
    breaker = CircuitBreaker("p", policy=policy, state=InMemoryBreakerState(clock=clock))
    model = CircuitBreakerModel(inner, breaker)

    with pytest.raises(ModelServerError):
        await model.request(HELLO)
    clock.advance(29.9)
    assert await call_outcome(model) == "circuit_open"
    clock.advance(0.1)

    # the probe is in flight: a second caller is refused until it reports
    permit = await breaker.acquire()
    assert permit.allowed and permit.probe and permit.state == "half_open"
    with pytest.raises(ModelCircuitOpen, match="half-open for p: 1 probe call"):
        await model.request(HELLO)
    await breaker.record_success(permit)

    assert (await breaker.status()).state == "closed"
    assert (await model.request(HELLO)).text == "probe answered"
    assert [(t.from_state, t.to_state) for t in breaker.transitions] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


async def test_a_failed_probe_opens_the_breaker_again_for_open_s() -> None:
    clock = FakeClock()
    model, inner = breaker_model(
        [server_error(500), server_error(502), "fine"], clock, BreakerPolicy(failure_threshold=1, open_s=10)
    )

    await call_outcome(model)
    clock.advance(10)
    assert await call_outcome(model) == "server_error"  # the probe, failing
    assert await call_outcome(model) == "circuit_open"
    clock.advance(10)
    assert await call_outcome(model) == "ok"

    assert [(t.from_state, t.to_state) for t in model.breaker.transitions] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    assert "a probe call failed" in model.breaker.transitions[2].reason
    assert inner.request_count == 3


async def test_several_probes_must_all_succeed_to_close() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        "p",
        policy=BreakerPolicy(failure_threshold=1, open_s=1, half_open_probes=2),
        state=InMemoryBreakerState(clock=clock),
    )
    await breaker.record_failure("boom")
    clock.advance(1)

    first, second, third = await breaker.acquire(), await breaker.acquire(), await breaker.acquire()
    assert (first.allowed, second.allowed, third.allowed) == (True, True, False)
    await breaker.record_success(first)
    assert (await breaker.status()).state == "half_open"
    await breaker.record_success(second)
    assert (await breaker.status()).state == "closed"


async def test_a_probe_that_never_reports_is_presumed_lost_after_the_probe_timeout() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        "p",
        policy=BreakerPolicy(failure_threshold=1, open_s=5, probe_timeout_s=20),
        state=InMemoryBreakerState(clock=clock),
    )
    await breaker.record_failure("boom")
    clock.advance(5)
    assert (await breaker.acquire()).probe  # its worker dies: nothing is ever reported

    clock.advance(19)
    assert not (await breaker.acquire()).allowed
    clock.advance(1)
    assert (await breaker.acquire()).probe


async def test_successes_of_calls_let_through_while_closed_cost_no_state_access() -> None:
    class CountingState(InMemoryBreakerState):
        reads = 0

        async def read(self, key: str):  # type: ignore[no-untyped-def]
            CountingState.reads += 1
            return await super().read(key)

    breaker = CircuitBreaker("p", state=CountingState())
    permit = await breaker.acquire()
    await breaker.record_success(permit)

    assert CountingState.reads == 1


# -- fallback --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (ModelTimeout("no answer within 30s"), "timeout"),
        (server_error(500), "server_error"),
        (rate_limited(after=None), "rate_limited"),
        (ModelUnreachable("cannot connect"), "unreachable"),
        (ModelResponseError("a body that is not valid JSON"), "invalid_output"),
        (ModelError("refused (HTTP 400: maximum context length is 4096 tokens)"), "context_length"),
        (ModelCircuitOpen("circuit open", breaker="a", open_until=0.0), "circuit_open"),
    ],
)
async def test_fallback_moves_on_after_each_kind_of_provider_failure(error: ModelError, outcome: str) -> None:
    first = ScriptedModel([error], name="remote")
    second = ScriptedModel(["from the second"], name="local")

    response = await FallbackModel([first, second]).request(HELLO)

    assert response.text == "from the second" and response.model == "local"
    assert [(a.model, a.outcome) for a in response.attempts] == [("remote", outcome), ("local", "ok")]


async def test_fallback_tries_models_in_order_and_stops_at_the_first_answer() -> None:
    models = [
        ScriptedModel([server_error()], name="a"),
        ScriptedModel(["b"], name="b"),
        ScriptedModel(["c"], name="c"),
    ]

    response = await FallbackModel(models).request(HELLO)

    assert response.text == "b"
    assert [m.request_count for m in models] == [1, 1, 0]


async def test_a_mistake_to_fix_is_raised_at_once_not_hidden_by_a_fallback() -> None:
    second = ScriptedModel(["never"], name="b")

    with pytest.raises(
        ModelAuthError, match=r"not a failure another model can fix; 1 fallback model\(s\) not tried"
    ):
        await FallbackModel([ScriptedModel([ModelAuthError("HTTP 401: bad key")], name="a"), second]).request(
            HELLO
        )

    assert second.request_count == 0


async def test_when_every_model_fails_the_last_error_names_each_failure_and_carries_every_try() -> None:
    chain = FallbackModel(
        [
            ScriptedModel([server_error(503)], name="remote"),
            ScriptedModel([ModelTimeout("no answer within 30s")], name="local"),
        ]
    )

    with pytest.raises(ModelTimeout) as caught:
        await chain.request(HELLO)

    message = str(caught.value)
    assert message.startswith("every model of the fallback chain failed (2 tries): ")
    assert "remote: ModelServerError: " in message and "HTTP 503" in message
    assert "local: ModelTimeout: no answer within 30s" in message
    assert [(a.model, a.outcome) for a in caught.value.attempts] == [
        ("remote", "server_error"),
        ("local", "timeout"),
    ]
    assert chain.name == "fallback(remote, local)"


async def test_the_composed_stack_retries_then_trips_the_breaker_then_falls_back() -> None:
    clock = FakeClock()
    sleeps = Sleeps(clock)
    remote = ScriptedModel([server_error()] * 10, name="remote")
    local = ScriptedModel(lambda m, t: "local answer", name="local")
    chain = FallbackModel(
        [
            resilient(
                remote,
                retry=RetryPolicy(max_attempts=3, base_delay_s=0.1),
                breaker=BreakerPolicy(failure_threshold=4, open_s=60),
                state=InMemoryBreakerState(clock=clock),
                clock=clock,
                sleep=sleeps,
                rng=random.Random(3),
            ),
            local,
        ]
    )

    first = await chain.request(HELLO)
    second = await chain.request(HELLO)
    third = await chain.request(HELLO)

    assert [a.outcome for a in first.attempts] == ["server_error"] * 3 + ["ok"]
    # the 4th failure opens the breaker: the next try fails fast, and the chain moves on at once
    assert [a.outcome for a in second.attempts] == ["server_error", "circuit_open", "ok"]
    assert [a.outcome for a in third.attempts] == ["circuit_open", "ok"]
    assert remote.request_count == 4
    assert all(a.wait_before_s > 0 for a in first.attempts[1:3])
    assert second.attempts[1].wait_before_s > 0 and third.attempts[1].wait_before_s == 0


async def test_attempts_survive_pickling_with_the_error() -> None:
    chain = FallbackModel(
        [ScriptedModel([server_error()], name="a"), ScriptedModel([server_error(500)], name="b")]
    )
    with pytest.raises(ModelServerError) as caught:
        await chain.request(HELLO)

    copy = pickle.loads(pickle.dumps(caught.value))

    assert type(copy) is ModelServerError and str(copy) == str(caught.value)
    assert copy.attempts == caught.value.attempts and copy.retryable
    assert all(isinstance(a, Attempt) for a in copy.attempts)
    opened = pickle.loads(
        pickle.dumps(ModelCircuitOpen("open", breaker="b", open_until=5.0, retry_after=2.0))
    )
    assert (opened.breaker, opened.open_until, opened.retry_after, opened.retryable) == ("b", 5.0, 2.0, False)


# -- in the loop: the journal ---------------------------------------------------------------------------


async def test_the_journal_records_every_attempt_with_the_response(store: Store) -> None:
    chain = FallbackModel(
        [ScriptedModel([rate_limited(after=None)], name="remote"), ScriptedModel(["Blue."], name="local")]
    )
    agent = Agent("colours", instructions="Answer in one word.", model=chain, grounding=False)

    result = await Runner(store).run(agent, "Name a colour.")

    assert result.ok and result.output == "Blue."
    [responded] = [s.event for s in await store.load(result.run_id) if isinstance(s.event, ModelResponded)]
    assert [(a.model, a.outcome, a.http_status) for a in responded.response.attempts] == [
        ("remote", "rate_limited", 429),
        ("local", "ok", None),
    ]
    assert responded.response.model == "local"


async def test_a_run_whose_every_model_failed_ends_with_each_failure_journaled(store: Store) -> None:
    chain = FallbackModel(
        [
            ScriptedModel([server_error(502)], name="remote"),
            ScriptedModel([ModelUnreachable("cannot connect to x")], name="local"),
        ]
    )
    agent = Agent("colours", model=chain, limits=Limits(max_steps=2))

    result = await Runner(store).run(agent, "Name a colour.")

    assert result.status == "failed"
    events = [s.event for s in await store.load(result.run_id)]
    [failed] = [e for e in events if isinstance(e, ModelFailed)]
    assert failed.error_type == "ModelUnreachable" and failed.model == "fallback(remote, local)"
    assert "remote: ModelServerError" in failed.message and "local: ModelUnreachable" in failed.message
    [finished] = [e for e in events if isinstance(e, RunFinished)]
    assert "every model of the fallback chain failed" in finished.reason
