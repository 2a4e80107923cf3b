"""`tether card` and `tether audit`: what an agent is, and whether its journals are intact."""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
from pathlib import Path
from typing import Any, TextIO

import click
from pydantic import ValidationError

from ..agents import load_agent
from ..exceptions import StoreError
from ..governance import agent_card, render_card_markdown
from ..journal import RunInfo, Store, open_store, store_url
from ._main import _fail, _run_async, cli, json_option, store_option

__all__: list[str] = []

EXIT_TAMPERED = 1
_PAGE = 10_000


def _emit_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))


@cli.command()
@click.argument("agent_ref", metavar="MODULE:AGENT")
@json_option
def card(agent_ref: str, as_json: bool) -> None:
    """Print an agent's card: intended use, tools and their risk, models, data sources (Markdown or JSON)."""

    async def go() -> dict[str, Any]:
        return agent_card(load_agent(agent_ref))

    data = _run_async(go)
    if as_json:
        _emit_json(data)
    else:
        click.echo(render_card_markdown(data), nl=False)


@cli.group()
def audit() -> None:
    """Check journals for tampering and export them for auditors."""


async def _all_runs(store: Store, agent: str | None = None) -> list[RunInfo]:
    """Every run in the store (newest first), paging by last update so no run is missed."""
    seen: dict[str, RunInfo] = {}
    before: float | None = None
    while True:
        page = await store.list_runs(agent=agent, limit=_PAGE, updated_before=before)
        fresh = [r for r in page if r.run_id not in seen]
        seen.update((r.run_id, r) for r in fresh)
        if len(page) < _PAGE:
            break
        if not fresh:
            raise StoreError(
                f"more than {_PAGE} runs share one update time; page through them by agent (--agent)"
            )
        # `updated_before` is exclusive: step just past the oldest time seen so runs tied with it are
        # fetched again (and de-duplicated) rather than skipped
        before = math.nextafter(min(r.updated_at for r in page), math.inf)
    return sorted(seen.values(), key=lambda r: r.updated_at, reverse=True)


@audit.command("verify")
@click.argument("run_id", required=False)
@store_option
@json_option
def audit_verify(run_id: str | None, store: str | None, as_json: bool) -> None:
    """Check one run's journal (or every run's) against its hash chain; exit 1 if any was tampered with."""

    async def go() -> dict[str, list[str]]:
        s = open_store(store_url(store))
        try:
            ids = [run_id] if run_id else [r.run_id for r in await _all_runs(s)]
            return {rid: await s.verify(rid) for rid in ids}
        finally:
            await s.aclose()

    results = _run_async(go)
    tampered = {rid: problems for rid, problems in results.items() if problems}
    if as_json:
        _emit_json({"ok": not tampered, "runs_checked": len(results), "tampered": tampered})
    else:
        for rid, problems in tampered.items():
            for problem in problems:
                click.echo(f"TAMPERED run {rid}: {problem}")
        if tampered:
            click.echo(f"{len(tampered)} of {len(results)} runs failed verification in {store_url(store)}")
        else:
            click.echo(f"ok: {len(results)} run(s) intact in {store_url(store)}")
    sys.exit(EXIT_TAMPERED if tampered else 0)


def _parse_time(value: str | None, option: str) -> float | None:
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        _fail(f"{option} {value!r} is not an ISO date or time; use e.g. 2026-01-31 or 2026-01-31T12:00Z")
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)  # times without a zone are UTC, like the journal's
    return when.timestamp()


@audit.command("export")
@click.option(
    "--since", default=None, metavar="ISO", help="Only events at or after this time (UTC if no zone)."
)
@click.option("--until", default=None, metavar="ISO", help="Only events before this time (UTC if no zone).")
@click.option("--agent", default=None, help="Only runs of this agent.")
@click.option("--user", "user_id", default=None, help="Only runs for this user.")
@click.option("--tool", default=None, help="Only events about this tool (tool_started, tool_completed, ...).")
@click.option(
    "--type", "types", multiple=True, metavar="EVENT_TYPE", help="Only events of this type (repeatable)."
)
@click.option(
    "--out", "out_path", default=None, type=click.Path(dir_okay=False), help="Write here, not stdout."
)
@store_option
def audit_export(
    since: str | None,
    until: str | None,
    agent: str | None,
    user_id: str | None,
    tool: str | None,
    types: tuple[str, ...],
    out_path: str | None,
    store: str | None,
) -> None:
    """Write journal events as JSONL: one event a line with its run_id, seq, hash, agent and user."""
    start, end = _parse_time(since, "--since"), _parse_time(until, "--until")
    known_types = _event_types()
    unknown = sorted(set(types) - known_types)
    if unknown:
        _fail(f"unknown event type(s) {unknown}; known: {sorted(known_types)}")

    async def go(out: TextIO) -> tuple[int, int]:
        s = open_store(store_url(store))
        written = runs_with_events = 0
        try:
            for info in reversed(await _all_runs(s, agent)):  # oldest first: the file reads in time order
                if user_id is not None and info.user_id != user_id:
                    continue
                if start is not None and info.updated_at < start:
                    continue
                if end is not None and info.created_at >= end:
                    continue
                try:
                    events = await s.load(info.run_id)
                except ValidationError as exc:
                    raise StoreError(
                        f"run {info.run_id!r} has events that cannot be read ({exc.error_count()} errors); "
                        f"run `tether audit verify {info.run_id}`"
                    ) from None
                n = 0
                for stored in events:
                    ev = stored.event
                    if (start is not None and ev.at < start) or (end is not None and ev.at >= end):
                        continue
                    if types and ev.type not in types:
                        continue
                    if tool is not None and getattr(ev, "tool", None) != tool:
                        continue
                    line = {
                        "run_id": stored.run_id,
                        "seq": stored.seq,
                        "hash": stored.hash,
                        "agent": info.agent,
                        "user_id": info.user_id,
                        **ev.model_dump(mode="json"),
                    }
                    out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
                    n += 1
                written += n
                runs_with_events += bool(n)
        finally:
            await s.aclose()
        return written, runs_with_events

    if out_path is None:
        written, runs = _run_async(lambda: go(sys.stdout))
    else:
        with Path(out_path).open("w", encoding="utf-8") as f:
            written, runs = _run_async(lambda: go(f))
    click.echo(
        f"exported {written} event(s) from {runs} run(s){f' to {out_path}' if out_path else ''}", err=True
    )


def _event_types() -> set[str]:
    from ..journal import event_adapter

    schema = event_adapter.json_schema()
    return {
        d["properties"]["type"]["const"]
        for d in schema.get("$defs", {}).values()
        if "const" in d.get("properties", {}).get("type", {})
    }
