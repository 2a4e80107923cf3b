"""The demo answers correctly on its default input, through the CLI, on the embedded model."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tether.demo import EXPECTED_REFUND, calculator, lookup_order


def test_demo_tools() -> None:
    order = lookup_order("#1042")
    kettle = next(i for i in order["items"] if i["sku"] == "KET-01")
    assert (kettle["unit_price"], kettle["quantity"]) == (37.9, 3)
    assert calculator("2 * 37.9") == pytest.approx(EXPECTED_REFUND)
    with pytest.raises(LookupError, match="there is no order '9999'"):
        lookup_order("9999")
    for bad in ("__import__('os')", "2 ** 99999", "1/0", "x" * 300):
        with pytest.raises(ValueError):
            calculator(bad)


@pytest.mark.model
def test_demo_answers_correctly(tmp_path: Path) -> None:
    env = {**os.environ, "TETHER_STORE": f"sqlite:///{tmp_path}/j.db", "TETHER_DEMO_DB": str(tmp_path / "o.db")}
    out = subprocess.run(
        [sys.executable, "-m", "tether.cli", "demo", "--json"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "completed"
    amounts = [float(x) for x in re.findall(r"\d+(?:\.\d+)?", result["output"].replace(",", ""))]
    assert any(abs(a - EXPECTED_REFUND) < 0.005 for a in amounts), result["output"]
    journal = json.loads(
        subprocess.run(
            [sys.executable, "-m", "tether.cli", "runs", "show", result["run_id"], "--json"],
            env=env, cwd=tmp_path, capture_output=True, text=True, check=True,
        ).stdout
    )
    done = [e["tool"] for e in journal["events"] if e["type"] == "tool_completed"]
    assert "lookup_order" in done and "calculator" in done  # it answered from tools, not from a guess
    assert journal["integrity"]["ok"]
