"""The queue's commands: run --detach, worker, runs cancel / prune / replay / fork, in text and JSON."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

TETHER = [sys.executable, "-m", "tether.cli"]

# Deterministic by conversation (not by position), so any process can pick a run up anywhere.
AGENT_SOURCE = '''
from tether import Agent, tool
from tether.models import ToolResultMessage
from tether.testing import ScriptedModel, call

def script(messages, tools):
    done = sum(isinstance(m, ToolResultMessage) for m in messages)
    return call("double", x=21) if done == 0 else "the answer is 42"

@tool
def double(x: int) -> int:
    """Double a number."""
    return 2 * x

agent = Agent("doubler", tools=[double], model=ScriptedModel(script))
'''


def tether(tmp_path: Path, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TETHER_STORE": f"sqlite:///{tmp_path}/j.db"}
    out = subprocess.run([*TETHER, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def as_json(out: subprocess.CompletedProcess[str]) -> Any:
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(AGENT_SOURCE)
    return tmp_path


def test_run_detach_queues_and_prints_the_id(app: Path) -> None:
    out = tether(app, "run", "app:agent", "--input", "double 21", "--detach", check=True)
    run_id = out.stdout.strip()
    assert run_id.startswith("run_") and "\n" not in run_id
    (listed,) = as_json(tether(app, "runs", "list", "--json"))
    assert (listed["run_id"], listed["status"]) == (run_id, "pending")


def test_the_same_idempotency_key_prints_the_same_run(app: Path) -> None:
    args = ("run", "app:agent", "-i", "double 21", "--detach", "--idempotency-key", "order-1042", "--json")
    first = as_json(tether(app, *args))
    again = as_json(tether(app, *args))
    assert first["run_id"] == again["run_id"] and first["status"] == "pending"
    assert len(as_json(tether(app, "runs", "list", "--json"))) == 1
    bad = tether(app, "run", "app:agent", "-i", "x", "--idempotency-key", "k")
    assert bad.returncode == 2 and "add --detach" in bad.stderr


def test_concurrent_submissions_with_one_key_make_one_run(app: Path) -> None:
    env = {**os.environ, "TETHER_STORE": f"sqlite:///{app}/j.db"}
    tether(app, "runs", "list", check=True)  # create the file first, so the racers only race to submit
    args = [*TETHER, "run", "app:agent", "-i", "double 21", "--detach", "--idempotency-key", "same"]
    procs = [
        subprocess.Popen(args, env=env, cwd=app, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    assert len({o.strip() for o, _ in outs}) == 1
    assert len(as_json(tether(app, "runs", "list", "--json"))) == 1


def test_worker_runs_the_queue_and_drains_on_sigterm(app: Path) -> None:
    ids = [
        tether(app, "run", "app:agent", "-i", f"double 21 ({n})", "--detach", check=True).stdout.strip()
        for n in range(3)
    ]
    env = {**os.environ, "TETHER_STORE": f"sqlite:///{app}/j.db"}
    worker = subprocess.Popen(
        [*TETHER, "worker", "--concurrency", "2", "--poll-s", "0.05", "--json"],
        env=env,
        cwd=app,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            runs = as_json(tether(app, "runs", "list", "--json"))
            if all(r["status"] == "completed" for r in runs):
                break
            time.sleep(0.1)
        worker.send_signal(signal.SIGTERM)
        stdout, stderr = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, stderr
    stats = json.loads(stdout)
    assert (stats["claimed"], stats["finished"], stats["errors"]) == (3, 3, 0)
    assert "draining" in stderr and '"event": "run claimed"' in stderr  # a service logs at info
    for run_id in ids:
        shown = as_json(tether(app, "runs", "show", run_id, "--json"))
        assert shown["run"]["output"] == "the answer is 42" and shown["integrity"]["ok"]


def test_cancel_a_queued_run(app: Path) -> None:
    run_id = tether(app, "run", "app:agent", "-i", "double 21", "--detach", check=True).stdout.strip()
    got = as_json(tether(app, "runs", "cancel", run_id, "--reason", "customer withdrew", "--json"))
    assert got == {"run_id": run_id, "status": "cancelled", "cancelled": True, "reason": "customer withdrew"}
    again = tether(app, "runs", "cancel", run_id)
    assert again.returncode == 0 and "already ended (cancelled); nothing changed" in again.stdout
    shown = as_json(tether(app, "runs", "show", run_id, "--json"))
    assert [e["type"] for e in shown["events"]] == ["run_started", "run_finished"] and shown["integrity"][
        "ok"
    ]
    missing = tether(app, "runs", "cancel", "run_nope")
    assert missing.returncode == 2 and "no run 'run_nope'" in missing.stderr


def _finished_run(app: Path) -> str:
    return as_json(tether(app, "run", "app:agent", "-i", "double 21", "--json"))["run_id"]


def test_replay_shows_the_state_at_each_event(app: Path) -> None:
    run_id = _finished_run(app)
    at1 = as_json(tether(app, "runs", "replay", run_id, "--until", "1", "--json"))
    assert (at1["seq"], at1["step"], at1["finished"]) == (1, 1, None)
    assert [m["role"] for m in at1["messages"]] == ["system", "user", "assistant"]  # the tool guide, then the turn
    assert [c["name"] for c in at1["outstanding"]] == ["double"]
    end = as_json(tether(app, "runs", "replay", run_id, "--json"))
    assert (
        end["finished"]["status"] == "completed"
        and end["outstanding"] == []
        and end["seq"] == end["events"] - 1
    )
    assert end["usage"]["input_tokens"] == 40
    text = tether(app, "runs", "replay", run_id, "--until", "1", check=True).stdout
    assert f"{run_id} at event 1" in text and "double" in text and "outstanding" in text
    bad = tether(app, "runs", "replay", run_id, "--until", "99")
    assert bad.returncode == 2 and "event 99 does not exist" in bad.stderr


def test_fork_reuses_the_recorded_steps_and_chains_a_new_journal(app: Path) -> None:
    run_id = _finished_run(app)
    source = as_json(tether(app, "runs", "show", run_id, "--json"))["events"]
    tool_done = next(e["seq"] for e in source if e["type"] == "tool_completed")
    forked = as_json(tether(app, "runs", "fork", run_id, "--at", str(tool_done), "--json"))
    assert forked["status"] == "completed" and forked["run_id"] != run_id
    shown = as_json(tether(app, "runs", "show", forked["run_id"], "--json"))
    events = shown["events"]
    assert shown["integrity"]["ok"]
    assert events[0]["metadata"]["forked_from"]["run_id"] == run_id
    assert events[0]["metadata"]["forked_from"]["at"] == tool_done
    # the copied events are the source's, under new hashes; the model was asked only for the last step
    assert [e["type"] for e in events[: tool_done + 1]] == [e["type"] for e in source[: tool_done + 1]]
    assert {e["hash"] for e in events}.isdisjoint(e["hash"] for e in source)
    assert sum(e["type"] == "model_responded" for e in events[tool_done + 1 :]) == 1
    detached = as_json(
        tether(app, "runs", "fork", run_id, "--at", "0", "-i", "double 4", "--detach", "--json")
    )
    assert detached["status"] == "pending"
    assert (
        as_json(tether(app, "runs", "show", detached["run_id"], "--json"))["events"][0]["input"] == "double 4"
    )
    refused = tether(app, "runs", "fork", run_id, "--at", "1", "--model", "test:x", "--detach")
    assert refused.returncode == 2 and "drop --detach" in refused.stderr
    at_end = tether(app, "runs", "fork", run_id, "--at", str(len(source) - 1))
    assert at_end.returncode == 2 and "fork at an earlier event" in at_end.stderr


def test_prune_archives_then_deletes_old_finished_runs(app: Path) -> None:
    done = _finished_run(app)
    queued = tether(app, "run", "app:agent", "-i", "double 21", "--detach", check=True).stdout.strip()
    time.sleep(0.05)
    dry = as_json(tether(app, "runs", "prune", "--older-than", "0s", "--dry-run", "--json"))
    assert dry["would_prune"] == [done] and dry["pruned"] == []
    archive = app / "archive" / "runs.jsonl"
    got = as_json(tether(app, "runs", "prune", "--older-than", "0s", "--archive", str(archive), "--json"))
    assert got["pruned"] == [done] and got["count"] == 1
    (line,) = archive.read_text().splitlines()
    record = json.loads(line)
    assert record["run"]["run_id"] == done and record["events"][-1]["event"]["type"] == "run_finished"
    assert [r["run_id"] for r in as_json(tether(app, "runs", "list", "--json"))] == [
        queued
    ]  # unfinished stays
    recent = tether(app, "runs", "prune", "--older-than", "30d", check=True)
    assert "pruned 0 runs" in recent.stdout
    for bad, message in (("30 days", "not a duration"), ("", "not a duration")):
        out = tether(app, "runs", "prune", "--older-than", bad)
        assert out.returncode == 2 and message in out.stderr
    out = tether(app, "runs", "prune", "--older-than", "1d", "--status", "running")
    assert out.returncode == 2 and "only finished runs can be pruned" in out.stderr


HANGING_SOURCE = '''
import anyio
from tether import Agent, tool
from tether.testing import ScriptedModel, call

@tool(idempotent=True)
async def wait_a_while(x: int) -> int:
    """Take a long time."""
    await anyio.sleep(120)
    return x

agent = Agent("slow", tools=[wait_a_while], model=ScriptedModel(lambda m, t: call("wait_a_while", x=1)))
'''


def test_a_second_sigterm_stops_the_worker_at_once_without_cancelling_the_run(tmp_path: Path) -> None:
    (tmp_path / "slow.py").write_text(HANGING_SOURCE)
    run_id = tether(tmp_path, "run", "slow:agent", "-i", "wait 1", "--detach", check=True).stdout.strip()
    env = {**os.environ, "TETHER_STORE": f"sqlite:///{tmp_path}/j.db"}
    worker = subprocess.Popen(
        [*TETHER, "worker", "--poll-s", "0.05"], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while "tool_started" not in tether(tmp_path, "runs", "show", run_id, "--json").stdout:
            assert time.monotonic() < deadline and worker.poll() is None
            time.sleep(0.1)
        worker.send_signal(signal.SIGTERM)  # drain: would wait for the two-minute tool
        time.sleep(0.5)
        assert worker.poll() is None
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=15)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0 and "second signal" in stderr
    shown = as_json(tether(tmp_path, "runs", "show", run_id, "--json"))
    assert shown["run"]["status"] == "running" and shown["integrity"]["ok"]  # not cancelled: resumable
