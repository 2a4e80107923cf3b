"""`tether worker` and the commands on queued and past runs: cancel, prune, replay, fork."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from ..agents import Agent, RunResult, load_agent
from ..exceptions import ConfigError
from ..journal import TERMINAL_STATUSES, RunInfo, Store, store_url
from ..runtime import RunState, fork, replay
from ..telemetry import configure_logging
from ..workers import Worker, cancel
from ._display import short
from ._main import (
    _drive,
    _emit_json,
    _exit_for,
    _fail,
    _governance,
    _open,
    _run_async,
    cli,
    governance_option,
    json_option,
    runs,
    store_option,
)

__all__: list[str] = []

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """`30d`, `12h`, `1w2d`, `90s` -> seconds."""
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise click.BadParameter(f"{text!r} is not a duration; write it like 30d, 12h, 45m, 90s or 1w2d")
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


# -- tether worker ------------------------------------------------------------------------------------


@cli.command()
@store_option
@click.option(
    "--concurrency", "-c", default=4, show_default=True, help="Runs driven at once by this process."
)
@click.option(
    "--lease-s",
    default=30.0,
    show_default=True,
    help="Seconds a claim holds a run between heartbeats; a dead worker's runs move after at most this.",
)
@click.option("--poll-s", default=0.5, show_default=True, help="Seconds an idle worker waits between looks.")
@click.option(
    "--worker-id", default=None, help="This worker's name in leases and logs (default host:pid:random)."
)
@click.option(
    "--max-attempts",
    default=5,
    show_default=True,
    help="Tries this worker gives a run it cannot get past (an unreadable journal) before ending it failed.",
)
@governance_option
@json_option
@click.pass_context
def worker(
    ctx: click.Context,
    store: str | None,
    concurrency: int,
    lease_s: float,
    poll_s: float,
    worker_id: str | None,
    max_attempts: int,
    governance_file: str | None,
    as_json: bool,
) -> None:
    """Claim queued runs and run them until SIGTERM or SIGINT (which drain: each run finishes its step)."""
    parent = ctx.parent
    chosen = (
        parent is not None and parent.get_parameter_source("log_level") != click.core.ParameterSource.DEFAULT
    )
    if not chosen:
        # a worker is a service: its claims, takeovers and store outages are what its operator reads
        configure_logging("info")

    async def go() -> dict[str, Any]:
        # every worker sharing the file's backend enforces one set of budgets, rate limits and switches
        governance = _governance(governance_file)
        s = _open(store)
        try:
            w = Worker(
                s,
                concurrency=concurrency,
                lease_s=lease_s,
                poll_s=poll_s,
                worker_id=worker_id,
                governance=governance,
                max_attempts=max_attempts,
            )
            governed = f"; governed by {governance_file}" if governance is not None else ""
            click.echo(
                f"worker {w.worker_id}: {concurrency} at a time from {store_url(store)} "
                f"(lease {lease_s:g}s{governed}); SIGTERM or Ctrl-C drains",
                err=True,
            )
            stats = await w.run(handle_signals=True)
        finally:
            await s.aclose()
            if governance is not None:
                await governance.aclose()
        return {"worker_id": w.worker_id, **vars(stats)}

    result = _run_async(go)
    if as_json:
        _emit_json(result)
    else:
        click.echo(
            f"worker stopped: claimed {result['claimed']}, finished {result['finished']}, handed back "
            f"{result['handed_back']}, taken over {result['lost']}, errors {result['errors']}",
            err=True,
        )


# -- tether runs cancel ---------------------------------------------------------------------------------


@runs.command("cancel")
@click.argument("run_id")
@click.option(
    "--reason", default="cancelled by an operator", show_default=True, help="Recorded in the journal."
)
@store_option
@json_option
def runs_cancel(run_id: str, reason: str, store: str | None, as_json: bool) -> None:
    """End a run as cancelled: queued, running on a worker (it stops at its next write) or stopped."""

    async def go() -> tuple[RunInfo, bool]:
        s = _open(store)
        try:
            before = await s.get_run(run_id)
            return await cancel(s, run_id, reason=reason), before.terminal
        finally:
            await s.aclose()

    info, was_over = _run_async(go)
    if as_json:
        _emit_json(
            {"run_id": run_id, "status": info.status, "cancelled": not was_over, "reason": info.reason}
        )
    elif was_over:
        click.echo(f"run {run_id} had already ended ({info.status}); nothing changed")
    else:
        click.echo(f"run {run_id} cancelled")


# -- tether runs prune ---------------------------------------------------------------------------------


@runs.command("prune")
@click.option("--older-than", "older_than", required=True, help="Last event older than this: 30d, 12h, 1w.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    default=("completed",),
    show_default=True,
    help="Prune runs that ended with this status (repeat for several).",
)
@click.option(
    "--archive",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Append each run (summary and journal, one JSON object per line) here before deleting it.",
)
@click.option("--dry-run", is_flag=True, help="List what would be pruned; change nothing.")
@store_option
@json_option
def runs_prune(
    older_than: str,
    statuses: tuple[str, ...],
    archive: Path | None,
    dry_run: bool,
    store: str | None,
    as_json: bool,
) -> None:
    """Delete finished runs older than a cutoff, optionally archiving their journals to JSONL first."""
    age_s = parse_duration(older_than)
    unknown = sorted(set(statuses) - TERMINAL_STATUSES)
    if unknown:
        _fail(
            f"--status {', '.join(unknown)}: only finished runs can be pruned "
            f"({', '.join(sorted(TERMINAL_STATUSES))})"
        )
    before = time.time() - age_s

    async def go() -> list[str]:
        s = _open(store)
        try:
            if dry_run:
                found: list[str] = []
                for status in sorted(set(statuses)):
                    found += [
                        r.run_id for r in await s.list_runs(status=status, updated_before=before, limit=10**9)
                    ]
                return found
            if archive is None:
                return await s.prune(before=before, statuses=statuses)
            return await _archive_and_delete(s, archive, before, statuses)
        finally:
            await s.aclose()

    pruned = _run_async(go)
    if as_json:
        _emit_json(
            {
                "pruned": [] if dry_run else pruned,
                "would_prune": pruned if dry_run else [],
                "count": len(pruned),
                "before": before,
                "archive": None if archive is None else str(archive),
            }
        )
    else:
        verb = "would prune" if dry_run else "pruned"
        where = f" (archived to {archive})" if archive is not None and not dry_run else ""
        click.echo(f"{verb} {len(pruned)} runs{where}")


async def _archive_and_delete(
    store: Store, path: Path, before: float, statuses: tuple[str, ...]
) -> list[str]:
    """Archive, then delete, a batch at a time: a run is deleted only once its archive line is on disk."""
    deleted: list[str] = []
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        for status in sorted(set(statuses)):
            while True:
                batch = await store.list_runs(status=status, updated_before=before, limit=200)
                if not batch:
                    break
                for info in batch:
                    events = await store.load(info.run_id)
                    record = {
                        "run": info.model_dump(mode="json"),
                        "events": [
                            {"seq": e.seq, "hash": e.hash, "event": e.event.model_dump(mode="json")}
                            for e in events
                        ],
                    }
                    out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
                out.flush()
                os.fsync(out.fileno())
                for info in batch:
                    await store.delete(info.run_id)
                    deleted.append(info.run_id)
    return deleted


# -- tether runs replay ---------------------------------------------------------------------------------


@runs.command("replay")
@click.argument("run_id")
@click.option("--until", "until", type=int, default=None, help="The last event to apply (default: all).")
@store_option
@json_option
def runs_replay(run_id: str, until: int | None, store: str | None, as_json: bool) -> None:
    """Rebuild and print a run's state at event N: its messages, step, usage and calls without outcome."""

    async def go() -> RunState:
        s = _open(store)
        try:
            return await replay(s, run_id, until=until)
        finally:
            await s.aclose()

    state = _run_async(go)
    if as_json:
        _emit_json(state.to_json())
        return
    console = Console(highlight=False)
    status = state.finished.status if state.finished is not None else "unfinished"
    console.print(
        f"[bold]{run_id}[/] at event {state.seq} of {state.events - 1}: step {state.step}, "
        f"{state.usage.input_tokens} in / {state.usage.output_tokens} out tokens, {status}"
    )
    for message in state.to_json()["messages"]:
        role = message["role"]
        if role == "assistant" and message.get("tool_calls"):
            calls = ", ".join(f"{c['name']}({json.dumps(c['arguments'])})" for c in message["tool_calls"])
            text = (message.get("content") or "") + f" → {calls}"
        else:
            text = message.get("content") or ""
        console.print(f"  [dim]{role:>9}[/]  {short(text.strip())}", soft_wrap=True)
    if state.outstanding:
        console.print("  outstanding: " + ", ".join(f"{c.name} ({c.call_id})" for c in state.outstanding))
    if state.in_doubt:
        console.print("  in doubt (started, no outcome): " + ", ".join(state.in_doubt))


# -- tether runs fork -----------------------------------------------------------------------------------


def _with_model(agent: Agent, model: str) -> Agent:
    """The same agent on another model (its tools, instructions, limits and settings unchanged)."""
    return Agent(
        agent.name,
        instructions=agent.instructions,
        tools=list(agent.tools.values()),
        model=model,
        limits=agent.limits,
        settings=agent.settings,
        ref=agent.ref,
        grounding=agent.grounding,
    )


@runs.command("fork")
@click.argument("run_id")
@click.option("--at", "at", type=int, required=True, help="The last event of RUN_ID the new run starts with.")
@click.option("--input", "-i", "input_text", default=None, help="Replace the user's input in the new run.")
@click.option("--model", default=None, help="Continue the new run on this model string.")
@click.option(
    "--agent",
    "agent_ref",
    default=None,
    metavar="MODULE:AGENT",
    help="Continue with this agent instead of the one the run recorded.",
)
@click.option("--detach", is_flag=True, help="Queue the new run for workers; print its id and exit.")
@store_option
@json_option
def runs_fork(
    run_id: str,
    at: int,
    input_text: str | None,
    model: str | None,
    agent_ref: str | None,
    detach: bool,
    store: str | None,
    as_json: bool,
) -> None:
    """Start a new run from event N of RUN_ID (recorded steps up to N are reused, not repeated)."""
    if detach and (model or agent_ref):
        _fail(
            "--detach queues the fork for workers, which run the agent the run recorded on its own model; "
            "drop --detach to run the fork here with --model or --agent"
        )

    if detach:

        async def queue() -> str:
            s = _open(store)
            try:
                return await fork(s, run_id, at=at, input=input_text, queue=True)
            finally:
                await s.aclose()

        new_id = _run_async(queue)
        if as_json:
            _emit_json({"run_id": new_id, "forked_from": run_id, "at": at, "status": "pending"})
        else:
            click.echo(new_id)
        return

    async def go() -> RunResult:
        s = _open(store)
        try:
            new_id = await fork(s, run_id, at=at, input=input_text, model=model)
            agent = load_agent(agent_ref) if agent_ref else None
            if agent is None:
                ref = (await s.get_run(new_id)).agent_ref
                if ref is None:
                    raise ConfigError(
                        f"run {run_id} recorded no importable agent; pass --agent MODULE:AGENT to run "
                        "the fork"
                    )
                agent = load_agent(ref)
            if model is not None:
                agent = _with_model(agent, model)
        except BaseException:
            await s.aclose()
            raise
        if not as_json:
            Console(highlight=False).print(f"forked {run_id} at event {at} into {new_id}")
        result, _ = await _drive(lambda r: r.resume(new_id, agent), s, as_json)
        return result

    _exit_for(_run_async(go))
