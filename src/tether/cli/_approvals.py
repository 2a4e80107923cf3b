"""`tether approvals list|show|approve|reject` and `tether audit overrides`."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from ..agents import Agent, RunResult, load_agent
from ..approvals import ApprovalError, ApprovalRequest, Approvals, load_policy
from ..exceptions import ConfigError, TetherError
from ..journal import Store
from ..runtime import Runner
from ._display import render_result, short
from ._governance import audit
from ._main import (
    _emit_json,
    _exit_for,
    _fail,
    _open,
    _result_json,
    _run_async,
    cli,
    json_option,
    store_option,
)
from ._workers import parse_duration

__all__: list[str] = []

POLICY_ENV = "TETHER_POLICY"

policy_option = click.option(
    "--policy",
    "policy_file",
    envvar=POLICY_ENV,
    default=None,
    metavar="FILE",
    help="An approval policy TOML file whose [roster] says who may decide for each group "
    f"(env {POLICY_ENV}; default: the roster of the run's agent's policy, if it has one).",
)


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


def _roster(policy_file: str | None, agent: Agent | None) -> dict[str, Any] | None:
    if policy_file:
        return dict(load_policy(policy_file).roster) or None
    roster = getattr(getattr(agent, "policy", None), "roster", None)
    return dict(roster) if roster else None


def _agent_of(ref: str | None, agent_ref: str | None) -> Agent | None:
    """The run's agent (for its policy's roster and its tools' schemas), or None when not importable."""
    target = agent_ref or ref
    if target is None:
        return None
    try:
        return load_agent(target)
    except TetherError:
        if agent_ref:
            raise  # asked for explicitly: say why it failed
        return None


@cli.group()
def approvals() -> None:
    """List, show and decide the tool calls waiting for a human."""


@approvals.command("list")
@click.option("--all", "show_all", is_flag=True, help="Every request, decided ones too (reads every run).")
@click.option(
    "--status",
    type=click.Choice(["pending", "approved", "edited", "rejected", "expired", "overdue", "closed"]),
    default=None,
    help="Only requests with this status (default: pending and overdue).",
)
@click.option("--approvers", default=None, metavar="GROUP", help="Only requests for this approver group.")
@click.option("--agent", default=None, help="Only runs of this agent.")
@store_option
@json_option
def approvals_list(
    show_all: bool,
    status: str | None,
    approvers: str | None,
    agent: str | None,
    store: str | None,
    as_json: bool,
) -> None:
    """The requests waiting for a decision, oldest first."""

    async def go() -> list[ApprovalRequest]:
        s = _open(store)
        try:
            wanted: Any = None if show_all else (status or "pending")
            return await Approvals(s).list(status=wanted, approvers=approvers, agent=agent)
        finally:
            await s.aclose()

    found = _run_async(go)
    if as_json:
        _emit_json([r.to_dict() for r in found])
        return
    console = Console(highlight=False)
    if not found:
        console.print("no approval requests" + ("" if show_all else " waiting"))
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    table.add_column("request id", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("agent", no_wrap=True)
    table.add_column("call", overflow="ellipsis")
    table.add_column("risk", no_wrap=True)
    table.add_column("for", no_wrap=True)
    table.add_column("deadline (UTC)", no_wrap=True)
    for r in found:
        q = r.request
        table.add_row(
            r.request_id,
            r.status,
            r.agent,
            f"{q.tool}({short(q.arguments, 60)})",
            q.risk,
            q.approvers,
            _utc(q.deadline_at),
        )
    console.print(table)


def _show(console: Console, found: ApprovalRequest) -> None:
    q = found.request
    console.print(f"[bold]approval {q.request_id}[/] · {found.status}")
    lines = [
        (
            "run",
            f"{found.run_id} (agent {found.agent}" + (f", user {found.user_id})" if found.user_id else ")"),
        ),
        ("call", f"{q.tool}({json.dumps(q.arguments, ensure_ascii=False)})"),
        ("kind", "did this in-doubt call take effect?" if q.kind == "in_doubt" else "policy"),
        ("risk", f"{q.risk} · {'reversible' if q.reversible else 'irreversible'}"),
        ("confidence", "unknown" if q.confidence is None else f"{q.confidence:.2f}"),
        ("reason", q.reason),
        ("mode", "the caller waits (sync)" if q.mode == "sync" else "the run is suspended (async)"),
        ("approvers", q.approvers),
        ("requested", f"{_utc(q.at)} UTC"),
        (
            "deadline",
            f"{_utc(q.deadline_at)} UTC, then {q.on_expiry}"
            + (f" to {q.escalate_to}" if q.on_expiry == "escalate" and q.escalate_to else ""),
        ),
    ]
    if q.escalated_from:
        lines.append(("escalated from", q.escalated_from))
    d = found.decision
    if d is not None:
        edit = f" to {json.dumps(d.arguments, ensure_ascii=False)}" if d.arguments is not None else ""
        lines.append(
            (
                "decision",
                f"{d.decision}{edit} by {d.by} at {_utc(d.at)} UTC" + (f": {d.reason}" if d.reason else ""),
            )
        )
    for label, value in lines:
        console.print(f"  [dim]{label:<15}[/] {escape(value)}")


@approvals.command("show")
@click.argument("request_id")
@store_option
@json_option
def approvals_show(request_id: str, store: str | None, as_json: bool) -> None:
    """One request: the call, its tier, confidence, reversibility, reason, deadline and decision."""

    async def go() -> ApprovalRequest:
        s = _open(store)
        try:
            return await Approvals(s).get(request_id)
        finally:
            await s.aclose()

    found = _run_async(go)
    if as_json:
        _emit_json(found.to_dict())
    else:
        _show(Console(highlight=False), found)


async def _decide_and_maybe_resume(
    s: Store,
    request_id: str,
    *,
    decide: str,
    by: str,
    reason: str,
    edit: str | None,
    policy_file: str | None,
    agent_ref: str | None,
    resume: bool,
) -> tuple[dict[str, Any], RunResult | None]:
    approvals_api = Approvals(s)
    found = await approvals_api.get(request_id)
    info = await s.get_run(found.run_id)
    agent = _agent_of(info.agent_ref, agent_ref)
    approvals_api = Approvals(s, roster=_roster(policy_file, agent))
    if decide == "approve":
        arguments = None
        validate = None
        if edit is not None:
            try:
                arguments = json.loads(edit)
            except json.JSONDecodeError as exc:
                raise ApprovalError(
                    f"--edit is not JSON ({exc.msg} at column {exc.colno}); nothing was decided"
                ) from None
            if not isinstance(arguments, dict):
                raise ApprovalError(
                    "--edit must be a JSON object of the tool's arguments; nothing was decided"
                )
            tool = agent.tools.get(found.request.tool) if agent is not None else None
            if tool is None:
                raise ApprovalError(
                    f"cannot check the edited arguments: the run's agent ({info.agent_ref or info.agent}) cannot be "
                    "imported here; pass --agent MODULE:AGENT. Nothing was decided"
                )
            validate = tool.validate
        event = await approvals_api.approve(
            request_id, by=by, reason=reason, arguments=arguments, validate=validate
        )
    else:
        event = await approvals_api.reject(request_id, by=by, reason=reason)
    decided = {"request_id": request_id, "run_id": found.run_id, **event.model_dump(mode="json")}
    if not resume:
        return decided, None
    if agent is None:
        raise ConfigError(
            f"the decision is recorded, but run {found.run_id} cannot be resumed here: its agent "
            f"({info.agent_ref or info.agent}) cannot be imported; pass --agent MODULE:AGENT or let a worker resume it"
        )
    # take the run so that no worker resumes it at the same time; hand it back when done
    lease = await s.seize(found.run_id, f"cli-{os.getpid()}", lease_s=agent.limits.timeout_s + 60)
    try:
        result = await Runner(s).resume(found.run_id, agent, lease=lease)
    finally:
        await s.release(lease)
    return decided, result


def _decision_command(
    decide: str,
    by: str,
    reason: str,
    edit: str | None,
    request_id: str,
    store: str | None,
    policy_file: str | None,
    agent_ref: str | None,
    resume: bool,
    as_json: bool,
) -> None:
    async def go() -> tuple[dict[str, Any], RunResult | None]:
        s = _open(store)
        try:
            return await _decide_and_maybe_resume(
                s,
                request_id,
                decide=decide,
                by=by,
                reason=reason,
                edit=edit,
                policy_file=policy_file,
                agent_ref=agent_ref,
                resume=resume,
            )
        finally:
            await s.aclose()

    decided, result = _run_async(go)
    if as_json:
        _emit_json({"decision": decided, "run": _result_json(result) if result is not None else None})
    else:
        console = Console(highlight=False)
        console.print(f"[bold]{request_id}[/] {decided['decision']} by {escape(by)}")
        if result is not None:
            render_result(console, result, result.duration_s)
        else:
            console.print(
                f"run {decided['run_id']} is ready: a worker resumes it, or `tether runs resume {decided['run_id']}`"
            )
    if result is not None:
        _exit_for(result)


resume_option = click.option(
    "--resume",
    is_flag=True,
    help="Then carry the run on in this process (instead of leaving it to a worker).",
)
agent_option = click.option(
    "--agent",
    "agent_ref",
    default=None,
    metavar="MODULE:AGENT",
    help="The run's agent, when the one it recorded cannot be imported here.",
)


@approvals.command("approve")
@click.argument("request_id")
@click.option("--by", required=True, help="Who decides (recorded; checked against the roster).")
@click.option("--reason", default="", help="Why (recorded in the journal and the audit log).")
@click.option("--edit", default=None, metavar="JSON", help="Edit-then-approve: run these arguments instead.")
@policy_option
@agent_option
@resume_option
@store_option
@json_option
def approvals_approve(
    request_id: str,
    by: str,
    reason: str,
    edit: str | None,
    policy_file: str | None,
    agent_ref: str | None,
    resume: bool,
    store: str | None,
    as_json: bool,
) -> None:
    """Approve a request (with --edit, the edited arguments run; both are journaled)."""
    _decision_command("approve", by, reason, edit, request_id, store, policy_file, agent_ref, resume, as_json)


@approvals.command("reject")
@click.argument("request_id")
@click.option("--by", required=True, help="Who decides (recorded; checked against the roster).")
@click.option("--reason", required=True, help="Why: it goes back to the model and into the audit log.")
@policy_option
@agent_option
@resume_option
@store_option
@json_option
def approvals_reject(
    request_id: str,
    by: str,
    reason: str,
    policy_file: str | None,
    agent_ref: str | None,
    resume: bool,
    store: str | None,
    as_json: bool,
) -> None:
    """Reject a request; the model is told who rejected it and why."""
    _decision_command("reject", by, reason, None, request_id, store, policy_file, agent_ref, resume, as_json)


@audit.command("overrides")
@click.option("--agent", default=None, help="Only runs of this agent.")
@click.option("--since", default=None, metavar="DURATION", help="Only decisions in the last 7d, 12h, ...")
@store_option
@json_option
def audit_overrides(agent: str | None, since: str | None, store: str | None, as_json: bool) -> None:
    """How often humans rejected or edited what agents proposed, per agent, tool and approver."""
    try:
        after = time.time() - parse_duration(since) if since else None
    except (click.BadParameter, ValueError) as exc:
        _fail(str(exc))

    async def go() -> list[Any]:
        s = _open(store)
        try:
            return await Approvals(s).overrides(agent=agent, since=after)
        finally:
            await s.aclose()

    rows = _run_async(go)
    if as_json:
        _emit_json([r.to_dict() for r in rows])
        return
    console = Console(highlight=False)
    if not rows:
        console.print("no human decisions recorded")
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for name, justify in (
        ("agent", "left"),
        ("tool", "left"),
        ("approver", "left"),
        ("decided", "right"),
        ("approved", "right"),
        ("edited", "right"),
        ("rejected", "right"),
        ("override rate", "right"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(
            r.agent,
            r.tool,
            r.approver,
            str(r.decided),
            str(r.approved),
            str(r.edited),
            str(r.rejected),
            f"{r.override_rate:.0%}",
        )
    console.print(table)
