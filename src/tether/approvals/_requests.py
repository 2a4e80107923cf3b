"""Approval requests and decisions, read from and written to run journals.

A request is the `ApprovalRequested` event a run wrote when its policy asked a human; its id is
`<run id>.<seq>` (the run, and the event's place in the journal), so it is found without an index.
A decision is an `ApprovalDecided` event appended to the same journal: the run picks it up when it is
resumed (a worker claims it as soon as it is decided), or at once when its caller is waiting
(synchronous requests). Nothing else holds state: 10,000 waiting runs are 10,000 rows.

This is the Python API behind `tether approvals ...` and the service's approval endpoints.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .._clock import Clock, SystemClock
from ..exceptions import ConfigError, JournalConflict, RunNotFound, TetherError
from ..journal import ApprovalDecided, ApprovalRequested, Event, RunFinished, Store, ToolStarted

__all__ = ["ApprovalError", "ApprovalRequest", "Approvals", "OverrideRow", "RequestStatus"]

RequestStatus = Literal["pending", "approved", "rejected", "edited", "expired", "overdue", "closed"]


class ApprovalError(TetherError):
    """A decision that cannot be taken (unknown or decided request, a user who may not decide, bad edit).
    Nothing was written."""


@dataclass(frozen=True, kw_only=True)
class ApprovalRequest:
    """One request, with what became of it.

    Attributes:
        status: `pending` (waiting, before its deadline), `overdue` (past its deadline; the expiry
            action applies when the run is next resumed), `approved`, `edited`, `rejected`, `expired`,
            or `closed` (the run finished without it being decided).
        decision: the decision event, when there is one.
    """

    request: ApprovalRequested
    run_id: str
    agent: str
    user_id: str | None
    status: RequestStatus
    decision: ApprovalDecided | None = None

    @property
    def request_id(self) -> str:
        return self.request.request_id

    def to_dict(self) -> dict[str, Any]:
        r = self.request
        out: dict[str, Any] = {
            "request_id": r.request_id,
            "run_id": self.run_id,
            "agent": self.agent,
            "user_id": self.user_id,
            "status": self.status,
            "kind": r.kind,
            "mode": r.mode,
            "tool": r.tool,
            "arguments": r.arguments,
            "risk": r.risk,
            "reversible": r.reversible,
            "confidence": r.confidence,
            "reason": r.reason,
            "approvers": r.approvers,
            "requested_at": r.at,
            "deadline_at": r.deadline_at,
            "on_expiry": r.on_expiry,
            "escalate_to": r.escalate_to,
            "escalated_from": r.escalated_from,
        }
        if self.decision is not None:
            d = self.decision
            out["decision"] = {
                "decision": d.decision,
                "by": d.by,
                "reason": d.reason,
                "at": d.at,
                "arguments": d.arguments,
                "on_expiry": d.on_expiry,
            }
        return out


@dataclass(frozen=True, kw_only=True)
class OverrideRow:
    """How often humans overrode what an agent proposed, for one (agent, tool, approver)."""

    agent: str
    tool: str
    approver: str
    decided: int
    approved: int
    edited: int
    rejected: int

    @property
    def override_rate(self) -> float:
        """Share of decisions that rejected or edited the proposed call."""
        return (self.edited + self.rejected) / self.decided if self.decided else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "tool": self.tool,
            "approver": self.approver,
            "decided": self.decided,
            "approved": self.approved,
            "edited": self.edited,
            "rejected": self.rejected,
            "override_rate": round(self.override_rate, 4),
        }


def _run_of(request_id: str) -> str:
    run_id, dot, seq = request_id.rpartition(".")
    if not dot or not run_id or not seq.isdigit():
        raise ApprovalError(
            f"{request_id!r} is not an approval request id; ids look like RUN_ID.SEQ "
            "(`tether approvals list` shows them)"
        )
    return run_id


def _requests_in(
    events: list[Event], run_id: str, agent: str, user_id: str | None, now: float
) -> list[ApprovalRequest]:
    decisions = {ev.request_id: ev for ev in events if isinstance(ev, ApprovalDecided)}
    finished = any(isinstance(ev, RunFinished) for ev in events)
    found = []
    for ev in events:
        if not isinstance(ev, ApprovalRequested):
            continue
        decision = decisions.get(ev.request_id)
        status: RequestStatus
        if decision is not None:
            status = decision.decision
        elif finished:
            status = "closed"
        elif now >= ev.deadline_at:
            status = "overdue"
        else:
            status = "pending"
        found.append(
            ApprovalRequest(
                request=ev, run_id=run_id, agent=agent, user_id=user_id, status=status, decision=decision
            )
        )
    return found


class Approvals:
    """Lists, shows and decides approval requests in a store.

    Args:
        store: the runs' store.
        clock: the time source (a `FakeClock` in tests): decides what is past its deadline.
        roster: who may decide for each approver group (`{"finance": ["ana", "bo"]}`). A request whose
            group is in the roster may be decided only by its members; None (or a group that is not in
            it) accepts anyone — fine for development, not for production.
    """

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock | None = None,
        roster: Mapping[str, Any] | None = None,
    ):
        self.store = store
        self.clock = clock or SystemClock()
        self.roster = {group: frozenset(members) for group, members in (roster or {}).items()}

    async def get(self, request_id: str) -> ApprovalRequest:
        """One request and what became of it.

        Raises:
            ApprovalError: no such request.
        """
        run_id = _run_of(request_id)
        try:
            stored = await self.store.load(run_id)
        except RunNotFound:
            raise ApprovalError(
                f"no approval request {request_id!r}: run {run_id!r} does not exist in {self.store!r}"
            ) from None
        events = [s.event for s in stored]
        info = await self.store.get_run(run_id)
        for found in _requests_in(events, run_id, info.agent, info.user_id, self.clock.now()):
            if found.request_id == request_id:
                return found
        raise ApprovalError(
            f"no approval request {request_id!r}: run {run_id!r} has no such request "
            "(`tether approvals list --all` shows every request)"
        )

    async def list(
        self,
        *,
        status: RequestStatus | None = "pending",
        approvers: str | None = None,
        agent: str | None = None,
        limit: int = 200,
    ) -> list[ApprovalRequest]:
        """Requests, oldest first. By default the ones waiting for a decision (pending and overdue).

        Args:
            status: only requests with this status; None: all of them (every run is read: slower).
            approvers: only requests for this group.
            agent: only runs of this agent.
        """
        now = self.clock.now()
        if status in ("pending", "overdue"):
            # waiting runs only: a suspended run, or one whose caller waits (status stays suspended)
            runs = await self.store.list_runs(status="suspended", agent=agent, limit=10_000)
        else:
            runs = await self.store.list_runs(agent=agent, limit=10_000)
        found: list[ApprovalRequest] = []
        for info in runs:
            events = [s.event for s in await self.store.load(info.run_id)]
            for req in _requests_in(events, info.run_id, info.agent, info.user_id, now):
                if status == "pending" and req.status not in ("pending", "overdue"):
                    continue
                if status not in (None, "pending") and req.status != status:
                    continue
                if approvers is not None and req.request.approvers != approvers:
                    continue
                found.append(req)
        found.sort(key=lambda r: r.request.at)
        return found[:limit]

    async def approve(
        self,
        request_id: str,
        *,
        by: str,
        reason: str = "",
        arguments: Mapping[str, Any] | None = None,
        validate: Callable[[dict[str, Any]], Any] | None = None,
    ) -> ApprovalDecided:
        """Approve a request; with `arguments`, edit the call and approve the edited one.

        Args:
            by: who decides (checked against the roster).
            arguments: edit-then-approve: these arguments run instead of the proposed ones (both are
                journaled).
            validate: checks edited arguments against the tool's schema (`tool.validate`); raises on bad
                arguments. The CLI passes the tool of the run's agent.

        Raises:
            ApprovalError: unknown or already decided request, past its deadline, `by` may not decide,
                or the edited arguments do not fit the tool. Nothing is written then.
        """
        edited = None
        if arguments is not None:
            if not isinstance(arguments, Mapping):
                raise ApprovalError(f"edited arguments must be a JSON object; got {type(arguments).__name__}")
            edited = dict(arguments)
            if validate is not None:
                try:
                    validate(edited)
                except (ConfigError, TetherError, ValueError, TypeError) as exc:
                    raise ApprovalError(
                        f"the edited arguments do not fit the tool, so nothing was decided: {exc}"
                    ) from None
        return await self._decide(
            request_id, "edited" if edited is not None else "approved", by=by, reason=reason, arguments=edited
        )

    async def reject(self, request_id: str, *, by: str, reason: str) -> ApprovalDecided:
        """Reject a request; the reason goes back to the model (for an in-doubt call: it took effect).

        Raises:
            ApprovalError: as for `approve`, or an empty reason.
        """
        if not reason.strip():
            raise ApprovalError("a rejection needs a reason: the model (and the audit log) are told why")
        return await self._decide(request_id, "rejected", by=by, reason=reason, arguments=None)

    async def _decide(
        self,
        request_id: str,
        decision: Literal["approved", "rejected", "edited"],
        *,
        by: str,
        reason: str,
        arguments: dict[str, Any] | None,
    ) -> ApprovalDecided:
        if not by or not by.strip():
            raise ApprovalError("say who decides (--by NAME): every decision is recorded with who took it")
        for _ in range(5):  # the run may append meanwhile (a caller waiting on it): read again and retry
            found = await self.get(request_id)
            self._check(found, by)
            req = found.request
            event = ApprovalDecided(
                at=self.clock.now(),
                request_id=request_id,
                call_id=req.call_id,
                tool=req.tool,
                decision=decision,
                by=by,
                reason=reason,
                args_hash=req.args_hash,
                arguments=arguments,
            )
            seq = (await self.store.get_run(found.run_id)).event_count
            try:
                await self.store.append(found.run_id, [event], expected_seq=seq)
            except JournalConflict:
                continue
            return event
        raise ApprovalError(f"run {found.run_id!r} kept changing while deciding {request_id!r}; try again")

    def _check(self, found: ApprovalRequest, by: str) -> None:
        req = found.request
        if found.status in ("approved", "edited", "rejected", "expired"):
            d = found.decision
            assert d is not None
            raise ApprovalError(
                f"approval {req.request_id} was already decided: {d.decision} by {d.by}; a decision is final "
                "(fork the run to try another: `tether runs fork`)"
            )
        if found.status == "closed":
            raise ApprovalError(
                f"approval {req.request_id} is closed: its run finished without it being decided"
            )
        if found.status == "overdue":
            raise ApprovalError(
                f"approval {req.request_id} passed its deadline with no decision; its expiry action "
                f"({req.on_expiry}) applies when the run is next resumed "
                f"(`tether runs resume {found.run_id}`)"
            )
        members = self.roster.get(req.approvers)
        if members is not None and by not in members:
            raise ApprovalError(
                f"{by!r} may not decide approval {req.request_id}: it is for group {req.approvers!r} "
                f"({', '.join(sorted(members)) or 'nobody'})"
            )

    async def overrides(self, *, agent: str | None = None, since: float | None = None) -> list[OverrideRow]:
        """How often humans approved, edited or rejected calls, per agent, tool and approver.

        Expired requests are not counted (no human decided). Sorted by override rate, highest first.
        """
        counts: dict[tuple[str, str, str], Counter[str]] = {}
        for info in await self.store.list_runs(agent=agent, limit=1_000_000):
            events = [s.event for s in await self.store.load(info.run_id)]
            for ev in events:
                if not isinstance(ev, ApprovalDecided) or ev.decision == "expired":
                    continue
                if since is not None and ev.at < since:
                    continue
                counts.setdefault((info.agent, ev.tool, ev.by), Counter())[ev.decision] += 1
        rows = [
            OverrideRow(
                agent=a,
                tool=t,
                approver=b,
                decided=sum(c.values()),
                approved=c["approved"],
                edited=c["edited"],
                rejected=c["rejected"],
            )
            for (a, t, b), c in counts.items()
        ]
        rows.sort(key=lambda r: (-r.override_rate, -r.decided, r.agent, r.tool, r.approver))
        return rows


def flagged_calls(events: list[Event]) -> list[ToolStarted]:
    """The calls a policy ran but flagged for the audit log (`medium` risk by default)."""
    return [ev for ev in events if isinstance(ev, ToolStarted) and ev.policy == "flag"]
