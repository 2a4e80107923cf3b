"""The agent card: what an agent is for, what it can do and touch, derived from its definition.

Everything comes from the `Agent` itself: its instructions (the first paragraph is the intended use),
its tools (risk tier, reversibility, idempotency, scopes, timeouts, prerequisites), its model and limits.
Data sources are derived from the tools: each scope `resource:access` names a resource, and a tool's
docstring may name more on a line `Data source: ...` (or `Data sources:`, `Reads from:`, `Writes to:`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the card reads an Agent; it needs no import of the agents package at run time
    from ..agents import Agent

__all__ = ["agent_card", "render_card_markdown"]

_SOURCE_LINE = re.compile(
    r"^\s*(data sources?|reads from|writes to)\s*:\s*(.+)$", re.IGNORECASE | re.MULTILINE
)
_SUMMARY_CHARS = 280


def _first_paragraph(text: str) -> str:
    for block in re.split(r"\n\s*\n", text.strip()):
        if block.strip():
            return " ".join(line.strip() for line in block.strip().splitlines())
    return ""


def _summary(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) <= _SUMMARY_CHARS:
        return flat
    cut = flat[:_SUMMARY_CHARS].rsplit(" ", 1)[0]
    return cut + " …"


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.strip().splitlines() if line.strip()), "")


def agent_card(agent: Agent) -> dict[str, Any]:
    """The card of `agent`, as plain JSON-ready data.

    Keys: `name`, `ref`, `intended_use`, `instructions_summary`, `capabilities`, `tools`, `models`,
    `data_sources`, `limits`, `grounding`, `risk_summary`.
    """
    tools: list[dict[str, Any]] = []
    sources: dict[str, dict[str, Any]] = {}
    for name in sorted(agent.tools):
        t = agent.tools[name]
        spec = t.spec
        raw_doc = getattr(t._fn, "__doc__", None) or ""  # the docstring, beyond the description shown
        tools.append(
            {
                "name": name,
                "description": _first_line(t.description),
                "risk": spec.risk,
                "reversible": spec.reversible,
                "idempotent": spec.idempotent,
                "scopes": list(spec.scopes),
                "timeout_s": spec.timeout_s,
                "requires": list(spec.requires),
                "parameters": sorted(t.definition.parameters.get("properties", {})),
            }
        )
        for scope in spec.scopes:
            resource, _, access = scope.partition(":")
            entry = sources.setdefault(resource, {"name": resource, "access": set(), "tools": set()})
            entry["access"].add(access or "use")
            entry["tools"].add(name)
        for match in _SOURCE_LINE.finditer(t.description + "\n" + raw_doc):
            kind = match.group(1).lower()
            access = "write" if kind == "writes to" else "read"
            for source in (s.strip().rstrip(".") for s in match.group(2).split(",")):
                if source:
                    entry = sources.setdefault(source, {"name": source, "access": set(), "tools": set()})
                    entry["access"].add(access)
                    entry["tools"].add(name)
    by_risk: dict[str, list[str]] = {}
    for t in tools:
        by_risk.setdefault(t["risk"], []).append(t["name"])
    return {
        "name": agent.name,
        "ref": agent.ref,
        "intended_use": _first_paragraph(agent.instructions),
        "instructions_summary": _summary(agent.instructions),
        "capabilities": [
            f"{t['name']}: {t['description']}" if t["description"] else t["name"] for t in tools
        ],
        "tools": tools,
        "models": [agent.model_name],
        "data_sources": [
            {"name": s["name"], "access": sorted(s["access"]), "tools": sorted(s["tools"])}
            for s in sorted(sources.values(), key=lambda s: s["name"])
        ],
        "limits": agent.limits.as_dict(),
        "grounding": agent.grounding,
        "risk_summary": {
            "by_tier": {
                tier: by_risk[tier] for tier in ("low", "medium", "high", "critical") if tier in by_risk
            },
            "irreversible": [t["name"] for t in tools if not t["reversible"]],
        },
    }


def _cell(value: Any) -> str:
    text = ", ".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)
    return (text or "—").replace("|", "\\|").replace("\n", " ")


def render_card_markdown(card: dict[str, Any]) -> str:
    """The card as Markdown, for a README, a model registry or a review."""
    lines = [f"# Agent card: {card['name']}", ""]
    if card.get("ref"):
        lines += [f"Defined at `{card['ref']}`.", ""]
    lines += [
        "## Intended use",
        "",
        card.get("intended_use") or "_Not stated: the instructions are empty._",
        "",
    ]
    if card.get("instructions_summary") and card["instructions_summary"] != card.get("intended_use"):
        lines += ["## Instructions (summary)", "", card["instructions_summary"], ""]
    lines += ["## Capabilities", ""]
    lines += [f"- {c}" for c in card["capabilities"]] or ["- none: the agent only answers in text"]
    lines += ["", "## Tools", ""]
    if card["tools"]:
        lines += [
            "| tool | risk | reversible | idempotent | scopes | timeout (s) | requires |",
            "|---|---|---|---|---|---|---|",
        ]
        for t in card["tools"]:
            lines.append(
                f"| `{t['name']}` | {t['risk']} | {'yes' if t['reversible'] else 'no'} | "
                f"{'yes' if t['idempotent'] else 'no'} | {_cell(t['scopes'])} | {t['timeout_s']:g} | "
                f"{_cell(t['requires'])} |"
            )
    else:
        lines.append("none")
    risk = card["risk_summary"]
    if risk["irreversible"]:
        lines += ["", f"Irreversible: {', '.join(f'`{n}`' for n in risk['irreversible'])}."]
    lines += ["", "## Models", ""] + [f"- `{m}`" for m in card["models"]]
    lines += ["", "## Data sources", ""]
    if card["data_sources"]:
        lines += [
            f"- {s['name']} ({', '.join(s['access'])}) via {', '.join(f'`{t}`' for t in s['tools'])}"
            for s in card["data_sources"]
        ]
    else:
        lines.append("none declared (no tool scopes or `Data source:` lines)")
    limits = card["limits"]
    lines += [
        "",
        "## Limits",
        "",
        *(f"- {k}: {v}" for k, v in limits.items() if v is not None),
        f"- grounding checks: {'on' if card['grounding'] else 'off'}",
        "",
    ]
    return "\n".join(lines)
