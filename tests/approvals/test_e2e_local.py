"""End to end, with the embedded model and separate processes: a high-risk call suspends the run and the
process exits; a human approves (or edits, or lets the deadline pass) from the CLI in a new process; the
run carries on to its end. Effects are counted in a file the tool writes, not taken from the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.model

AGENT = str(Path(__file__).with_name("e2e_agent.py")) + ":agent"
TETHER = [sys.executable, "-m", "tether.cli"]
ASK = "Please refund order 1042 in full."


def _tether(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "E2E_DIR": str(tmp_path),
        "TETHER_STORE": f"sqlite:///{tmp_path}/j.db",
        **(env or {}),
    }
    return subprocess.run([*TETHER, *args], env=full_env, capture_output=True, text=True, timeout=300)


def _suspend(tmp_path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Start the run in its own process; it must stop at the refund and the process exit."""
    out = _tether(tmp_path, "run", AGENT, "--input", ASK, "--json", env=env)
    assert out.returncode == 3, out.stdout + out.stderr  # 3: suspended, waiting for a human
    result = json.loads(out.stdout)
    assert result["status"] == "suspended" and result["waiting_for"], result
    assert not (tmp_path / "refunds.log").exists()  # nothing refunded before a human said so
    return result


def _journal(tmp_path: Path, run_id: str) -> dict[str, Any]:
    out = _tether(tmp_path, "runs", "show", run_id, "--json")
    assert out.returncode == 0, out.stderr
    journal = json.loads(out.stdout)
    assert journal["integrity"]["ok"]
    return journal


def test_high_tier_approval_across_processes(tmp_path: Path) -> None:
    first = _suspend(tmp_path)
    request_id = first["waiting_for"]
    shown = json.loads(_tether(tmp_path, "approvals", "show", request_id, "--json").stdout)
    assert shown["tool"] == "refund" and shown["risk"] == "high" and shown["reversible"] is False
    assert shown["arguments"]["order_id"] == "1042" and shown["status"] == "pending"
    listed = json.loads(_tether(tmp_path, "approvals", "list", "--json").stdout)
    assert [r["request_id"] for r in listed] == [request_id]

    refused = _tether(tmp_path, "approvals", "approve", request_id, "--by", "mallory")
    assert refused.returncode == 2 and "'mallory' may not decide" in refused.stderr

    approved = _tether(
        tmp_path, "approvals", "approve", request_id, "--by", "ana", "--reason", "ok", "--resume", "--json"
    )
    assert approved.returncode == 0, approved.stdout + approved.stderr
    run = json.loads(approved.stdout)["run"]
    assert run["status"] == "completed", run
    assert (tmp_path / "refunds.log").read_text().split() == [
        "1042",
        "37.90",
    ]  # once, with the looked-up amount
    events = _journal(tmp_path, first["run_id"])["events"]
    started = [e for e in events if e["type"] == "tool_started" and e["tool"] == "refund"]
    assert len(started) == 1 and started[0]["policy"] == "approved"
    again = _tether(tmp_path, "approvals", "approve", request_id, "--by", "bo")
    assert again.returncode == 2 and "already decided" in again.stderr


def test_edit_then_approve_runs_the_edited_call(tmp_path: Path) -> None:
    first = _suspend(tmp_path)
    request_id = first["waiting_for"]
    bad = _tether(
        tmp_path,
        "approvals",
        "approve",
        request_id,
        "--by",
        "ana",
        "--edit",
        '{"order_id": "1042", "amount": "all"}',
    )
    assert bad.returncode == 2 and "do not fit the tool" in bad.stderr
    edited = _tether(
        tmp_path,
        "approvals",
        "approve",
        request_id,
        "--by",
        "ana",
        "--reason",
        "partial refund",
        "--edit",
        '{"order_id": "1042", "amount": 20.0}',
        "--resume",
        "--json",
    )
    assert edited.returncode in (0, 1), edited.stdout + edited.stderr
    assert (tmp_path / "refunds.log").read_text().split() == ["1042", "20.00"]  # the edited call ran, once
    events = _journal(tmp_path, first["run_id"])["events"]
    (started,) = [e for e in events if e["type"] == "tool_started" and e["tool"] == "refund"]
    assert started["policy"] == "edited" and started["arguments"]["amount"] == 20.0
    assert started["original_arguments"]["amount"] != 20.0  # what the model proposed is kept too
    overrides = json.loads(_tether(tmp_path, "audit", "overrides", "--json").stdout)
    assert overrides == [
        {
            "agent": "refunds",
            "tool": "refund",
            "approver": "ana",
            "decided": 1,
            "approved": 0,
            "edited": 1,
            "rejected": 0,
            "override_rate": 1.0,
        }
    ]


def test_an_expired_deadline_rejects_the_call(tmp_path: Path) -> None:
    env = {"E2E_DEADLINE_S": "2"}
    first = _suspend(tmp_path, env)
    time.sleep(2.5)
    shown = json.loads(_tether(tmp_path, "approvals", "show", first["waiting_for"], "--json").stdout)
    assert shown["status"] == "overdue"
    late = _tether(tmp_path, "approvals", "approve", first["waiting_for"], "--by", "ana", env=env)
    assert late.returncode == 2 and "passed its deadline" in late.stderr
    resumed = _tether(tmp_path, "runs", "resume", first["run_id"], "--json", env=env)
    assert resumed.returncode in (0, 1), resumed.stdout + resumed.stderr
    assert not (tmp_path / "refunds.log").exists()  # never refunded
    events = _journal(tmp_path, first["run_id"])["events"]
    decided = [e for e in events if e["type"] == "approval_decided"]
    assert decided[0]["decision"] == "expired" and decided[0]["on_expiry"] == "reject"
    assert any(e["type"] == "tool_failed" and e["kind"] == "rejected" for e in events)
    assert events[-1]["type"] == "run_finished"
