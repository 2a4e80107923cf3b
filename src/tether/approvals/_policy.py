"""Approval policy: what happens to a proposed tool call, decided by risk, confidence and reversibility.

| tier | default handling |
|---|---|
| low | runs autonomously |
| medium | runs, flagged in the audit log |
| high | asynchronous approval: the run suspends (holds no process) until a human decides |
| critical | synchronous approval: the caller waits, with a deadline |

Whatever the tier, a call to an irreversible tool whose confidence is below the policy's floor is sent
to a human. Confidence is a number in [0, 1]: from the local model's token log-probabilities of the
call where the backend reports them, else from a function the user supplies, else unknown (None), and
an unknown confidence never counts as low.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from ..exceptions import ConfigError

__all__ = [
    "Action",
    "ApprovalPolicy",
    "ExpiryAction",
    "PolicyDecision",
    "ProposedCall",
    "TierPolicy",
    "load_policy",
]

Action = Literal["run", "flag", "ask_async", "ask_sync", "deny"]
ExpiryAction = Literal["reject", "escalate", "fail"]
_ACTIONS: tuple[str, ...] = ("run", "flag", "ask_async", "ask_sync", "deny")
_EXPIRY: tuple[str, ...] = ("reject", "escalate", "fail")
_TIERS: tuple[str, ...] = ("low", "medium", "high", "critical")
_DEFAULT_TIERS: dict[str, Action] = {"low": "run", "medium": "flag", "high": "ask_async", "critical": "ask_sync"}


@dataclass(frozen=True, kw_only=True)
class ProposedCall:
    """A tool call the model proposed, with what a policy needs to decide on it."""

    agent: str
    tool: str
    arguments: Mapping[str, Any]
    risk: str
    reversible: bool
    confidence: float | None = None
    user_id: str | None = None
    user_groups: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class PolicyDecision:
    """What to do with one call, and why (journaled with the call).

    Attributes:
        action: `run`, `flag` (run, marked in the audit log), `ask_async` (suspend the run until a human
            decides), `ask_sync` (the caller waits for a decision), or `deny`.
        reason: one line a human reads in the approval request and the audit log.
        approvers: the group that may decide.
        deadline_s: how long a human has to decide.
        on_expiry: what happens when nobody decided in time.
        escalate_to: the group that receives the request when `on_expiry` is `escalate`.
    """

    action: Action
    reason: str
    approvers: str = "approvers"
    deadline_s: float = 24 * 3600
    on_expiry: ExpiryAction = "reject"
    escalate_to: str | None = None


class ApprovalPolicy(Protocol):
    """Anything with `decide(call) -> PolicyDecision`: a `TierPolicy`, or your own class."""

    def decide(self, call: ProposedCall) -> PolicyDecision: ...


@dataclass(frozen=True, kw_only=True)
class _Rule:
    action: Action | None = None
    approvers: str | None = None
    deadline_s: float | None = None
    on_expiry: ExpiryAction | None = None
    escalate_to: str | None = None


@dataclass(frozen=True, kw_only=True)
class TierPolicy:
    """The default policy: a handling per risk tier, a confidence floor, and overrides.

    Overrides apply in this order, later ones winning: per tier, per agent, per tool (`agent.tool` or
    `tool`), per user group.

    Args:
        tiers: action per risk tier; tiers left out keep their default.
        confidence_floor: below this, an irreversible call is always sent to a human.
        approvers, deadline_s, on_expiry, escalate_to: defaults for every request.
        agents, tools, groups: overrides (see `load_policy` for the file form).
        confidence: a function giving a confidence when the model reports none.
        roster: who belongs to each approver group; decisions by others are refused
            (`tether.approvals.Approvals(roster=policy.roster)`).
    """

    tiers: Mapping[str, Action] = field(default_factory=lambda: dict(_DEFAULT_TIERS))
    confidence_floor: float = 0.5
    approvers: str = "approvers"
    deadline_s: float = 24 * 3600
    on_expiry: ExpiryAction = "reject"
    escalate_to: str | None = None
    agents: Mapping[str, _Rule] = field(default_factory=dict)
    tools: Mapping[str, _Rule] = field(default_factory=dict)
    groups: Mapping[str, _Rule] = field(default_factory=dict)
    confidence: Callable[[ProposedCall], float | None] | None = None
    roster: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # tiers not given keep their default handling: TierPolicy(tiers={"high": "deny"}) changes one
        object.__setattr__(self, "tiers", {**_DEFAULT_TIERS, **self.tiers})
        for tier, action in self.tiers.items():
            if tier not in _TIERS:
                raise ConfigError(f"unknown risk tier {tier!r} in policy; tiers are {list(_TIERS)}")
            if action not in _ACTIONS:
                raise ConfigError(
                    f"unknown action {action!r} for tier {tier!r}; actions are {list(_ACTIONS)}"
                )
        if not 0.0 <= self.confidence_floor <= 1.0:
            raise ConfigError(f"confidence_floor must be in [0, 1]; got {self.confidence_floor!r}")
        if self.on_expiry not in _EXPIRY:
            raise ConfigError(f"on_expiry must be one of {list(_EXPIRY)}; got {self.on_expiry!r}")
        if self.on_expiry == "escalate" and not self.escalate_to:
            raise ConfigError("on_expiry='escalate' needs escalate_to: the group that receives the request")

    def decide(self, call: ProposedCall) -> PolicyDecision:
        if call.risk not in _TIERS:
            raise ConfigError(f"tool {call.tool!r} has unknown risk {call.risk!r}; use one of {list(_TIERS)}")
        action: Action = self.tiers.get(call.risk, "ask_async")
        reason = f"{call.risk} risk"
        decision = PolicyDecision(
            action=action,
            reason=reason,
            approvers=self.approvers,
            deadline_s=self.deadline_s,
            on_expiry=self.on_expiry,
            escalate_to=self.escalate_to,
        )
        layers: list[tuple[str, _Rule | None]] = [
            (f"agent {call.agent}", self.agents.get(call.agent)),
            (f"tool {call.tool}", self.tools.get(call.tool)),
            (f"tool {call.agent}.{call.tool}", self.tools.get(f"{call.agent}.{call.tool}")),
        ]
        layers += [(f"group {g}", self.groups.get(g)) for g in call.user_groups]
        for where, rule in layers:
            if rule is None:
                continue
            decision = _apply(decision, rule, where)
        confidence = call.confidence
        if confidence is None and self.confidence is not None:
            confidence = self.confidence(call)
        if (
            confidence is not None
            and not call.reversible
            and confidence < self.confidence_floor
            and decision.action in ("run", "flag")
        ):
            decision = replace(
                decision,
                action="ask_async",
                reason=f"{decision.reason}; confidence {confidence:.2f} is below {self.confidence_floor:.2f} "
                "for an irreversible tool",
            )
        return decision


def _apply(decision: PolicyDecision, rule: _Rule, where: str) -> PolicyDecision:
    changes: dict[str, Any] = {}
    if rule.action is not None and rule.action != decision.action:
        changes["action"] = rule.action
        changes["reason"] = f"{decision.reason}; {where} sets {rule.action}"
    for name in ("approvers", "deadline_s", "on_expiry", "escalate_to"):
        value = getattr(rule, name)
        if value is not None:
            changes[name] = value
    return replace(decision, **changes) if changes else decision


def _rule(raw: Mapping[str, Any], where: str) -> _Rule:
    unknown = set(raw) - {"action", "approvers", "deadline", "deadline_s", "on_expiry", "escalate_to"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    action = raw.get("action")
    if action is not None and action not in _ACTIONS:
        raise ConfigError(f"{where}: unknown action {action!r}; actions are {list(_ACTIONS)}")
    expiry = raw.get("on_expiry")
    if expiry is not None and expiry not in _EXPIRY:
        raise ConfigError(f"{where}: on_expiry must be one of {list(_EXPIRY)}; got {expiry!r}")
    return _Rule(
        action=action,
        approvers=raw.get("approvers"),
        deadline_s=_seconds(raw["deadline"], where) if "deadline" in raw else raw.get("deadline_s"),
        on_expiry=expiry,
        escalate_to=raw.get("escalate_to"),
    )


def _seconds(value: Any, where: str) -> float:
    if isinstance(value, int | float):
        return float(value)
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    text = str(value).strip()
    if text and text[-1] in units:
        try:
            return float(text[:-1]) * units[text[-1]]
        except ValueError:
            pass
    raise ConfigError(f"{where}: deadline {value!r} is not a duration; use seconds or 30m, 4h, 2d, 1w")


def load_policy(path: str | Path) -> TierPolicy:
    """Read a `TierPolicy` from a TOML file.

    ```toml
    confidence_floor = 0.6
    deadline = "4h"
    on_expiry = "escalate"
    escalate_to = "leads"

    [tiers]
    medium = "run"

    [tools.refund]            # or [tools."support.refund"] for one agent's tool
    action = "ask_sync"
    deadline = "15m"

    [groups.finance]
    approvers = "finance-leads"

    [roster]                  # who may decide for each approver group
    approvers = ["ana", "bo"]
    finance-leads = ["cy"]
    ```
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no policy file {str(path)!r}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"policy file {str(path)!r} is not valid TOML: {exc}") from None
    known = {
        "tiers",
        "confidence_floor",
        "approvers",
        "deadline",
        "deadline_s",
        "on_expiry",
        "escalate_to",
        "agents",
        "tools",
        "groups",
        "roster",
    }
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(
            f"policy file {str(path)!r}: unknown keys {sorted(unknown)}; known: {sorted(known)}"
        )
    kwargs: dict[str, Any] = {}
    if "tiers" in raw:
        kwargs["tiers"] = {**TierPolicy().tiers, **raw["tiers"]}
    for name in ("confidence_floor", "approvers", "on_expiry", "escalate_to"):
        if name in raw:
            kwargs[name] = raw[name]
    if "deadline" in raw or "deadline_s" in raw:
        kwargs["deadline_s"] = _seconds(raw.get("deadline", raw.get("deadline_s")), str(path))
    roster = raw.get("roster", {})
    if not isinstance(roster, dict) or not all(
        isinstance(m, list) and all(isinstance(x, str) for x in m) for m in roster.values()
    ):
        raise ConfigError(f"policy file {str(path)!r}: [roster] maps each group to a list of user names")
    kwargs["roster"] = {group: tuple(members) for group, members in roster.items()}
    for section in ("agents", "tools", "groups"):
        kwargs[section] = {
            name: _rule(rule, f"{path} [{section}.{name}]") for name, rule in raw.get(section, {}).items()
        }
    return TierPolicy(**kwargs)
