"""Governance: rate limits, budgets and prices, the kill switch, agent cards.

Each control is a contract with an in-process implementation here and shared ones in
`tether.governance.redis` (install `tether[redis]`) and `tether.governance.postgres` (install
`tether[postgres]`). `Governance` bundles the ones a runtime uses; `load_governance(path)` builds it from
a TOML file (or the file `TETHER_GOVERNANCE` names), so every worker and the CLI enforce the same controls.
"""

from ._budgets import Budget as Budget
from ._budgets import BudgetBreach as BudgetBreach
from ._budgets import BudgetDecision as BudgetDecision
from ._budgets import BudgetKeys as BudgetKeys
from ._budgets import BudgetLedger as BudgetLedger
from ._budgets import BudgetPeriod as BudgetPeriod
from ._budgets import BudgetScope as BudgetScope
from ._budgets import Spend as Spend
from ._bundle import Governance as Governance
from ._card import agent_card as agent_card
from ._card import render_card_markdown as render_card_markdown
from ._config import GOVERNANCE_ENV as GOVERNANCE_ENV
from ._config import load_governance as load_governance
from ._counters import NANO_USD as NANO_USD
from ._counters import Counters as Counters
from ._counters import InMemoryCounters as InMemoryCounters
from ._errors import GovernanceUnavailable as GovernanceUnavailable
from ._killswitch import InMemoryKillSwitch as InMemoryKillSwitch
from ._killswitch import KillAction as KillAction
from ._killswitch import KillDecision as KillDecision
from ._killswitch import KillRecord as KillRecord
from ._killswitch import KillScope as KillScope
from ._killswitch import KillSwitch as KillSwitch
from ._prices import Cost as Cost
from ._prices import ModelPrice as ModelPrice
from ._prices import PriceTable as PriceTable
from ._prices import UnknownModel as UnknownModel
from ._ratelimit import InMemoryRateLimiter as InMemoryRateLimiter
from ._ratelimit import KeyKind as KeyKind
from ._ratelimit import RateDecision as RateDecision
from ._ratelimit import RateLimit as RateLimit
from ._ratelimit import RateLimiter as RateLimiter
from ._ratelimit import RateLimits as RateLimits
from ._ratelimit import rate_key as rate_key

__all__ = [
    "GOVERNANCE_ENV",
    "NANO_USD",
    "Budget",
    "BudgetBreach",
    "BudgetDecision",
    "BudgetKeys",
    "BudgetLedger",
    "BudgetPeriod",
    "BudgetScope",
    "Cost",
    "Counters",
    "Governance",
    "GovernanceUnavailable",
    "InMemoryCounters",
    "InMemoryKillSwitch",
    "InMemoryRateLimiter",
    "KeyKind",
    "KillAction",
    "KillDecision",
    "KillRecord",
    "KillScope",
    "KillSwitch",
    "ModelPrice",
    "PriceTable",
    "RateDecision",
    "RateLimit",
    "RateLimiter",
    "RateLimits",
    "UnknownModel",
    "agent_card",
    "load_governance",
    "rate_key",
    "render_card_markdown",
]
