"""What a person sees while a run happens, and how a journal reads afterwards."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from ..agents import RunResult
from ..journal import (
    AnswerRejected,
    ApprovalDecided,
    ApprovalRequested,
    ContextTrimmed,
    Event,
    GuardChecked,
    ModelFailed,
    ModelResponded,
    RunFinished,
    RunInfo,
    RunResumed,
    RunStarted,
    StoredEvent,
    ToolCompleted,
    ToolFailed,
    ToolStarted,
    UsageCharged,
)

__all__ = ["LiveDisplay", "render_journal", "render_result", "short"]


def short(value: Any, limit: int = 160) -> str:
    """One line of at most `limit` characters for any value."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _status_style(status: str) -> str:
    return {"completed": "bold green", "running": "yellow", "pending": "yellow", "suspended": "cyan"}.get(
        status, "bold red"
    )


class LiveDisplay:
    """A `RunObserver` that prints each step as it happens, with the model's output streaming live."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._lock = threading.Lock()
        self._live: Live | None = None
        self._tokens = 0
        self._text = ""
        self._t0 = 0.0

    # -- RunObserver ----------------------------------------------------------------------------------

    def token(self, run_id: str, text: str) -> None:
        with self._lock:
            if self._live is None:
                self._t0 = time.perf_counter()
                self._tokens, self._text = 0, ""
                self._live = Live(
                    self._generating(), console=self.console, transient=True, refresh_per_second=8
                )
                self._live.start()
            self._tokens += 1
            self._text += text
            self._live.update(self._generating())

    def event(self, run_id: str, event: Event) -> None:
        with self._lock:
            if self._live is not None:
                self._live.stop()
                self._live = None
        line = self._line(event)
        if line is not None:
            self.console.print(line)

    # -- rendering ------------------------------------------------------------------------------------

    def _generating(self) -> Text:
        elapsed = max(time.perf_counter() - self._t0, 1e-6)
        tail = short(self._text, 70)
        return Text.assemble(
            ("  model ", "dim"),
            ("generating ", "magenta"),
            (f"{self._tokens} tok · {self._tokens / elapsed:.1f} tok/s ", "bold magenta"),
            (f"{tail}", "dim"),
        )

    def _line(self, ev: Event) -> str | None:
        if isinstance(ev, RunStarted):
            return (
                f"[bold]run[/] {escape(ev.agent)} · model [cyan]{escape(ev.model)}[/] · "
                f"tools {', '.join(ev.tools) or 'none'}\n[dim]input:[/] {escape(short(ev.input, 300))}"
            )
        if isinstance(ev, RunResumed):
            doubt = f" · in doubt: {', '.join(ev.in_doubt)}" if ev.in_doubt else ""
            return f"[yellow]resumed[/] from event {ev.from_seq} on {ev.host} (pid {ev.pid}){doubt}"
        if isinstance(ev, ModelResponded):
            r = ev.response
            tps = r.usage.output_tokens / r.duration_s if r.duration_s > 0 else 0.0
            head = (
                f"[bold]step {ev.step}[/] [dim]· {r.usage.input_tokens} prompt tok"
                + (f" ({r.usage.cached_tokens} cached)" if r.usage.cached_tokens else "")
                + f" · {r.usage.output_tokens} generated · {r.duration_s:.2f}s · {tps:.1f} tok/s[/]"
            )
            parts = [head]
            if r.text.strip() and r.tool_calls:
                parts.append(f"  [dim]says:[/] {escape(short(r.text, 200))}")
            for c in r.tool_calls:
                parts.append(f"  [cyan]→ {escape(c.name)}[/]({escape(short(c.arguments, 200))})")
            if r.repairs:
                parts.append(f"  [yellow]repaired:[/] {escape(', '.join(r.repairs))}")
            return "\n".join(parts)
        if isinstance(ev, ToolCompleted):
            return f"  [green]← {escape(ev.tool)}[/] {escape(short(ev.content, 200))} [dim]({ev.duration_s * 1000:.0f} ms)[/]"
        if isinstance(ev, ToolFailed):
            return f"  [red]✗ {escape(ev.tool)}[/] [red]{ev.kind}[/]: {escape(short(ev.message, 240))}"
        if isinstance(ev, ModelFailed):
            return f"[red]model failed[/] ({ev.error_type}): {escape(ev.message)}"
        if isinstance(ev, AnswerRejected):
            return f"  [yellow]answer sent back:[/] {escape(ev.reason)}"
        if isinstance(ev, RunFinished):
            return None  # the summary follows
        return None


def render_result(console: Console, result: RunResult, wall_s: float) -> None:
    """The summary after a run: status, answer, tokens, time, id and where the journal is."""
    style = _status_style(result.status)
    console.print()
    if result.output is not None:
        console.print(f"[bold]answer:[/] {escape(result.output.strip())}")
    else:
        console.print(f"[{style}]{result.status}[/]: {escape(result.reason)}")
    u = result.usage
    console.print(
        f"[{style}]{result.status}[/] · {result.steps} steps · {u.total_tokens} tokens "
        f"({u.input_tokens} prompt, {u.output_tokens} generated"
        + (f", {u.cached_tokens} prompt tokens reused from cache" if u.cached_tokens else "")
        + f") · {wall_s:.2f}s wall"
    )
    console.print(f"run id [bold]{result.run_id}[/] · journal {escape(result.store)}")
    if result.waiting_for is not None:
        console.print(
            f"[cyan]waiting for approval {result.waiting_for}[/]: tether approvals show {result.waiting_for}, "
            f"then tether approvals approve|reject {result.waiting_for} --by NAME"
        )
    console.print(f"[dim]see every step: tether runs show {result.run_id}[/]")


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%H:%M:%S.%f")[:-3]


def _describe(ev: Event) -> str:
    if isinstance(ev, RunStarted):
        return (
            f"agent {ev.agent} ({ev.agent_ref or 'no import path'}), model {ev.model}, "
            f"tools [{', '.join(ev.tools)}], input {short(ev.input, 120)!r}"
        )
    if isinstance(ev, RunResumed):
        return f"on {ev.host} pid {ev.pid} from event {ev.from_seq}" + (
            f", in doubt {list(ev.in_doubt)}" if ev.in_doubt else ""
        )
    if isinstance(ev, ModelResponded):
        r = ev.response
        what = "; ".join(f"call {c.name}({short(c.arguments, 100)})" for c in r.tool_calls)
        if r.text.strip():
            what = (what + "; " if what else "") + f"text {short(r.text, 140)!r}"
        return f"step {ev.step}: {what or 'empty answer'} [{r.finish_reason}, {r.duration_s:.2f}s]"
    if isinstance(ev, UsageCharged):
        u = ev.usage
        return (
            f"{u.input_tokens} in / {u.output_tokens} out"
            + (f" ({u.cached_tokens} cached)" if u.cached_tokens else "")
            + (f", ${ev.cost_usd:.6f}" if ev.cost_usd else "")
        )
    if isinstance(ev, ModelFailed):
        return f"{ev.error_type}: {ev.message}" + (" (retryable)" if ev.retryable else "")
    if isinstance(ev, ToolStarted):
        policy = "" if ev.policy in (None, "run") else f" [{ev.policy}: {short(ev.policy_reason, 80)}]"
        edited = (
            f" (proposed {short(ev.original_arguments, 80)})" if ev.original_arguments is not None else ""
        )
        tainted = (
            f" [tainted: only a tool result asked for it: {short(ev.tainted, 80)!r}]" if ev.tainted else ""
        )
        return f"{ev.tool}({short(ev.arguments, 120)}){edited} key {ev.idempotency_key}{policy}{tainted}"
    if isinstance(ev, ApprovalRequested):
        conf = f", confidence {ev.confidence:.2f}" if ev.confidence is not None else ""
        return (
            f"{ev.request_id}: {ev.tool}({short(ev.arguments, 100)}) {ev.risk} risk{conf}, {ev.mode}, "
            f"for {ev.approvers} by {datetime.fromtimestamp(ev.deadline_at, tz=UTC):%Y-%m-%d %H:%M} UTC — "
            f"{short(ev.reason, 100)}"
        )
    if isinstance(ev, ApprovalDecided):
        why = f": {short(ev.reason, 100)}" if ev.reason else ""
        edit = f" to {short(ev.arguments, 100)}" if ev.arguments is not None else ""
        return f"{ev.request_id} {ev.decision}{edit} by {ev.by}{why}"
    if isinstance(ev, ToolCompleted):
        return f"{ev.tool} → {short(ev.content, 140)} ({ev.duration_s * 1000:.1f} ms)"
    if isinstance(ev, ToolFailed):
        return f"{ev.tool} {ev.kind}: {short(ev.message, 160)}"
    if isinstance(ev, AnswerRejected):
        return ev.reason
    if isinstance(ev, GuardChecked):
        where = f"call {ev.call_id}" if ev.call_id else ev.source
        found = ", ".join(ev.categories) or "nothing"
        shown = f"; the model read {short(ev.text, 80)!r}" if ev.text is not None else ""
        private = "; the run is now sensitive" if ev.sensitive else ""
        return f"{ev.stage} ({where}): {ev.action} — {found} ({ev.elapsed_ms:.1f} ms){shown}{private}"
    if isinstance(ev, ContextTrimmed):
        return (
            f"step {ev.step}: left out {ev.dropped_turns} turns ({ev.dropped_messages} messages), "
            f"{ev.tokens_before} → {ev.tokens_after} tokens of {ev.budget_tokens}"
        )
    if isinstance(ev, RunFinished):
        out = f" output {short(ev.output, 140)!r}" if ev.output is not None else ""
        return f"{ev.status}: {ev.reason};{out} {ev.steps} steps, {ev.usage.total_tokens} tokens"
    return ""


def render_journal(
    console: Console, info: RunInfo, events: Sequence[StoredEvent], problems: Sequence[str]
) -> None:
    """A run's whole journal, one event a line."""
    style = _status_style(info.status)
    console.print(
        f"[bold]run {info.run_id}[/] · agent {escape(info.agent)} · [{style}]{info.status}[/]"
        + (f" ({escape(info.reason)})" if info.reason else "")
        + f" · {info.steps} steps · {info.input_tokens + info.output_tokens} tokens · {info.event_count} events"
    )
    for s in events:
        ev = s.event
        console.print(
            f"[dim]{s.seq:>4}  {_clock(ev.at)}[/]  [bold]{ev.type:<16}[/] {escape(_describe(ev))}",
            soft_wrap=True,
        )
    if problems:
        for p in problems:
            console.print(f"[bold red]integrity: {escape(p)}[/]")
    else:
        console.print("[dim]integrity: ok (hash chain verified)[/]")
