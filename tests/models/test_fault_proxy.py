"""The fault test: a proxy that breaks 30 % of requests to a real llama.cpp server, and 50 runs through it.

The fast tests check that each fault `FaultProxy` injects reaches `OpenAICompatModel` as the error a real
network would cause, against a canned server. The provider test is issue 6's: 50 runs of an agent whose
model is a fallback chain (the proxied server with retries and a circuit breaker, then the same server
direct) all end, with an answer or a journaled reason; every fault the proxy injected is in the journal
as a failed attempt; the breaker opens, half-opens and closes; the counts are printed.
"""

from __future__ import annotations

import collections
import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tether import Agent, Limits, Runner
from tether.exceptions import ModelRateLimited, ModelResponseError, ModelServerError, ModelTimeout
from tether.journal import MemoryStore, ModelFailed, ModelResponded, RunFinished
from tether.models import (
    Attempt,
    BreakerPolicy,
    CircuitBreaker,
    FallbackModel,
    ModelSettings,
    RetryPolicy,
    UserMessage,
    resilient,
)
from tether.models.openai_compat import OpenAICompatModel
from tether.testing import FaultProxy

pytestmark = pytest.mark.anyio

HELLO = [UserMessage(content="hello")]


def completion(text: str) -> dict[str, Any]:
    return {
        "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1},
    }


@pytest.fixture
def upstream(openai_server: Any) -> Iterator[Any]:
    for _ in range(200):
        openai_server.reply_json(completion("pong"))
    yield openai_server


# -- the proxy's faults, one by one --------------------------------------------------------------------


async def _through(proxy: FaultProxy, settings: ModelSettings | None = None) -> Any:
    model = OpenAICompatModel("m", base_url=proxy.base_url)
    try:
        return await model.request(HELLO, settings=settings or ModelSettings())
    finally:
        await model.aclose()


async def test_a_forwarded_request_reaches_the_server_and_its_answer_comes_back(upstream: Any) -> None:
    async with FaultProxy(upstream.base_url, script=[None]) as proxy:
        response = await _through(proxy)

    assert response.text == "pong"
    [request] = upstream.requests
    assert request.path == "/v1/chat/completions"
    assert request.json()["messages"] == [{"role": "user", "content": "hello"}]
    assert proxy.log == ["forwarded"]


async def test_rate_limited_is_a_429_with_retry_after(upstream: Any) -> None:
    async with FaultProxy(upstream.base_url, script=["rate_limited"], retry_after_s=2.5) as proxy:
        with pytest.raises(ModelRateLimited, match="HTTP 429") as caught:
            await _through(proxy)

    assert caught.value.retry_after == 2.5
    assert upstream.requests == []


@pytest.mark.parametrize(("fault", "status"), [("server_error", 500), ("unavailable", 503)])
async def test_server_errors_are_5xx(upstream: Any, fault: Any, status: int) -> None:
    async with FaultProxy(upstream.base_url, script=[fault]) as proxy:
        with pytest.raises(ModelServerError, match=f"HTTP {status}") as caught:
            await _through(proxy)

    assert caught.value.retryable


async def test_a_truncated_body_is_the_real_answer_cut_off(upstream: Any) -> None:
    async with FaultProxy(upstream.base_url, script=["truncated"]) as proxy:
        with pytest.raises(
            ModelResponseError, match="closed the connection before the answer was complete"
        ) as caught:
            await _through(proxy)

    assert caught.value.retryable
    assert len(upstream.requests) == 1  # the server did answer; the client got half of it


async def test_a_hung_request_times_out_and_is_let_go_when_the_client_gives_up(upstream: Any) -> None:
    async with FaultProxy(upstream.base_url, script=["hang", None]) as proxy:
        with pytest.raises(ModelTimeout):
            await _through(proxy, ModelSettings(timeout_s=0.3))
        response = await _through(proxy)  # the proxy still serves

    assert response.text == "pong"
    assert proxy.log == ["hang", "forwarded"]


async def test_the_same_seed_breaks_the_same_requests(upstream: Any) -> None:
    logs = []
    for _ in range(2):
        async with FaultProxy(upstream.base_url, fault_rate=0.3, faults=["server_error"], seed=11) as proxy:
            model = OpenAICompatModel("m", base_url=proxy.base_url)
            for _ in range(40):
                with contextlib.suppress(ModelServerError):
                    await model.request(HELLO)
            await model.aclose()
        logs.append(proxy.log)

    assert logs[0] == logs[1]
    assert 4 <= logs[0].count("server_error") <= 20


# -- the fault test ----------------------------------------------------------------------------------------

RUNS = 50
SEED = 6
"""Of the first 40 draws with this seed, 12 are faults, covering all five kinds."""
ATTEMPT_TIMEOUT_S = 4.0
"""A hang costs this; long enough that the 0.5B model's short answers on two busy cores do not hit it."""
QUESTIONS = [
    "Name a colour of the rainbow.",
    "Name a fruit that is yellow.",
    "Name an animal that can fly.",
    "Name a planet of the solar system.",
    "Name a season of the year.",
]
FAULT_KINDS = ("rate_limited", "server_error", "unavailable", "truncated", "hang")
OPENING: tuple[str | None, ...] = tuple(f for kind in FAULT_KINDS for f in (None, kind))
"""The first ten requests: each fault kind once, each after a forwarded request (so the retry of one
succeeds and the breaker is not tripped by the script alone). How many requests reach the proxy after
that depends on the machine's load (29 in one loaded CI run, where the seeded draws alone had not yet
drawn `unavailable`); the script makes every kind certain to be met."""
IMMEDIATE_FAULTS = {
    "rate_limited": ("rate_limited", 429),
    "server_error": ("server_error", 500),
    "unavailable": ("server_error", 503),
}
"""Faults the proxy answers without the server, and the attempt each must be journaled as."""


@pytest.mark.provider
async def test_fifty_runs_through_a_faulty_proxy_end_with_an_answer_or_a_journaled_reason(
    llama_cpp_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import LLAMA_CPP_MODEL_ALIAS

    store = MemoryStore()
    started = time.perf_counter()
    async with FaultProxy(
        llama_cpp_server, fault_rate=0.3, seed=SEED, retry_after_s=0.5, script=OPENING
    ) as proxy:
        proxied = OpenAICompatModel(LLAMA_CPP_MODEL_ALIAS, base_url=proxy.base_url)
        direct = OpenAICompatModel(LLAMA_CPP_MODEL_ALIAS, base_url=llama_cpp_server)
        breaker = CircuitBreaker(
            proxied.name, policy=BreakerPolicy(failure_threshold=3, window_s=30, open_s=2, half_open_probes=1)
        )
        chain = FallbackModel(
            [
                resilient(
                    proxied,
                    retry=RetryPolicy(
                        max_attempts=2, base_delay_s=0.2, max_wait_s=2, attempt_timeout_s=ATTEMPT_TIMEOUT_S
                    ),
                    breaker=breaker,
                ),
                direct,
            ]
        )
        agent = Agent(
            "one-word",
            instructions="Answer with one word.",
            model=chain,
            limits=Limits(max_steps=3, max_output_tokens=10, model_timeout_s=60),
            grounding=False,
        )
        runner = Runner(store)
        try:
            results = [await runner.run(agent, QUESTIONS[i % len(QUESTIONS)]) for i in range(RUNS)]
        finally:
            await chain.aclose()
    elapsed = time.perf_counter() - started

    # what the journal holds: every run's end, every attempt of every model call
    statuses = collections.Counter(r.status for r in results)
    attempts: list[Attempt] = []
    ends: list[tuple[str, RunFinished | None]] = []
    model_failures_without_reason = 0
    for result in results:
        events = [s.event for s in await store.load(result.run_id)]
        ends.append((result.run_id, events[-1] if isinstance(events[-1], RunFinished) else None))
        for event in events:
            if isinstance(event, ModelResponded):
                attempts += event.response.attempts
            elif isinstance(event, ModelFailed):
                model_failures_without_reason += not event.message
                attempts += getattr(event, "attempts", ())
    via_proxy = [a for a in attempts if a.model == proxied.name and a.outcome != "circuit_open"]
    outcomes = collections.Counter((a.outcome, a.http_status) for a in via_proxy)
    requests = sum(proxy.counts.values())
    faults = requests - proxy.counts["forwarded"]
    moves = [(t.from_state, t.to_state) for t in breaker.transitions]
    failed_fast = sum(a.outcome == "circuit_open" for a in attempts)

    answered = collections.Counter(a.model for a in attempts if a.outcome == "ok")
    by_outcome = dict(sorted(collections.Counter(a.outcome for a in attempts).items()))
    opened = moves.count(("closed", "open")) + moves.count(("half_open", "open"))
    with capsys.disabled():
        print(
            f"\n[fault test] {RUNS} runs in {elapsed:.1f}s; statuses {dict(statuses)}\n"
            f"[fault test] proxy: {requests} requests, {faults} faults ({faults / max(requests, 1):.0%}): "
            f"{json.dumps(dict(sorted(proxy.counts.items())))}\n"
            f"[fault test] attempts by outcome: {json.dumps(by_outcome)}; answers from the proxied model "
            f"{answered[proxied.name]}, from the direct fallback {answered[direct.name]}\n"
            f"[fault test] breaker: opened {opened} times, closed {moves.count(('half_open', 'closed'))} "
            f"times, {failed_fast} calls failed fast; transitions {' '.join(f'{a}->{b}' for a, b in moves)}"
        )

    # every run ended, with an answer or a journaled reason
    assert [run_id for run_id, end in ends if end is None] == [], "runs without a RunFinished"
    assert [run_id for run_id, end in ends if end is not None and not end.reason] == []
    assert all(r.output for r in results if r.status == "completed")
    assert model_failures_without_reason == 0

    # no silent failure: every request the proxy saw is a journaled attempt, every fault a failed one
    assert len(via_proxy) == requests
    for fault, outcome in IMMEDIATE_FAULTS.items():
        assert outcomes[outcome] == proxy.counts[fault], (fault, outcomes, proxy.counts)
    # a truncated answer needs the server's answer first: under load the try may time out before it
    # comes, and so may a slow unharmed request; hangs always time out
    timeouts, cut_off = outcomes[("timeout", None)], outcomes[("invalid_output", None)]
    assert cut_off <= proxy.counts["truncated"] and timeouts >= proxy.counts["hang"]
    assert cut_off + timeouts >= proxy.counts["truncated"] + proxy.counts["hang"]
    # how many requests reach the proxy depends on how long the breaker stays open against how fast runs
    # go (the machine's load): 30 in a loaded run, 46 in a quiet one. What matters is every fault kind hit.
    assert requests >= 20 and all(proxy.counts[kind] > 0 for kind in FAULT_KINDS)
    assert 0.15 <= faults / requests <= 0.45

    # the breaker opened, failed calls fast, let a probe through when half-open, and closed again
    cycle = iter(moves)
    assert all(
        step in cycle for step in [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    ), moves
    assert failed_fast > 0
