"""`tether card` and `tether audit`: cards from definitions, tampering caught, exports filtered."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tether.agents import load_agent
from tether.governance import agent_card, render_card_markdown

TETHER = [sys.executable, "-m", "tether.cli"]

APP = '''
from tether import Agent, tool
from tether.testing import ScriptedModel, call


@tool(idempotent=True, scopes=["orders:read"], timeout_s=5)
def lookup_order(order_id: str) -> dict:
    """Look an order up.

    Data source: order database, shipping API

    Args:
        order_id: the order number.
    """
    return {"order_id": order_id, "total": 40}


@tool(risk="high", reversible=False, scopes=["payments:write"], requires=["lookup_order"])
def refund(order_id: str, amount: float) -> str:
    """Refund part of an order."""
    return "ok"


agent = Agent(
    "support",
    instructions="Answer customers about their orders.\\nNever guess.\\n\\nRules:\\n1. Look orders up first.",
    tools=[lookup_order, refund],
    model=ScriptedModel([call("lookup_order", order_id="7"), "The total is 40."], name="test:scripted"),
)
billing = Agent("billing", model=ScriptedModel(["nothing to do"], name="test:scripted"))
'''


def tether(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TETHER_STORE": f"sqlite:///{cwd}/j.db"}
    return subprocess.run([*TETHER, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(APP)
    return tmp_path


def test_card_from_definition(app: Path) -> None:
    out = tether(app, "card", "app:agent", "--json")
    assert out.returncode == 0, out.stderr
    card = json.loads(out.stdout)
    assert card["name"] == "support" and card["ref"] == "app:agent"
    assert card["intended_use"] == "Answer customers about their orders. Never guess."
    assert card["models"] == ["test:scripted"]
    refund = next(t for t in card["tools"] if t["name"] == "refund")
    assert refund == {
        "name": "refund",
        "description": "Refund part of an order.",
        "risk": "high",
        "reversible": False,
        "idempotent": False,
        "scopes": ["payments:write"],
        "timeout_s": 30.0,
        "requires": ["lookup_order"],
        "parameters": ["amount", "order_id"],
    }
    assert card["data_sources"] == [
        {"name": "order database", "access": ["read"], "tools": ["lookup_order"]},
        {"name": "orders", "access": ["read"], "tools": ["lookup_order"]},
        {"name": "payments", "access": ["write"], "tools": ["refund"]},
        {"name": "shipping API", "access": ["read"], "tools": ["lookup_order"]},
    ]
    assert card["risk_summary"] == {
        "by_tier": {"low": ["lookup_order"], "high": ["refund"]},
        "irreversible": ["refund"],
    }

    text = tether(app, "card", "app:agent")
    assert text.returncode == 0
    assert "# Agent card: support" in text.stdout
    assert "| `refund` | high | no | no | payments:write | 30 | lookup_order |" in text.stdout

    missing = tether(app, "card", "app:nope")
    assert (
        missing.returncode == 2
        and missing.stderr.startswith("error: ")
        and "agents defined there" in missing.stderr
    )


def test_card_of_an_agent_without_tools(app: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(app)
    card = agent_card(load_agent(f"{app}/app.py:billing"))
    assert card["tools"] == [] and card["data_sources"] == [] and card["intended_use"] == ""
    md = render_card_markdown(card)
    assert "_Not stated: the instructions are empty._" in md and "none: the agent only answers in text" in md


def run_agents(app: Path) -> list[str]:
    ids = []
    for user in ("alice", "bob"):
        out = tether(app, "run", "app:agent", "--input", "order 7?", "--user", user, "--json")
        assert out.returncode == 0, out.stderr
        ids.append(json.loads(out.stdout)["run_id"])
    out = tether(app, "run", "app:billing", "--input", "hi", "--user", "alice", "--json")
    assert out.returncode == 0, out.stderr
    return [*ids, json.loads(out.stdout)["run_id"]]


def test_audit_verify_catches_direct_tampering(app: Path) -> None:
    alice, bob, billing = run_agents(app)
    ok = tether(app, "audit", "verify")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok: 3 run(s) intact" in ok.stdout

    with sqlite3.connect(app / "j.db") as db:
        (data,) = db.execute("SELECT data FROM events WHERE run_id = ? AND seq = 2", (bob,)).fetchone()
        db.execute(
            "UPDATE events SET data = ? WHERE run_id = ? AND seq = 2",
            (data.replace('"output_tokens":', '"output_tokens":1'), bob),
        )
    bad = tether(app, "audit", "verify")
    assert bad.returncode == 1
    assert f"TAMPERED run {bob}: event 2 does not match its hash" in bad.stdout
    assert alice not in bad.stdout and "1 of 3 runs failed" in bad.stdout
    report = json.loads(tether(app, "audit", "verify", "--json").stdout)
    assert report["ok"] is False and report["runs_checked"] == 3 and list(report["tampered"]) == [bob]
    assert tether(app, "audit", "verify", alice).returncode == 0
    assert tether(app, "audit", "verify", bob).returncode == 1

    with sqlite3.connect(app / "j.db") as db:  # a removed event is caught too
        db.execute("DELETE FROM events WHERE run_id = ? AND seq = 1", (billing,))
    removed = tether(app, "audit", "verify", billing)
    assert removed.returncode == 1 and "event 1 is missing" in removed.stdout

    unknown = tether(app, "audit", "verify", "run_nope")
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: ")


def test_audit_export_filters(app: Path) -> None:
    alice, bob, billing = run_agents(app)
    out = app / "audit.jsonl"
    everything = tether(app, "audit", "export", "--out", str(out))
    assert everything.returncode == 0, everything.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {line["run_id"] for line in lines} == {alice, bob, billing}
    assert f"exported {len(lines)} event(s) from 3 run(s)" in everything.stderr
    first = lines[0]
    assert {"run_id", "seq", "hash", "agent", "user_id", "type", "at"} <= set(first)
    assert first["seq"] == 0 and first["type"] == "run_started" and len(first["hash"]) == 64

    def export(*args: str) -> list[dict]:
        res = tether(app, "audit", "export", *args)
        assert res.returncode == 0, res.stderr
        return [json.loads(line) for line in res.stdout.splitlines()]

    by_user = export("--user", "alice")
    assert {e["run_id"] for e in by_user} == {alice, billing}
    assert {e["run_id"] for e in export("--agent", "billing")} == {billing}
    tools = export("--tool", "lookup_order")
    assert {e["type"] for e in tools} == {"tool_started", "tool_completed"}
    assert {e["run_id"] for e in tools} == {alice, bob}
    usage = export("--type", "usage_charged", "--user", "bob")
    assert [e["type"] for e in usage] == ["usage_charged", "usage_charged"] and {
        e["run_id"] for e in usage
    } == {bob}
    assert export("--until", "2000-01-01") == []
    assert len(export("--since", "2000-01-01T00:00:00+00:00")) == len(lines)

    bad = tether(app, "audit", "export", "--type", "tool_start")
    assert bad.returncode == 2 and "unknown event type(s) ['tool_start']" in bad.stderr
    bad_time = tether(app, "audit", "export", "--since", "yesterday")
    assert bad_time.returncode == 2 and "not an ISO date" in bad_time.stderr
