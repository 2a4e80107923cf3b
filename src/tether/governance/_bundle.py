"""`Governance`: the optional controls a run is governed by, in one object the runtime is handed."""

from __future__ import annotations

from dataclasses import dataclass

from ..models import Usage
from ._budgets import BudgetKeys, BudgetLedger, Spend
from ._killswitch import KillSwitch
from ._prices import PriceTable
from ._ratelimit import RateLimiter

__all__ = ["Governance"]


@dataclass(frozen=True, kw_only=True)
class Governance:
    """The controls for runs; each is optional and absent ones never refuse.

    Attributes:
        limiter: rate limits by user, feature and tool.
        ledger: token and money budgets.
        kill_switch: stops agents, tools, users or everything.
        prices: what model calls cost (local models: zero money); without it, money is not counted.
    """

    limiter: RateLimiter | None = None
    ledger: BudgetLedger | None = None
    kill_switch: KillSwitch | None = None
    prices: PriceTable | None = None

    def spend(self, model: str, usage: Usage) -> Spend:
        """What one call of `model` that used `usage` costs, in tokens and (with prices) money.

        Raises:
            ConfigError: the model has no price and the table does not count unknown models as free.
        """
        usd = self.prices.cost(model, usage) if self.prices is not None else 0.0
        return Spend(tokens=usage.total_tokens, usd=usd)

    async def charge(self, keys: BudgetKeys, model: str, usage: Usage) -> Spend:
        """Price a finished model call and charge it to the budgets of `keys`; returns what it cost."""
        spend = self.spend(model, usage)
        if self.ledger is not None:
            await self.ledger.charge(keys, spend)
        return spend

    async def aclose(self) -> None:
        """Close every backend's connections."""
        for part in (self.limiter, self.ledger.counters if self.ledger else None, self.kill_switch):
            if part is not None:
                await part.aclose()
