"""The kill switch: stop an agent, a tool, a user's runs, or everything, before the next step.

A switch is engaged for a scope (`global`, `agent`, `tool`, `user`) and a target (an agent name, a tool
name, a user id; none for `global`). The runtime calls `check(agent, tool, user)` before every step and
every tool call; any engaged switch that matches refuses. Every engage and release returns a
`KillRecord` (who, when, why) for the audit log and is kept in the switch's history.

`InMemoryKillSwitch` serves one process; `tether.governance.redis.RedisKillSwitch` persists switches in
Redis, so every worker sees a change at its next check and a restart forgets nothing.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from .._clock import Clock, SystemClock
from ..exceptions import ConfigError

__all__ = [
    "InMemoryKillSwitch",
    "KillAction",
    "KillDecision",
    "KillRecord",
    "KillScope",
    "KillSwitch",
]

KillScope = Literal["global", "agent", "tool", "user"]
KillAction = Literal["engage", "release"]
_SCOPES: tuple[str, ...] = ("global", "agent", "tool", "user")


@dataclass(frozen=True, kw_only=True)
class KillRecord:
    """One change to the kill switch, as the audit log keeps it.

    Attributes:
        action: `engage` or `release`.
        scope: `global`, `agent`, `tool` or `user`.
        target: the agent, tool or user; None for `global`.
        by: who made the change.
        reason: why.
        at: when, in seconds since the epoch.
    """

    action: KillAction
    scope: KillScope
    target: str | None
    by: str
    reason: str
    at: float

    @property
    def field(self) -> str:
        """The switch this record is about: `global`, or `scope:target`."""
        return switch_field(self.scope, self.target)

    def to_dict(self) -> dict[str, object]:
        return {
            "action": self.action,
            "scope": self.scope,
            "target": self.target,
            "by": self.by,
            "reason": self.reason,
            "at": self.at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> KillRecord:
        return cls(**data)  # type: ignore[arg-type]  # written by to_dict


@dataclass(frozen=True, kw_only=True)
class KillDecision:
    """Whether a step may go ahead.

    Attributes:
        allowed: False when any engaged switch matches.
        reason: one line naming the switches and who engaged them, for the run's end reason.
        engaged: the matching switches (their engage records).
    """

    allowed: bool
    reason: str
    engaged: tuple[KillRecord, ...] = ()


def switch_field(scope: str, target: str | None) -> str:
    return "global" if scope == "global" else f"{scope}:{target}"


class KillSwitch(abc.ABC):
    """Engaged switches and their history.

    Args:
        known_agents: agent names that may be targeted; when given, engaging a switch for any other
            agent is refused (a typo must not look like a stopped agent).
        known_tools: likewise for tool names.
        clock: stamps records (default: the system clock).
    """

    def __init__(
        self,
        *,
        known_agents: Collection[str] | None = None,
        known_tools: Collection[str] | None = None,
        clock: Clock | None = None,
    ):
        self.known_agents = frozenset(known_agents) if known_agents is not None else None
        self.known_tools = frozenset(known_tools) if known_tools is not None else None
        self._clock = clock or SystemClock()

    def _record(
        self, action: KillAction, scope: KillScope, target: str | None, by: str, reason: str
    ) -> KillRecord:
        if scope not in _SCOPES:
            raise ConfigError(f"unknown kill-switch scope {scope!r}; use one of {list(_SCOPES)}")
        if scope == "global" and target is not None:
            raise ConfigError(f"the global kill switch takes no target; got {target!r}")
        if scope != "global" and not target:
            raise ConfigError(f"a {scope} kill switch needs a target: the {scope} to stop")
        if not by or not by.strip():
            raise ConfigError("a kill-switch change needs `by`: who made it (it goes in the audit log)")
        if action == "engage" and (not reason or not reason.strip()):
            raise ConfigError("engaging a kill switch needs a reason (it goes in the audit log)")
        if action == "engage":
            for kind, known in (("agent", self.known_agents), ("tool", self.known_tools)):
                if scope == kind and known is not None and target not in known:
                    raise ConfigError(
                        f"unknown {kind} {target!r}; known {kind}s: {sorted(known)}. Check the name "
                        f"(nothing was engaged)"
                    )
        return KillRecord(
            action=action, scope=scope, target=target, by=by, reason=reason, at=self._clock.now()
        )

    async def engage(
        self, scope: KillScope, target: str | None = None, *, by: str, reason: str
    ) -> KillRecord:
        """Stop `target` (or everything, for `global`). Engaging an engaged switch replaces its record.

        Returns:
            The record for the audit log.

        Raises:
            ConfigError: bad scope or target, an unknown agent or tool, or no `by`/`reason` (nothing changed).
            GovernanceUnavailable: a shared backend cannot be reached (nothing changed).
        """
        record = self._record("engage", scope, target, by, reason)
        await self._engage(record)
        return record

    async def release(
        self, scope: KillScope, target: str | None = None, *, by: str, reason: str = ""
    ) -> KillRecord:
        """Let `target` run again.

        Returns:
            The record for the audit log.

        Raises:
            ConfigError: no such switch is engaged (nothing changed; the message lists the engaged ones).
            GovernanceUnavailable: a shared backend cannot be reached (nothing changed).
        """
        record = self._record("release", scope, target, by, reason)
        if not await self._release(record):
            engaged = sorted(r.field for r in await self.active())
            raise ConfigError(
                f"no kill switch is engaged for {record.field!r}; engaged: {engaged or 'none'} "
                "(nothing changed)"
            )
        return record

    async def check(self, agent: str, tool: str | None = None, user: str | None = None) -> KillDecision:
        """Whether a step of `agent` (calling `tool`, for `user`) may go ahead.

        Raises:
            GovernanceUnavailable: a shared backend cannot be reached; treat the step as stopped.
        """
        fields = ["global", switch_field("agent", agent)]
        if tool is not None:
            fields.append(switch_field("tool", tool))
        if user is not None:
            fields.append(switch_field("user", user))
        engaged = await self._lookup(fields)
        if not engaged:
            return KillDecision(allowed=True, reason="no kill switch engaged")
        why = "; ".join(f"{r.field} engaged by {r.by!r}: {r.reason}" for r in engaged)
        return KillDecision(allowed=False, reason=f"stopped by kill switch: {why}", engaged=tuple(engaged))

    async def active(self) -> list[KillRecord]:
        """The engaged switches, by scope and target."""
        return sorted(await self._active(), key=lambda r: (r.scope, r.target or ""))

    async def history(self, limit: int = 100) -> list[KillRecord]:
        """The latest changes, oldest first."""
        return await self._history(limit)

    @abc.abstractmethod
    async def _engage(self, record: KillRecord) -> None:
        """Mark the switch engaged and append the record to the history, atomically."""

    @abc.abstractmethod
    async def _release(self, record: KillRecord) -> bool:
        """Clear the switch and append the record, atomically; False (and nothing done) if not engaged."""

    @abc.abstractmethod
    async def _lookup(self, fields: Sequence[str]) -> list[KillRecord]:
        """The engage records of those of `fields` that are engaged, in the order given."""

    @abc.abstractmethod
    async def _active(self) -> list[KillRecord]: ...

    @abc.abstractmethod
    async def _history(self, limit: int) -> list[KillRecord]: ...

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class InMemoryKillSwitch(KillSwitch):
    """Kill switches in this process (embedded use, tests): nothing survives a restart."""

    def __init__(
        self,
        *,
        known_agents: Collection[str] | None = None,
        known_tools: Collection[str] | None = None,
        clock: Clock | None = None,
    ):
        super().__init__(known_agents=known_agents, known_tools=known_tools, clock=clock)
        self._engaged: dict[str, KillRecord] = {}
        self._log: list[KillRecord] = []

    async def _engage(self, record: KillRecord) -> None:
        self._engaged[record.field] = record
        self._log.append(record)

    async def _release(self, record: KillRecord) -> bool:
        if self._engaged.pop(record.field, None) is None:
            return False
        self._log.append(record)
        return True

    async def _lookup(self, fields: Sequence[str]) -> list[KillRecord]:
        return [self._engaged[f] for f in fields if f in self._engaged]

    async def _active(self) -> list[KillRecord]:
        return list(self._engaged.values())

    async def _history(self, limit: int) -> list[KillRecord]:
        return self._log[-limit:] if limit > 0 else []
