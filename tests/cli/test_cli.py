"""The `tether` command: every command answers in text and in JSON, and bad input gets one clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TETHER = [sys.executable, "-m", "tether.cli"]

AGENT_SOURCE = '''
from tether import Agent, tool
from tether.testing import ScriptedModel, call

@tool
def double(x: int) -> int:
    """Double a number."""
    return 2 * x

agent = Agent("doubler", tools=[double], model=ScriptedModel([call("double", x=21), "42"]))
not_an_agent = 7
'''


def tether(tmp_path: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TETHER_STORE": f"sqlite:///{tmp_path}/j.db"}
    return subprocess.run(
        [*TETHER, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, input=input
    )


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(AGENT_SOURCE)
    return tmp_path


def test_run_list_show(app: Path) -> None:
    out = tether(app, "run", "app:agent", "--input", "double 21", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert (result["status"], result["output"], result["steps"]) == ("completed", "42", 2)

    text = tether(app, "run", "app:agent", "--input", "double 21 again")
    assert text.returncode == 0
    assert "← double 42" in text.stdout and "answer: 42" in text.stdout and "run id run_" in text.stdout

    listed = json.loads(tether(app, "runs", "list", "--json").stdout)
    assert [r["status"] for r in listed] == ["completed", "completed"]
    assert listed[1]["run_id"] == result["run_id"]
    table = tether(app, "runs", "list").stdout
    assert result["run_id"] in table and "doubler" in table

    shown = json.loads(tether(app, "runs", "show", result["run_id"], "--json").stdout)
    assert shown["integrity"]["ok"] and shown["run"]["output"] == "42"
    assert [e["type"] for e in shown["events"]][:3] == ["run_started", "model_responded", "usage_charged"]
    readable = tether(app, "runs", "show", result["run_id"]).stdout
    assert "tool_completed" in readable and "double → 42" in readable and "integrity: ok" in readable


def test_input_from_stdin(app: Path) -> None:
    out = tether(app, "run", "app:agent", "--input", "-", "--json", input="from stdin: 21")
    run_id = json.loads(out.stdout)["run_id"]
    shown = json.loads(tether(app, "runs", "show", run_id, "--json").stdout)
    assert shown["run"]["input"] == "from stdin: 21"


def test_file_path_agent_reference(app: Path) -> None:
    out = tether(app, "run", str(app / "app.py") + ":agent", "--input", "double 21", "--json")
    assert json.loads(out.stdout)["status"] == "completed"


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("nosuchmodule:agent", "cannot import 'nosuchmodule'"),
        ("app:nope", "'app' has no attribute 'nope'; agents defined there: ['agent']"),
        ("app:not_an_agent", "is a int, not an Agent"),
        ("app", "is not an agent reference; use module.path:agent"),
        ("missing.py:agent", "no file 'missing.py'"),
    ],
)
def test_unknown_agent_reference(app: Path, ref: str, message: str) -> None:
    out = tether(app, "run", ref, "--input", "x")
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error: ") and message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_unknown_run(app: Path) -> None:
    for cmd in (["runs", "show", "run_nope"], ["runs", "resume", "run_nope"]):
        out = tether(app, *cmd)
        assert out.returncode == 2 and "no run 'run_nope'" in out.stderr and "tether runs list" in out.stderr


def test_bad_store(app: Path) -> None:
    out = tether(app, "runs", "list", "--store", "mongodb://x")
    assert out.returncode == 2 and "unknown store 'mongodb://x'" in out.stderr and "TETHER_STORE" in out.stderr


def test_a_failed_run_exits_1_with_its_reason(app: Path) -> None:
    (app / "loop.py").write_text(
        "from tether import Agent, Limits, tool\nfrom tether.testing import ScriptedModel, call\n"
        "@tool\ndef f(x: int) -> int:\n    '''f'''\n    return x\n"
        "agent = Agent('looper', tools=[f], model=ScriptedModel(lambda m, t: call('f', x=1)))\n"
    )
    out = tether(app, "run", "loop:agent", "--input", "x", "--json")
    assert out.returncode == 1
    result = json.loads(out.stdout)
    assert result["status"] == "failed" and "loop detected" in result["reason"]


def test_resume_of_a_finished_run_says_so(app: Path) -> None:
    run_id = json.loads(tether(app, "run", "app:agent", "--input", "double 21", "--json").stdout)["run_id"]
    out = tether(app, "runs", "resume", run_id)
    assert out.returncode == 0 and "already ended (completed)" in out.stdout
