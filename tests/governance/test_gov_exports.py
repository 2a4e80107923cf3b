"""The governance API is pinned: changing it must be deliberate."""

from __future__ import annotations

import tether.governance
import tether.governance.postgres
import tether.governance.redis

GOVERNANCE = [
    "GOVERNANCE_ENV", "NANO_USD", "Budget", "BudgetBreach", "BudgetDecision", "BudgetKeys", "BudgetLedger",
    "BudgetPeriod", "BudgetScope", "Cost", "Counters", "Governance", "GovernanceUnavailable",
    "InMemoryCounters", "InMemoryKillSwitch", "InMemoryRateLimiter", "KeyKind", "KillAction",
    "KillDecision", "KillRecord", "KillScope", "KillSwitch", "ModelPrice", "PriceTable", "RateDecision",
    "RateLimit", "RateLimiter", "RateLimits", "UnknownModel", "agent_card", "load_governance", "rate_key",
    "render_card_markdown",
]  # fmt: skip


def test_governance_exports() -> None:
    assert tether.governance.__all__ == sorted(GOVERNANCE, key=lambda n: (not n.isupper(), n))
    assert sorted(tether.governance.__all__) == sorted(GOVERNANCE)
    for name in GOVERNANCE:
        assert hasattr(tether.governance, name), name


def test_redis_backend_exports() -> None:
    assert tether.governance.redis.__all__ == [
        "DEFAULT_REDIS_URL", "RedisCounters", "RedisKillSwitch", "RedisRateLimiter",
    ]  # fmt: skip


def test_postgres_backend_exports() -> None:
    assert tether.governance.postgres.__all__ == [
        "DEFAULT_SCHEMA", "PostgresCounters", "PostgresKillSwitch", "PostgresRateLimiter",
    ]  # fmt: skip
