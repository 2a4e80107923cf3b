"""`tether guard scan`: run the guardrail stack over text or JSONL from the shell."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ._main import _fail, cli, json_option

__all__: list[str] = []


def _items(raw: str) -> list[str]:
    """One item per JSONL line (`{"text": ...}`), or the whole input as one text."""
    lines = [line for line in raw.splitlines() if line.strip()]
    if lines and all(line.lstrip().startswith("{") for line in lines):
        items = []
        for n, line in enumerate(lines, 1):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                _fail(f"line {n} is not valid JSON ({exc.msg}); give one {{\"text\": ...}} object per line")
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                _fail(f'line {n} has no "text" string; give one {{"text": ...}} object per line')
            items.append(obj["text"])
        return items
    return [raw]


@cli.group()
def guard() -> None:
    """Run tether's LLM-free guardrails from the shell."""


@guard.command("scan")
@click.argument("source", metavar="FILE|-", default="-")
@click.option(
    "--stage",
    type=click.Choice(["input", "output", "tool"]),
    default="input",
    show_default=True,
    help="Which guards: input (injection, PII, secrets, abuse), output (leaks, exfiltration), tool (calls).",
)
@click.option("--document", is_flag=True, help="Treat the text as a document or tool result (indirect injection).")
@click.option("--rules-only", is_flag=True, help="Skip the embedding classifier (faster, lower recall).")
@json_option
def guard_scan(source: str, stage: str, document: bool, rules_only: bool, as_json: bool) -> None:
    """Scan text, or JSONL with one {"text": ...} per line, and print one verdict per item.

    Exit code 1 when any item is blocked, 0 otherwise.
    """
    from ..guardrails import AbuseGuard, GuardStack, InjectionGuard, PIIGuard, SecretsGuard, scan

    try:
        raw = sys.stdin.read() if source == "-" else open(source, encoding="utf-8", errors="replace").read()
    except OSError as exc:
        _fail(f"cannot read {source!r}: {exc.strerror}")
    items = _items(raw)
    stack = None
    if rules_only and stage == "input":
        stack = GuardStack([SecretsGuard(), PIIGuard(), InjectionGuard(), AbuseGuard()])
    results = scan(
        items,
        "tool_call" if stage == "tool" else stage,  # type: ignore[arg-type]
        stack=stack,
        source="tool_result" if document else "user",
    )
    blocked = False
    for n, (text, result) in enumerate(zip(items, results, strict=True), 1):
        record: dict[str, Any] = {"item": n, **result.to_dict()}
        blocked = blocked or result.action == "block"
        if as_json:
            click.echo(json.dumps(record, ensure_ascii=False))
            continue
        cats = ", ".join(record["categories"]) or "-"
        preview = " ".join(text.split())[:70]
        click.echo(f"{n:>4}  {result.action:<8} {cats:<40} {preview}")
    sys.exit(1 if blocked else 0)
