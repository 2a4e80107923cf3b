"""`tether kill` and `tether unkill`: switch an agent, a tool, a user or everything off (and on again).

The switch lives in the governance file's shared backend (Redis or PostgreSQL), which every worker
checks before each step and each tool call: an engaged switch stops every matching run on every worker
before its next step. Each change is kept with who made it and why (`tether kill list`).
"""

from __future__ import annotations

import time
from typing import Any

import click

from ..agents import load_agent
from ..exceptions import ConfigError
from ..governance import GOVERNANCE_ENV, Governance, InMemoryKillSwitch, KillRecord, KillScope, KillSwitch
from ..journal import store_url
from ._main import (
    _emit_json,
    _fail,
    _governance,
    _open,
    _run_async,
    cli,
    governance_option,
    json_option,
    store_option,
)

__all__: list[str] = []

_KNOWN_AGENTS_SCANNED = 1000
"""How many of the newest runs are read to list the agents a store knows, for the unknown-agent error."""


def _selector(
    agent: str | None, tool: str | None, user: str | None, everything: bool
) -> tuple[KillScope, str | None]:
    chosen: list[tuple[KillScope, str | None]] = []
    if agent is not None:
        chosen.append(("agent", agent))
    if tool is not None:
        chosen.append(("tool", tool))
    if user is not None:
        chosen.append(("user", user))
    if everything:
        chosen.append(("global", None))
    if len(chosen) != 1:
        _fail("give exactly one of --agent NAME, --tool NAME, --user ID or --all (one switch per command)")
    scope, target = chosen[0]
    if target is not None and not target.strip():
        _fail(f"--{scope} needs a name; got an empty one")
    return scope, target


def _switch(governance: Governance | None, governance_file: str | None) -> KillSwitch:
    """The governance file's kill switch, if every worker can see it."""
    if governance is None:
        _fail(
            f"no governance file: pass --governance FILE or set {GOVERNANCE_ENV} (the file the workers run "
            "with; the kill switch lives in its backend)"
        )
    if governance.kill_switch is None:
        _fail(f"{governance_file} turns the kill switch off (kill_switch = false); remove that line")
    if isinstance(governance.kill_switch, InMemoryKillSwitch):
        _fail(
            f"{governance_file} keeps governance in memory, inside each process, so no worker would see a "
            'switch engaged here; set backend = "redis://HOST:PORT/DB" or "postgresql://USER@HOST/DB" '
            "in it, the same for the workers"
        )
    return governance.kill_switch


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _record_json(record: KillRecord) -> dict[str, Any]:
    return {**record.to_dict(), "switch": record.field}


async def _check_agent(name: str, store: str | None) -> None:
    """Refuse a switch for an agent no run in the store has: a typo must not look like a stopped agent."""
    s = _open(store)
    try:
        if await s.list_runs(agent=name, limit=1):
            return
        known = sorted({r.agent for r in await s.list_runs(limit=_KNOWN_AGENTS_SCANNED)})
    finally:
        await s.aclose()
    raise ConfigError(
        f"unknown agent {name!r}: no run in {store_url(store)} is of it (agents with runs there: "
        f"{known or 'none'}); check the name, name it by its definition with --agent-ref MODULE:AGENT, "
        "or pass --force to switch it off before its first run. Nothing was engaged"
    )


@cli.group(invoke_without_command=True)
@click.option("--agent", default=None, metavar="NAME", help="Stop every run of this agent.")
@click.option(
    "--agent-ref",
    default=None,
    metavar="MODULE:AGENT",
    help="Stop the agent this reference defines (its name is checked against the definition, not runs).",
)
@click.option("--tool", default=None, metavar="NAME", help="Block every call of this tool (runs go on).")
@click.option("--user", default=None, metavar="ID", help="Stop every run for this user.")
@click.option("--all", "everything", is_flag=True, help="Stop every run of every agent.")
@click.option(
    "--reason", default=None, help="Why (required; kept in the audit trail and in each run's reason)."
)
@click.option("--by", default=None, metavar="WHO", help="Who is switching it off (required; audited).")
@click.option("--force", is_flag=True, help="Engage a switch for an agent no run in the store has yet.")
@governance_option
@store_option
@json_option
@click.pass_context
def kill(
    ctx: click.Context,
    agent: str | None,
    agent_ref: str | None,
    tool: str | None,
    user: str | None,
    everything: bool,
    reason: str | None,
    by: str | None,
    force: bool,
    governance_file: str | None,
    store: str | None,
    as_json: bool,
) -> None:
    """Switch an agent, a tool, a user or everything off on every worker, before each run's next step.

    `tether kill list` shows the engaged switches and the history of changes.
    """
    if ctx.invoked_subcommand is not None:
        options = {"--agent": agent, "--agent-ref": agent_ref, "--tool": tool, "--user": user}
        given = [o for o, v in {**options, "--reason": reason, "--by": by}.items() if v is not None]
        if given or everything or force:
            _fail(f"`tether kill {ctx.invoked_subcommand}` takes no {', '.join(given) or 'switch options'}")
        return
    if agent_ref is not None:
        try:
            defined = load_agent(agent_ref)
        except ConfigError as exc:
            _fail(f"--agent-ref: {exc}")
        if agent is not None and agent != defined.name:
            _fail(
                f"--agent {agent!r} is not the agent {agent_ref} defines ({defined.name!r}); give one of them"
            )
        agent = defined.name
    scope, target = _selector(agent, tool, user, everything)
    if not by or not by.strip():
        _fail("--by is required: who is switching it off (it goes in the audit trail)")
    if not reason or not reason.strip():
        _fail("--reason is required: why (it goes in the audit trail and in each stopped run's reason)")

    async def go() -> KillRecord:
        governance = _governance(governance_file)
        try:
            switch = _switch(governance, governance_file)
            if scope == "agent" and agent_ref is None and not force:
                assert target is not None
                await _check_agent(target, store)
            return await switch.engage(scope, target, by=by, reason=reason)
        finally:
            if governance is not None:
                await governance.aclose()

    record = _run_async(go)
    if as_json:
        _emit_json({"engaged": _record_json(record)})
        return
    what = {
        "global": "every run",
        "agent": "every run of it",
        "tool": "every call of it",
        "user": "every run for them",
    }
    click.echo(f"kill switch engaged: {record.field} by {record.by}: {record.reason}")
    click.echo(
        f"{what[scope]} stops before its next step on every worker sharing {governance_file}; "
        f"release it with `tether unkill {_flag(record)} --by WHO`"
    )


def _flag(record: KillRecord) -> str:
    return "--all" if record.scope == "global" else f"--{record.scope} {record.target}"


@kill.command("list")
@click.option("--limit", default=50, show_default=True, help="The latest this many changes of the history.")
@governance_option
@json_option
def kill_list(limit: int, governance_file: str | None, as_json: bool) -> None:
    """The engaged kill switches, and the history of changes (who, when, why)."""

    async def go() -> tuple[list[KillRecord], list[KillRecord]]:
        governance = _governance(governance_file)
        try:
            switch = _switch(governance, governance_file)
            return await switch.active(), await switch.history(limit)
        finally:
            if governance is not None:
                await governance.aclose()

    active, history = _run_async(go)
    if as_json:
        _emit_json(
            {"active": [_record_json(r) for r in active], "history": [_record_json(r) for r in history]}
        )
        return
    if not active:
        click.echo("no kill switch is engaged")
    else:
        click.echo("engaged:")
        for r in active:
            click.echo(f"  {r.field:<24} since {_when(r.at)} by {r.by}: {r.reason}")
    if history:
        click.echo(f"history (latest {len(history)}, oldest first):")
        for r in history:
            why = f": {r.reason}" if r.reason else ""
            click.echo(f"  {_when(r.at)}  {r.action:<7}  {r.field:<24} by {r.by}{why}")


@cli.command()
@click.option("--agent", default=None, metavar="NAME", help="Let this agent's runs go on.")
@click.option("--tool", default=None, metavar="NAME", help="Let this tool be called again.")
@click.option("--user", default=None, metavar="ID", help="Let this user's runs go on.")
@click.option("--all", "everything", is_flag=True, help="Release the global switch.")
@click.option("--reason", default="", help="Why (kept in the audit trail).")
@click.option("--by", default=None, metavar="WHO", help="Who is switching it on again (required; audited).")
@governance_option
@json_option
def unkill(
    agent: str | None,
    tool: str | None,
    user: str | None,
    everything: bool,
    reason: str,
    by: str | None,
    governance_file: str | None,
    as_json: bool,
) -> None:
    """Release a kill switch: new runs of what it stopped go on (stopped runs stay cancelled)."""
    scope, target = _selector(agent, tool, user, everything)
    if not by or not by.strip():
        _fail("--by is required: who is switching it on again (it goes in the audit trail)")

    async def go() -> KillRecord:
        governance = _governance(governance_file)
        try:
            return await _switch(governance, governance_file).release(scope, target, by=by, reason=reason)
        finally:
            if governance is not None:
                await governance.aclose()

    record = _run_async(go)
    if as_json:
        _emit_json({"released": _record_json(record)})
    else:
        click.echo(f"kill switch released: {record.field} by {record.by}")
