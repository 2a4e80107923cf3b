"""Budgets: caps on tokens and money per run, per user per UTC day, per feature.

A `BudgetLedger` is asked before each model call (`check`, with what the call is projected to cost) and
told after it (`charge`, with what it did cost). Spend is kept in a `Counters` backend: in-memory for
one process, Redis for many workers, where every charge is one atomic transaction so attribution stays
exact under any concurrency.

`check` and `charge` are separate steps, so calls that pass `check` at the same moment may together
overshoot a budget by at most what they were projected to cost: a budget bounds spend to within one
round of in-flight calls, it does not reserve.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .._clock import Clock, SystemClock
from ..exceptions import ConfigError
from ._counters import NANO_USD, Counters, InMemoryCounters

__all__ = [
    "Budget",
    "BudgetBreach",
    "BudgetDecision",
    "BudgetKeys",
    "BudgetLedger",
    "BudgetPeriod",
    "BudgetScope",
    "Spend",
]

BudgetScope = Literal["run", "user", "feature"]
BudgetPeriod = Literal["total", "day"]
_SCOPES: tuple[str, ...] = ("run", "user", "feature")
_PERIODS: tuple[str, ...] = ("total", "day")
_DEFAULT_PERIOD: dict[str, BudgetPeriod] = {"run": "total", "user": "day", "feature": "day"}
_DAY = 86_400.0


@dataclass(frozen=True, kw_only=True)
class Budget:
    """A cap on what one run, user or feature may spend.

    Attributes:
        scope: what is capped: `run` (one run), `user` (one user), `feature` (one feature of the product).
        max_tokens: most tokens (prompt + generated) in the period; None for no token cap.
        max_usd: most money, in USD, in the period; None for no money cap.
        period: `total` or `day` (the UTC day). Defaults: `total` for a run, `day` for a user or feature.
        target: the one user or feature this budget is for; None applies it to each one separately.
    """

    scope: BudgetScope
    max_tokens: int | None = None
    max_usd: float | None = None
    period: BudgetPeriod | None = None
    target: str | None = None

    def __post_init__(self) -> None:
        if self.scope not in _SCOPES:
            raise ConfigError(f"unknown budget scope {self.scope!r}; use one of {list(_SCOPES)}")
        if self.max_tokens is None and self.max_usd is None:
            raise ConfigError(f"a {self.scope} budget needs max_tokens, max_usd or both")
        if self.max_tokens is not None and (isinstance(self.max_tokens, bool) or self.max_tokens < 0):
            raise ConfigError(f"Budget.max_tokens must be 0 or more; got {self.max_tokens!r}")
        if self.max_usd is not None and self.max_usd < 0:
            raise ConfigError(f"Budget.max_usd must be 0 or more; got {self.max_usd!r}")
        if self.period is None:
            object.__setattr__(self, "period", _DEFAULT_PERIOD[self.scope])  # frozen: resolved once
        if self.period not in _PERIODS:
            raise ConfigError(f"unknown budget period {self.period!r}; use one of {list(_PERIODS)}")
        if self.scope == "run" and self.period != "total":
            raise ConfigError("a run budget covers the whole run; its period must be 'total'")
        if self.scope == "run" and self.target is not None:
            raise ConfigError("a run budget applies to every run; it takes no target")


@dataclass(frozen=True, kw_only=True)
class BudgetKeys:
    """Whom a model call is charged to. A scope whose key is None is neither checked nor charged."""

    run_id: str | None = None
    user_id: str | None = None
    feature: str | None = None

    def key(self, scope: BudgetScope) -> str | None:
        return {"run": self.run_id, "user": self.user_id, "feature": self.feature}[scope]


@dataclass(frozen=True, kw_only=True)
class Spend:
    """Tokens and money, projected or charged."""

    tokens: int = 0
    usd: float = 0.0

    def __post_init__(self) -> None:
        if self.tokens < 0 or self.usd < 0:
            raise ConfigError(f"spend cannot be negative; got {self.tokens} tokens, {self.usd} USD")


@dataclass(frozen=True, kw_only=True)
class BudgetBreach:
    """One cap a call would cross, with the figures.

    Attributes:
        scope, target, period: the budget (`target` is the run, user or feature id).
        window: `total` or the UTC day (`2026-01-01`) the spend is counted in.
        metric: `tokens` or `usd`.
        spent: already spent in the window.
        projected: what the call was projected to add.
        limit: the cap.
    """

    scope: BudgetScope
    target: str
    period: BudgetPeriod
    window: str
    metric: Literal["tokens", "usd"]
    spent: float
    projected: float
    limit: float

    def describe(self) -> str:
        fmt = (lambda v: f"{v:,.0f} tokens") if self.metric == "tokens" else (lambda v: f"${v:,.6f}")
        when = "" if self.period == "total" else f" on {self.window} (UTC)"
        return (
            f"{self.scope} {self.target!r}{when}: {fmt(self.spent)} spent + {fmt(self.projected)} projected "
            f"> {fmt(self.limit)} allowed"
        )


@dataclass(frozen=True, kw_only=True)
class BudgetDecision:
    """Whether a model call may go ahead.

    Attributes:
        allowed: False when any budget would be crossed.
        reason: one line with the figures (the run's `budget_exceeded` reason when refused).
        breaches: every cap the call would cross.
    """

    allowed: bool
    reason: str
    breaches: tuple[BudgetBreach, ...] = ()


@dataclass(frozen=True, kw_only=True)
class _Counter:
    scope: BudgetScope
    target: str
    period: BudgetPeriod
    window: str
    expire_at: float | None

    @property
    def base(self) -> str:
        return f"budget:{self.scope}:{self.period}:{self.window}:{self.target}"

    @property
    def tokens_key(self) -> str:
        return f"{self.base}:tokens"

    @property
    def usd_key(self) -> str:
        return f"{self.base}:nusd"


class BudgetLedger:
    """Checks calls against budgets and keeps what was spent.

    Args:
        budgets: the caps. Budgets of one scope and period share counters: a budget for user `alice` and
            one for every user both read `alice`'s spend today.
        counters: where spend is kept (default: in this process). Pass
            `tether.governance.redis.RedisCounters` to share spend across workers.
        clock: decides the UTC day (default: the system clock).
        run_ttl_s: how long a run's counters are kept after its last charge.

    Example:
        ```python
        ledger = BudgetLedger([Budget(scope="user", max_usd=5.0)], counters=RedisCounters(url))
        keys = BudgetKeys(run_id=run_id, user_id="alice")
        if not (await ledger.check(keys, Spend(tokens=1200))).allowed: ...
        await ledger.charge(keys, Spend(tokens=usage.total_tokens, usd=prices.cost(model, usage)))
        ```
    """

    def __init__(
        self,
        budgets: Sequence[Budget],
        *,
        counters: Counters | None = None,
        clock: Clock | None = None,
        run_ttl_s: float = 30 * _DAY,
    ):
        self.budgets = tuple(budgets)
        for b in self.budgets:
            if not isinstance(b, Budget):
                raise ConfigError(f"BudgetLedger takes Budget objects; got {b!r}")
        self._clock = clock or SystemClock()
        self.counters = counters if counters is not None else InMemoryCounters(clock=self._clock)
        self._run_ttl_s = run_ttl_s

    def _counters(self, keys: BudgetKeys) -> dict[tuple[str, str], _Counter]:
        """The counters a call for `keys` touches, by (scope, period)."""
        now = self._clock.now()
        day = dt.datetime.fromtimestamp(now, dt.UTC).date()
        found: dict[tuple[str, str], _Counter] = {}
        for b in self.budgets:
            target = keys.key(b.scope)
            assert b.period is not None
            if target is None or (b.target is not None and b.target != target):
                continue
            if (b.scope, b.period) in found:
                continue
            if b.period == "day":
                window = day.isoformat()
                # kept through the next day too, so yesterday's spend can still be reported
                midnight = dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()
                expire_at: float | None = midnight + 2 * _DAY
            else:
                window = "total"
                expire_at = now + self._run_ttl_s if b.scope == "run" else None
            found[(b.scope, b.period)] = _Counter(
                scope=b.scope, target=target, period=b.period, window=window, expire_at=expire_at
            )
        return found

    async def spent(self, keys: BudgetKeys) -> dict[str, Spend]:
        """What has been spent in each window that budgets watch for `keys`, by counter name."""
        counters = self._counters(keys)
        values = await self.counters.get([k for c in counters.values() for k in (c.tokens_key, c.usd_key)])
        return {
            c.base: Spend(tokens=values[c.tokens_key], usd=values[c.usd_key] / NANO_USD)
            for c in counters.values()
        }

    async def check(self, keys: BudgetKeys, projected: Spend | None = None) -> BudgetDecision:
        """Whether a call for `keys`, projected to cost `projected`, stays within every budget.

        A budget already used up refuses even a call projected at zero.

        Raises:
            GovernanceUnavailable: a shared backend cannot be reached.
        """
        projected = projected or Spend()
        counters = self._counters(keys)
        if not counters:
            return BudgetDecision(allowed=True, reason="no budget applies")
        values = await self.counters.get([k for c in counters.values() for k in (c.tokens_key, c.usd_key)])
        breaches: list[BudgetBreach] = []
        for b in self.budgets:
            assert b.period is not None
            c = counters.get((b.scope, b.period))
            if c is None or (b.target is not None and b.target != c.target):
                continue
            checks: list[tuple[Literal["tokens", "usd"], float | None, float, float]] = [
                ("tokens", b.max_tokens, values[c.tokens_key], projected.tokens),
                ("usd", b.max_usd, values[c.usd_key] / NANO_USD, projected.usd),
            ]
            for metric, limit, spent, add in checks:
                if limit is not None and (spent >= limit or spent + add > limit):
                    breach = BudgetBreach(
                        scope=b.scope, target=c.target, period=b.period, window=c.window,
                        metric=metric, spent=spent, projected=add, limit=limit,
                    )  # fmt: skip
                    if breach not in breaches:
                        breaches.append(breach)
        if breaches:
            return BudgetDecision(
                allowed=False,
                reason="budget exceeded: " + "; ".join(br.describe() for br in breaches),
                breaches=tuple(breaches),
            )
        return BudgetDecision(allowed=True, reason="within every budget")

    async def charge(self, keys: BudgetKeys, spend: Spend) -> dict[str, Spend]:
        """Record what a call for `keys` cost, in every counter a budget watches, as one atomic step.

        Returns:
            Each counter's spend after the charge, by counter name.

        Raises:
            GovernanceUnavailable: a shared backend cannot be reached (nothing was charged).
        """
        counters = self._counters(keys)
        if not counters:
            return {}
        nano = round(spend.usd * NANO_USD)
        increments: dict[str, int] = {}
        ttl_s: dict[str, float] = {}
        now = self._clock.now()
        for c in counters.values():
            increments[c.tokens_key] = spend.tokens
            increments[c.usd_key] = nano
            if c.expire_at is not None:
                # relative, so that the backend's clock and the ledger's need not agree
                ttl_s[c.tokens_key] = ttl_s[c.usd_key] = max(1.0, c.expire_at - now)
        values = await self.counters.add(increments, ttl_s=ttl_s)
        return {
            c.base: Spend(tokens=values[c.tokens_key], usd=values[c.usd_key] / NANO_USD)
            for c in counters.values()
        }
