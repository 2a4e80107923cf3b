"""Budgets: figures in refusals, UTC days, and exact attribution under concurrency (memory, Redis and
PostgreSQL)."""

from __future__ import annotations

import random

import anyio
import pytest
from gov_helpers import BACKENDS, counters

from tether import ConfigError
from tether.governance import (
    Budget,
    BudgetKeys,
    BudgetLedger,
    Counters,
    Governance,
    InMemoryCounters,
    ModelPrice,
    PriceTable,
    Spend,
)
from tether.models import Usage
from tether.testing import FakeClock

pytestmark = pytest.mark.anyio


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Counters:
    return counters(request.param, request)


async def test_check_refuses_with_the_figures(backend: Counters) -> None:
    clock = FakeClock()  # 2026-01-01T00:00:00Z
    ledger = BudgetLedger(
        [Budget(scope="user", max_tokens=1000), Budget(scope="run", max_usd=0.01)],
        counters=backend,
        clock=clock,
    )
    keys = BudgetKeys(run_id="run_1", user_id="alice")
    try:
        assert (await ledger.check(keys, Spend(tokens=1000))).allowed
        await ledger.charge(keys, Spend(tokens=700, usd=0.004))
        refused = await ledger.check(keys, Spend(tokens=400, usd=0.001))
        assert not refused.allowed
        assert refused.reason == (
            "budget exceeded: user 'alice' on 2026-01-01 (UTC): 700 tokens spent + 400 tokens projected "
            "> 1,000 tokens allowed"
        )
        assert (await ledger.check(keys, Spend(tokens=300))).allowed
        await ledger.charge(keys, Spend(tokens=300, usd=0.007))
        # both caps reached: even a call projected at zero is refused, and both figures are given
        spent = await ledger.check(keys, Spend())
        assert [(b.scope, b.metric, b.spent, b.limit) for b in spent.breaches] == [
            ("user", "tokens", 1000, 1000),
            ("run", "usd", pytest.approx(0.011), 0.01),
        ]
        # a new UTC day starts alice afresh; the run budget is for the whole run
        clock.advance(86_400)
        next_day = await ledger.check(keys, Spend(tokens=10))
        assert [b.scope for b in next_day.breaches] == ["run"]
        assert (await ledger.check(BudgetKeys(run_id="run_2", user_id="alice"), Spend(tokens=10))).allowed
    finally:
        await backend.aclose()


async def test_targeted_and_feature_budgets() -> None:
    ledger = BudgetLedger(
        [
            Budget(scope="user", target="intern", max_tokens=10),
            Budget(scope="feature", max_usd=1.0, period="total"),
        ],
        clock=FakeClock(),
    )
    await ledger.charge(BudgetKeys(user_id="intern", feature="search"), Spend(tokens=10, usd=0.5))
    await ledger.charge(BudgetKeys(user_id="boss", feature="search"), Spend(tokens=10**6, usd=0.5))
    assert (await ledger.check(BudgetKeys(user_id="boss"), Spend(tokens=10))).allowed
    intern = await ledger.check(BudgetKeys(user_id="intern"), Spend(tokens=1))
    assert intern.reason.startswith("budget exceeded: user 'intern'")
    search = await ledger.check(BudgetKeys(feature="search"))
    assert "feature 'search': $1.000000 spent" in search.reason
    assert (await ledger.check(BudgetKeys(feature="chat"))).allowed


def test_bad_budgets_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="needs max_tokens, max_usd or both"):
        Budget(scope="user")
    with pytest.raises(ConfigError, match="period must be 'total'"):
        Budget(scope="run", max_tokens=1, period="day")
    with pytest.raises(ConfigError, match="unknown budget scope"):
        Budget(scope="team", max_tokens=1)  # type: ignore[arg-type]  # the mistake under test
    with pytest.raises(ConfigError, match="negative"):
        Spend(tokens=-1)


async def test_attribution_is_exact_under_concurrency(
    request: pytest.FixtureRequest, backend: Counters
) -> None:
    """50 concurrent charges from 5 users sharing one model, over two ledgers (two workers) on one backend."""
    prices = PriceTable(prices={"openai:shared@*": ModelPrice(input=0.15, output=0.6, cached=0.075)})
    model = "openai:shared@http://127.0.0.1:9/v1"
    budgets = [
        Budget(scope="run", max_tokens=10**9),
        Budget(scope="user", max_usd=1000.0),
        Budget(scope="feature", max_tokens=10**9),
    ]
    clock = FakeClock()
    # the second worker's ledger has counters of its own on the same shared backend (its own connections)
    second = (
        backend
        if isinstance(backend, InMemoryCounters)
        else counters(request.node.callspec.params["backend"], request)
    )
    workers = [
        Governance(ledger=BudgetLedger(budgets, counters=backend, clock=clock), prices=prices),
        Governance(ledger=BudgetLedger(budgets, counters=second, clock=clock), prices=prices),
    ]
    rng = random.Random(4)
    users = [f"user{i}" for i in range(5)]
    calls = []
    for i in range(50):
        user = users[i % 5]
        usage = Usage(
            input_tokens=rng.randint(100, 5000),
            output_tokens=rng.randint(1, 800),
            cached_tokens=rng.randint(0, 99),
        )
        calls.append((BudgetKeys(run_id=f"run_{user}_{i % 2}", user_id=user, feature="chat"), usage))

    async def one(i: int) -> None:
        keys, usage = calls[i]
        await anyio.sleep(0)
        await workers[i % 2].charge(keys, model, usage)

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(one, i)

    expected: dict[str, list[float]] = {}
    for keys, usage in calls:
        nano = round(prices.cost(model, usage) * 1e9)
        for name in (f"run:{keys.run_id}", f"user:{keys.user_id}", "feature:chat"):
            tokens, usd = expected.setdefault(name, [0, 0])
            expected[name] = [tokens + usage.total_tokens, usd + nano]
    ledger = workers[0].ledger
    assert ledger is not None
    seen: dict[str, Spend] = {}
    for keys, _ in calls:
        seen.update(await ledger.spent(keys))
    assert len(seen) == 10 + 5 + 1
    for counter, spend in seen.items():
        scope, _period, _window, target = counter.split(":", 4)[1:]
        tokens, nano = expected[f"{scope}:{target}"]
        assert spend.tokens == tokens, counter
        assert round(spend.usd * 1e9) == nano, counter
    assert sum(s.tokens for c, s in seen.items() if ":user:" in c) == sum(u.total_tokens for _, u in calls)
    for w in workers:
        await w.aclose()
