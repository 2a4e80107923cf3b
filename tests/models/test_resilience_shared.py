"""Circuit-breaker state backends: one contract on memory, Redis and PostgreSQL, and one breaker shared by
several processes (the scale-out case: every worker sees the same open circuit, and a half-open breaker
lets exactly its probes through, however many workers race for them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from tether.exceptions import ModelCircuitOpen, ModelServerError
from tether.models import (
    BreakerPolicy,
    BreakerRecord,
    BreakerState,
    CircuitBreaker,
    CircuitBreakerModel,
    InMemoryBreakerState,
    UserMessage,
)
from tether.testing import FakeClock, ScriptedModel

pytestmark = pytest.mark.anyio

StateFactory = Callable[..., BreakerState]

# the server tests/conftest.py's PostgreSQL fixtures use (that conftest is not importable from here)
POSTGRES_DSN = os.environ.get("TETHER_TEST_POSTGRES", "host=127.0.0.1 port=5432 dbname=test user=root")


@pytest.fixture(params=["memory", "redis", "postgres"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Which backend, and what a process needs to reach the same store (a fresh key prefix or schema)."""
    config: dict[str, Any] = {"backend": request.param}
    if request.param == "redis":
        config["prefix"] = request.getfixturevalue("redis_prefix")
    elif request.param == "postgres":
        config["schema"] = request.getfixturevalue("pg_schema")
        config["dsn"] = POSTGRES_DSN
    return config


@pytest.fixture
async def new_state(backend: dict[str, Any]) -> AsyncIterator[StateFactory]:
    """Makes states on the backend; those of Redis and PostgreSQL share one store, in-memory ones do not."""
    made: list[BreakerState] = []

    def factory(clock: FakeClock | None = None) -> BreakerState:
        state: BreakerState
        if backend["backend"] == "redis":
            from tether.models.breakers.redis import RedisBreakerState

            state = RedisBreakerState(prefix=backend["prefix"], clock=clock)
        elif backend["backend"] == "postgres":
            from tether.models.breakers.postgres import PostgresBreakerState

            state = PostgresBreakerState(POSTGRES_DSN, schema=backend["schema"], clock=clock)
        else:
            state = InMemoryBreakerState(clock=clock)
        made.append(state)
        return state

    try:
        yield factory
    finally:
        for state in made:
            await state.aclose()


# -- the contract ----------------------------------------------------------------------------------------


async def test_a_record_is_replaced_only_at_the_version_read(new_state: StateFactory) -> None:
    state = new_state(FakeClock(start=1000.0))

    empty = await state.read("openai:m")
    assert (empty.record, empty.version, empty.now) == (BreakerRecord(), 0, 1000.0)

    opened = BreakerRecord(state="open", open_until=1030.0, reason="3 failures", times_opened=1)
    assert await state.write("openai:m", opened, version=0)
    assert not await state.write("openai:m", BreakerRecord(), version=0)  # someone wrote first
    snap = await state.read("openai:m")
    assert (snap.record, snap.version) == (opened, 1)

    failures = BreakerRecord(failures=(1001.5, 1002.25))
    assert await state.write("openai:m", failures, version=1)
    assert not await state.write("openai:m", opened, version=1)
    assert (await state.read("openai:m")).record == failures
    assert (await state.read("another")).version == 0  # breakers are separate by name


async def test_the_state_machine_runs_the_same_on_every_backend(new_state: StateFactory) -> None:
    clock = FakeClock(start=1000.0)
    breaker = CircuitBreaker(
        "openai:m", policy=BreakerPolicy(failure_threshold=2, window_s=10, open_s=5), state=new_state(clock)
    )

    await breaker.record_failure("HTTP 503")
    assert (await breaker.acquire()).allowed
    await breaker.record_failure("HTTP 500")
    refused = await breaker.acquire()
    assert not refused.allowed and refused.open_until == 1005.0
    assert "circuit open for openai:m until 1970-01-01T00:16:45.000Z" in refused.reason
    clock.advance(5)
    probe = await breaker.acquire()
    assert probe.allowed and probe.probe
    assert not (await breaker.acquire()).allowed
    await breaker.record_success(probe)

    assert (await breaker.status()) == BreakerRecord(times_opened=1)
    assert [(t.from_state, t.to_state) for t in breaker.transitions] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


async def test_an_unreachable_backend_lets_calls_through_and_says_so() -> None:
    from tether.models.breakers.redis import RedisBreakerState

    state = RedisBreakerState(url="redis://127.0.0.1:1/0")
    breaker = CircuitBreaker("openai:m", state=state)
    try:
        permit = await breaker.acquire()
        await breaker.record_failure("HTTP 503")
    finally:
        await state.aclose()

    assert permit.allowed
    assert "state of breaker 'openai:m' was unreachable" in permit.degraded


# -- shared by processes ---------------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import json, sys
    import anyio
    from tether.exceptions import ModelServerError
    from tether.models import BreakerPolicy, CircuitBreaker, CircuitBreakerModel, UserMessage
    from tether.testing import FakeClock, ScriptedModel

    config = json.loads(sys.argv[1])

    def state(clock):
        if config["backend"] == "redis":
            from tether.models.breakers.redis import RedisBreakerState
            return RedisBreakerState(prefix=config["prefix"], clock=clock)
        from tether.models.breakers.postgres import PostgresBreakerState
        return PostgresBreakerState(config["dsn"], schema=config["schema"], clock=clock)

    async def main():
        clock = FakeClock(start=config["now"]) if config.get("now") is not None else None
        policy = BreakerPolicy(**config["policy"])
        s = state(clock)
        breaker = CircuitBreaker(config["name"], policy=policy, state=s)
        try:
            if config["task"] == "fail":
                model = CircuitBreakerModel(
                    ScriptedModel([ModelServerError("HTTP 503: down")] * 100, name=config["name"]), breaker
                )
                for _ in range(config["calls"]):
                    try:
                        await model.request([UserMessage(content="hi")])
                    except Exception as exc:
                        print(type(exc).__name__)
            else:
                probes = []
                async def one():
                    permit = await breaker.acquire()
                    probes.append(permit.probe)
                async with anyio.create_task_group() as tg:
                    for _ in range(config["calls"]):
                        tg.start_soon(one)
                print(json.dumps({"probes": sum(probes), "asked": len(probes)}))
        finally:
            await s.aclose()

    anyio.run(main)
    """
)


async def _run_child(config: dict[str, Any]) -> str:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps(config)], capture_output=True, text=True, timeout=120
        )

    done = await anyio.to_thread.run_sync(run)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _child_config(backend: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {**backend, **more}


SHARED = pytest.mark.parametrize("backend", ["redis", "postgres"], indirect=True)


@SHARED
async def test_a_breaker_opened_by_one_process_fails_fast_in_another(
    backend: dict[str, Any], new_state: StateFactory
) -> None:
    policy = {"failure_threshold": 3, "window_s": 60, "open_s": 120}

    # the other worker's model fails three times; its breaker (server time, no fake clock) opens
    output = await _run_child(_child_config(backend, task="fail", name="openai:m", policy=policy, calls=4))
    assert output.split() == ["ModelServerError"] * 3 + ["ModelCircuitOpen"]

    inner = ScriptedModel(["never reached"], name="openai:m")
    here = CircuitBreakerModel(
        inner, CircuitBreaker("openai:m", policy=BreakerPolicy(**policy), state=new_state())
    )
    with pytest.raises(
        ModelCircuitOpen, match=r"circuit open for openai:m until .* after 3 failures within 60s"
    ):
        await here.request([UserMessage(content="hi")])
    assert inner.request_count == 0


@SHARED
async def test_two_processes_racing_for_half_open_probes_get_exactly_the_allowed_number(
    backend: dict[str, Any], new_state: StateFactory
) -> None:
    policy = {"failure_threshold": 1, "window_s": 60, "open_s": 10, "half_open_probes": 3}
    opener = CircuitBreaker(
        "openai:m", policy=BreakerPolicy(**policy), state=new_state(FakeClock(start=1000.0))
    )
    await opener.record_failure(str(ModelServerError("HTTP 503")))
    assert (await opener.status()).state == "open"

    # both processes ask 25 times at once, after open_s: only three calls in all may probe
    child = _child_config(backend, task="probe", name="openai:m", policy=policy, calls=25, now=1011.0)
    async with anyio.create_task_group() as tg:
        outputs: list[str] = []

        async def run() -> None:
            outputs.append(await _run_child(child))

        tg.start_soon(run)
        tg.start_soon(run)

    results = [json.loads(o) for o in outputs]
    assert [r["asked"] for r in results] == [25, 25]
    assert sum(r["probes"] for r in results) == 3
    record = await opener.status()
    assert (record.state, record.probes) == ("half_open", 3)
