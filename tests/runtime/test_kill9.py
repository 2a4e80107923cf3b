"""A run killed with SIGKILL mid-step is resumed by `tether runs resume` in a new process.

(A process killed during the journal write itself: `tests/journal/test_faults_kill9_writes.py`.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

AGENT = str(Path(__file__).with_name("crash_agent.py")) + ":agent"
TETHER = [sys.executable, "-m", "tether.cli"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "CRASH_DIR": str(tmp_path), "TETHER_STORE": f"sqlite:///{tmp_path}/j.db"}
    env.update(extra)
    return env


def _kill_mid_tool(tmp_path: Path, idempotent: bool) -> str:
    env = _env(tmp_path, CRASH_HANG_ON="3", CRASH_IDEMPOTENT="1" if idempotent else "0")
    with open(tmp_path / "first.out", "wb") as out:
        proc = subprocess.Popen(
            [*TETHER, "run", AGENT, "--input", "record entries 1 2 3 4 5", "--json"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while not (tmp_path / "hanging").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(
                f"the run never reached the hanging tool: {(tmp_path / 'first.out').read_text()}"
            )
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    listing = subprocess.run(
        [*TETHER, "runs", "list", "--json"], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    (run,) = json.loads(listing.stdout)
    assert run["status"] == "running"
    return run["run_id"]


def _resume(tmp_path: Path, run_id: str, idempotent: bool) -> dict:
    env = _env(tmp_path, CRASH_HANG_ON="0", CRASH_IDEMPOTENT="1" if idempotent else "0")
    out = subprocess.run(
        [*TETHER, "runs", "resume", run_id, "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode in (0, 1), out.stderr
    return json.loads(out.stdout)


def _lines(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()]


def test_kill9_mid_tool_then_resume_repeats_no_model_call_and_no_completed_tool(tmp_path: Path) -> None:
    run_id = _kill_mid_tool(tmp_path, idempotent=True)
    assert _lines(tmp_path / "model_calls.log") == [1, 2, 3]
    assert _lines(tmp_path / "ledger.log") == [1, 2, 3]

    result = _resume(tmp_path, run_id, idempotent=True)
    assert result["status"] == "completed" and result["output"] == "recorded 5"
    # steps 1-3 were answered before the kill and come from the journal: the model is asked only for 4-6
    assert _lines(tmp_path / "model_calls.log") == [1, 2, 3, 4, 5, 6]
    # 1 and 2 completed before the kill and never run again; 3 was in flight and is idempotent: re-run once
    assert _lines(tmp_path / "ledger.log") == [1, 2, 3, 3, 4, 5]

    shown = subprocess.run(
        [*TETHER, "runs", "show", run_id, "--json"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        check=True,
    )
    journal = json.loads(shown.stdout)
    assert journal["integrity"]["ok"]
    types = [e["type"] for e in journal["events"]]
    assert types.count("run_resumed") == 1 and types[-1] == "run_finished"


def test_kill9_mid_non_idempotent_tool_is_not_rerun(tmp_path: Path) -> None:
    run_id = _kill_mid_tool(tmp_path, idempotent=False)
    _resume(tmp_path, run_id, idempotent=False)
    ledger = _lines(tmp_path / "ledger.log")
    assert ledger.count(3) == 1 and ledger.count(1) == 1 and ledger.count(2) == 1
    shown = subprocess.run(
        [*TETHER, "runs", "show", run_id, "--json"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        check=True,
    )
    failed = [e for e in json.loads(shown.stdout)["events"] if e["type"] == "tool_failed"]
    assert failed and failed[0]["kind"] == "in_doubt"
