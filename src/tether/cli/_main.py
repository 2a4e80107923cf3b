"""The `tether` command."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import anyio
import click
from rich.console import Console

from ..agents import Agent, RunResult, load_agent
from ..exceptions import RunNotFound, TetherError
from ..governance import GOVERNANCE_ENV, Governance, load_governance
from ..journal import Store, open_store, store_url
from ..runtime import Runner
from ..telemetry import configure_logging
from ._display import LiveDisplay, render_journal, render_result

__all__ = ["main"]

T = TypeVar("T")

EXIT_OK, EXIT_RUN_FAILED, EXIT_ERROR, EXIT_SUSPENDED = 0, 1, 2, 3


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_ERROR)


def _run_async(fn: Callable[[], Awaitable[T]]) -> T:
    try:
        return anyio.run(fn)
    except TetherError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


def _emit_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))


def _result_json(result: RunResult) -> dict[str, Any]:
    return {
        "run_id": result.run_id,
        "agent": result.agent,
        "status": result.status,
        "reason": result.reason,
        "output": result.output,
        "steps": result.steps,
        "usage": result.usage.model_dump(),
        "duration_s": round(result.duration_s, 4),
        "store": result.store,
        "waiting_for": result.waiting_for,
        "wake_at": result.wake_at,
    }


store_option = click.option(
    "--store",
    envvar="TETHER_STORE",
    default=None,
    metavar="URL",
    help="Where journals live: sqlite:///path.db, a file path, postgresql://host/db or memory: "
    "(env TETHER_STORE; default ./.tether/tether.db).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
governance_option = click.option(
    "--governance",
    "governance_file",
    envvar=GOVERNANCE_ENV,
    default=None,
    metavar="FILE",
    help="A governance TOML file: budgets, rate limits, prices, the kill switch and their backend "
    f"(env {GOVERNANCE_ENV}; default: none).",
)


def _governance(path: str | None) -> Governance | None:
    """The governance a file describes, or None without one. Raises ConfigError naming the file's mistake."""
    return load_governance(path) if path else None


def _open(url: str | None) -> Store:
    return open_store(store_url(url))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tether", prog_name="tether")
@click.option(
    "--log-level",
    envvar="TETHER_LOG_LEVEL",
    default="error",
    show_default=True,
    help="Structured log level on stderr (the live display already shows every step).",
)
def cli(log_level: str) -> None:
    """tether: run LLM agents in production — durable, journaled, governed."""
    try:
        configure_logging(log_level)
    except ValueError as exc:
        _fail(str(exc))


async def _drive(
    start: Callable[[Runner], Awaitable[RunResult]],
    store: Store,
    as_json: bool,
    governance: Governance | None = None,
) -> tuple[RunResult, float]:
    console = Console(stderr=as_json, highlight=False)
    runner = Runner(store, observer=None if as_json else LiveDisplay(console), governance=governance)
    t0 = time.perf_counter()
    try:
        result = await start(runner)
    finally:
        await store.aclose()
        if governance is not None:
            await governance.aclose()
    wall = time.perf_counter() - t0
    if as_json:
        _emit_json(_result_json(result))
    else:
        render_result(console, result, wall)
    return result, wall


def _exit_for(result: RunResult) -> NoReturn:
    if result.status in ("suspended", "running", "pending"):
        sys.exit(EXIT_SUSPENDED)  # not finished: waiting for a human (or handed back to the queue)
    sys.exit(EXIT_OK if result.ok else EXIT_RUN_FAILED)


@cli.command()
@click.argument("agent_ref", metavar="MODULE:AGENT")
@click.option("--input", "-i", "input_text", required=True, help="The user's input ('-' reads stdin).")
@click.option("--user", "user_id", default=None, help="The user the run is for (recorded in the journal).")
@click.option("--detach", is_flag=True, help="Queue the run for `tether worker`; print its id and exit.")
@click.option(
    "--idempotency-key",
    default=None,
    metavar="KEY",
    help="With --detach: submitting again with this key creates nothing and prints the first run's id.",
)
@store_option
@governance_option
@json_option
def run(
    agent_ref: str,
    input_text: str,
    user_id: str | None,
    detach: bool,
    idempotency_key: str | None,
    store: str | None,
    governance_file: str | None,
    as_json: bool,
) -> None:
    """Run an agent defined in Python (`package.module:agent` or `file.py:agent`)."""
    if input_text == "-":
        input_text = sys.stdin.read()
    if idempotency_key is not None and not detach:
        _fail("--idempotency-key applies to queued runs; add --detach")
    if detach:

        async def submit() -> str:
            agent = load_agent(agent_ref)
            s = _open(store)
            try:
                return await Runner(s).submit(
                    agent, input_text, user_id=user_id, idempotency_key=idempotency_key
                )
            finally:
                await s.aclose()

        run_id = _run_async(submit)
        if as_json:
            _emit_json({"run_id": run_id, "status": "pending", "store": store_url(store)})
        else:
            click.echo(run_id)
        return

    async def go() -> RunResult:
        agent = load_agent(agent_ref)
        # a detached run is governed by the worker that claims it; this one, by the file given here
        governance = _governance(governance_file)
        s = _open(store)
        result, _ = await _drive(lambda r: r.run(agent, input_text, user_id=user_id), s, as_json, governance)
        return result

    _exit_for(_run_async(go))


@cli.command()
@click.option("--input", "-i", "input_text", default=None, help="Ask the demo agent something else.")
@click.option("--model", default=None, help="Another model string, e.g. local:qwen2.5-coder-1.5b.")
@store_option
@json_option
def demo(input_text: str | None, model: str | None, store: str | None, as_json: bool) -> None:
    """Run the order-support demo: a real agent on the embedded local model."""
    from ..demo import DEFAULT_QUESTION, build_agent

    async def go() -> RunResult:
        agent: Agent = build_agent(model=model)
        s = _open(store)
        result, _ = await _drive(lambda r: r.run(agent, input_text or DEFAULT_QUESTION), s, as_json)
        return result

    _exit_for(_run_async(go))


@cli.group()
def runs() -> None:
    """List, inspect and resume runs."""


@runs.command("list")
@click.option("--status", default=None, help="Only runs with this status (completed, failed, running, ...).")
@click.option("--agent", default=None, help="Only runs of this agent.")
@click.option("--limit", default=50, show_default=True, help="At most this many, newest first.")
@store_option
@json_option
def runs_list(status: str | None, agent: str | None, limit: int, store: str | None, as_json: bool) -> None:
    """List runs, newest first."""

    async def go() -> None:
        s = _open(store)
        try:
            found = await s.list_runs(status=status, agent=agent, limit=limit)
        finally:
            await s.aclose()
        if as_json:
            _emit_json([r.model_dump() for r in found])
            return
        console = Console(highlight=False)
        if not found:
            console.print(f"no runs in {store_url(store)}")
            return
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        # ids and times are what people copy: they are never wrapped or cut; the input gives way
        table.add_column("run id", no_wrap=True, min_width=24)
        table.add_column("agent", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("steps", justify="right")
        table.add_column("tokens", justify="right")
        table.add_column("started (UTC)", no_wrap=True)
        table.add_column("input", no_wrap=True, overflow="ellipsis")
        for r in found:
            table.add_row(
                r.run_id,
                r.agent,
                r.status,
                str(r.steps),
                str(r.input_tokens + r.output_tokens),
                time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.created_at)),
                (r.input[:50] + "…") if len(r.input) > 50 else r.input,
            )
        console.print(table)

    _run_async(go)


@runs.command("show")
@click.argument("run_id")
@store_option
@json_option
def runs_show(run_id: str, store: str | None, as_json: bool) -> None:
    """Print a run's whole journal, and check its hash chain."""

    async def go() -> None:
        s = _open(store)
        try:
            info = await s.get_run(run_id)
            events = await s.load(run_id)
            problems = await s.verify(run_id)
        finally:
            await s.aclose()
        if as_json:
            _emit_json(
                {
                    "run": info.model_dump(),
                    "events": [
                        {"seq": e.seq, "hash": e.hash, **e.event.model_dump(mode="json")} for e in events
                    ],
                    "integrity": {"ok": not problems, "problems": problems},
                }
            )
        else:
            render_journal(Console(highlight=False), info, events, problems)

    _run_async(go)


@runs.command("resume")
@click.argument("run_id")
@click.option(
    "--agent",
    "agent_ref",
    default=None,
    metavar="MODULE:AGENT",
    help="Resume with this agent instead of the one the run recorded.",
)
@store_option
@json_option
def runs_resume(run_id: str, agent_ref: str | None, store: str | None, as_json: bool) -> None:
    """Continue a run from its journal (after a crash, a kill or a restart)."""

    async def go() -> RunResult:
        s = _open(store)
        try:
            info = await s.get_run(run_id)
        except RunNotFound:
            await s.aclose()
            raise
        agent = load_agent(agent_ref) if agent_ref else None
        if info.terminal and not as_json:
            Console(highlight=False).print(
                f"run {run_id} has already ended ({info.status}); nothing to resume"
            )
        result, _ = await _drive(lambda r: r.resume(run_id, agent), s, as_json)
        return result

    _exit_for(_run_async(go))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `tether` command."""
    cli.main(args=argv, prog_name="tether")
