"""Governance in the loop: kill switch, budgets, prices and rate limits, checked at every step."""

from __future__ import annotations

import time

import pytest

from tether import Agent, Runner, tool
from tether.governance import (
    Budget,
    BudgetLedger,
    Governance,
    GovernanceUnavailable,
    InMemoryCounters,
    InMemoryKillSwitch,
    InMemoryRateLimiter,
    ModelPrice,
    PriceTable,
    RateLimit,
    RateLimits,
)
from tether.journal import MemoryStore, ToolFailed, UsageCharged
from tether.models import Usage
from tether.testing import ScriptedModel, call

pytestmark = pytest.mark.anyio

effects: list[str] = []


@tool(idempotent=True)
def lookup(order_id: str) -> str:
    """Look up."""
    effects.append(order_id)
    return "kettle"


def agent(script: list | None = None) -> Agent:
    return Agent(
        "support",
        tools=[lookup],
        model=ScriptedModel(
            script or [call("lookup", order_id="1042"), "a kettle"],
            usage=Usage(input_tokens=300, output_tokens=100),
        ),
    )


async def test_an_engaged_kill_switch_stops_the_run_before_its_next_step() -> None:
    kill = InMemoryKillSwitch()
    await kill.engage("agent", "support", by="oncall@example.com", reason="bad refunds")
    store = MemoryStore()
    result = await Runner(store, governance=Governance(kill_switch=kill)).run(agent(), "order 1042")
    assert (
        result.status == "cancelled"
        and "kill switch" in result.reason
        and "oncall@example.com" in result.reason
    )
    assert result.steps == 0


async def test_a_switched_off_tool_is_not_run_and_the_model_is_told() -> None:
    effects.clear()
    kill = InMemoryKillSwitch()
    await kill.engage("tool", "lookup", by="oncall", reason="database migration")
    store = MemoryStore()
    result = await Runner(store, governance=Governance(kill_switch=kill)).run(agent(), "order 1042")
    assert result.ok and effects == []
    failed = [s.event for s in await store.load(result.run_id) if isinstance(s.event, ToolFailed)]
    assert failed[0].kind == "blocked" and "database migration" in failed[0].message


async def test_a_user_budget_ends_the_next_run_with_the_figures() -> None:
    ledger = BudgetLedger([Budget(scope="user", max_tokens=1000)], counters=InMemoryCounters())
    gov = Governance(ledger=ledger)
    store = MemoryStore()
    first = await Runner(store, governance=gov).run(agent(), "order 1042", user_id="alice")
    assert first.ok and first.usage.total_tokens == 800
    second = await Runner(store, governance=gov).run(agent(), "order 1042", user_id="alice")
    assert second.status == "budget_exceeded" and "alice" in second.reason and "1,000" in second.reason
    other = await Runner(store, governance=gov).run(agent(), "order 1042", user_id="bob")
    assert other.ok  # budgets are per user


async def test_cost_is_journaled_from_the_price_table() -> None:
    prices = PriceTable(prices={"test:scripted": ModelPrice(input=1.0, output=2.0)})
    store = MemoryStore()
    result = await Runner(store, governance=Governance(prices=prices)).run(agent(), "order 1042")
    charged = [s.event.cost_usd for s in await store.load(result.run_id) if isinstance(s.event, UsageCharged)]
    assert charged == [pytest.approx(0.0005), pytest.approx(0.0005)]  # 300 in x $1/M + 100 out x $2/M
    assert (await store.get_run(result.run_id)).cost_usd == pytest.approx(0.001)


async def test_rate_limits_make_steps_wait_for_the_bucket() -> None:
    limiter = InMemoryRateLimiter(RateLimits(rules={"user": RateLimit(capacity=1, refill_per_s=10)}))
    t0 = time.perf_counter()
    result = await Runner(MemoryStore(), governance=Governance(limiter=limiter)).run(
        agent(), "order 1042", user_id="alice"
    )
    assert result.ok and time.perf_counter() - t0 >= 0.08  # the second model call waited ~0.1 s


async def test_an_unreachable_backend_fails_closed() -> None:
    class Down(InMemoryKillSwitch):
        async def check(self, agent: str, tool: str | None = None, user: str | None = None):  # type: ignore[override]
            raise GovernanceUnavailable("cannot reach Redis at redis://127.0.0.1:1; start redis-server")

    result = await Runner(MemoryStore(), governance=Governance(kill_switch=Down())).run(agent(), "order 1042")
    assert (
        result.status == "failed"
        and "governance unavailable" in result.reason
        and "redis-server" in result.reason
    )
