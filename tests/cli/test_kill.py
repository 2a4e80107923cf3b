"""`tether kill` / `tether unkill`: a switch engaged from the shell stops runs, is audited, and bad input
changes nothing."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from tether.cli import cli

AGENTS = """
from tether import Agent
from tether.testing import ScriptedModel

support = Agent("support", model=ScriptedModel(lambda messages, tools: "done"))
billing = Agent("billing", model=ScriptedModel(lambda messages, tools: "paid"))
"""

POSTGRES_DSN = "postgresql://root@127.0.0.1:5432/test"


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """The CLI configures logging for its process (level `error`, this test's stderr): in-process runs
    must not leave that to the tests after them, which read the default configuration's logs."""
    yield
    import structlog

    from tether.telemetry import _logging

    structlog.reset_defaults()
    _logging._configured = False


@pytest.fixture(params=["redis", "postgres"])
def governance(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A governance file with a shared backend of this test's own (removed afterwards)."""
    path = tmp_path / "governance.toml"
    if request.param == "redis":
        prefix = request.getfixturevalue("redis_prefix")
        path.write_text(f'backend = "redis://127.0.0.1:6379/0"\nprefix = "{prefix}"\n')
        yield path
        return
    schema = f"tether_test_kill_{secrets.token_hex(4)}"
    path.write_text(f'backend = "{POSTGRES_DSN}?schema={schema}"\n')
    try:
        yield path
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')  # type: ignore[arg-type]  # generated


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "agents.py").write_text(AGENTS)
    return tmp_path


def tether(app: Path, governance: Path | None, *args: str) -> Result:
    env = {
        "TETHER_STORE": f"sqlite:///{app}/j.db",
        "TETHER_GOVERNANCE": str(governance) if governance else "",
    }
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_kill_stops_runs_and_unkill_lets_them_go_on(app: Path, governance: Path) -> None:
    support, billing = f"{app}/agents.py:support", f"{app}/agents.py:billing"
    assert tether(app, governance, "run", support, "-i", "hi").exit_code == 0  # the store now knows it

    engaged = tether(
        app, governance, "kill", "--agent", "support", "--by", "oncall", "--reason", "bad release"
    )
    assert engaged.exit_code == 0, engaged.output
    assert "kill switch engaged: agent:support by oncall: bad release" in engaged.stdout
    assert "tether unkill --agent support" in engaged.stdout

    stopped = tether(app, governance, "run", support, "-i", "hi", "--json")
    assert stopped.exit_code == 1
    result = json.loads(stopped.stdout)
    assert result["status"] == "cancelled" and result["steps"] == 0
    assert (
        result["reason"]
        == "kill switch: stopped by kill switch: agent:support engaged by 'oncall': bad release"
    )
    other = tether(app, governance, "run", billing, "-i", "hi", "--json")
    assert json.loads(other.stdout)["status"] == "completed"  # other agents go on

    listed = json.loads(tether(app, governance, "kill", "list", "--json").stdout)
    assert [(r["switch"], r["by"], r["reason"]) for r in listed["active"]] == [
        ("agent:support", "oncall", "bad release")
    ]

    released = tether(app, governance, "unkill", "--agent", "support", "--by", "oncall", "--reason", "fixed")
    assert released.exit_code == 0 and "kill switch released: agent:support by oncall" in released.stdout
    assert (
        json.loads(tether(app, governance, "run", support, "-i", "hi", "--json").stdout)["status"]
        == "completed"
    )

    listed = json.loads(tether(app, governance, "kill", "list", "--json").stdout)
    assert listed["active"] == []
    assert [(r["action"], r["switch"], r["reason"]) for r in listed["history"]] == [
        ("engage", "agent:support", "bad release"),
        ("release", "agent:support", "fixed"),
    ]
    text = tether(app, governance, "kill", "list").stdout
    assert (
        "no kill switch is engaged" in text
        and "release  agent:support" in text
        and "by oncall: fixed" in text
    )


def test_a_kill_switch_for_an_unknown_agent_is_refused_and_nothing_changes(
    app: Path, governance: Path
) -> None:
    assert tether(app, governance, "run", f"{app}/agents.py:support", "-i", "hi").exit_code == 0
    typo = tether(app, governance, "kill", "--agent", "suport", "--by", "oncall", "--reason", "typo")
    assert typo.exit_code == 2
    assert typo.stderr.startswith("error: unknown agent 'suport': no run in sqlite:///")
    assert "(agents with runs there: ['support'])" in typo.stderr
    assert "--agent-ref MODULE:AGENT" in typo.stderr and "--force" in typo.stderr
    assert "Nothing was engaged" in typo.stderr and "\n" not in typo.stderr.strip()
    assert json.loads(tether(app, governance, "kill", "list", "--json").stdout) == {
        "active": [],
        "history": [],
    }

    # an agent known by its definition, before any run of it; or forced by name
    by_ref = tether(
        app, governance, "kill", "--agent-ref", f"{app}/agents.py:billing", "--by", "a", "--reason", "r"
    )
    assert by_ref.exit_code == 0, by_ref.output
    forced = tether(
        app, governance, "kill", "--agent", "later", "--force", "--by", "a", "--reason", "r", "--json"
    )
    assert json.loads(forced.stdout)["engaged"]["switch"] == "agent:later"
    active = json.loads(tether(app, governance, "kill", "list", "--json").stdout)["active"]
    assert [r["switch"] for r in active] == ["agent:billing", "agent:later"]


def test_users_tools_and_everything(app: Path, governance: Path) -> None:
    for args in (["--user", "mallory"], ["--tool", "refund"], ["--all"]):
        assert tether(app, governance, "kill", *args, "--by", "trust", "--reason", "abuse").exit_code == 0
    active = json.loads(tether(app, governance, "kill", "list", "--json").stdout)["active"]
    assert [r["switch"] for r in active] == ["global", "tool:refund", "user:mallory"]
    stopped = tether(app, governance, "run", f"{app}/agents.py:billing", "-i", "hi", "--json")
    assert "global engaged by 'trust': abuse" in json.loads(stopped.stdout)["reason"]
    assert tether(app, governance, "unkill", "--all", "--by", "trust").exit_code == 0
    again = tether(app, governance, "unkill", "--all", "--by", "trust")
    assert again.exit_code == 2
    assert "no kill switch is engaged for 'global'; engaged: ['tool:refund', 'user:mallory']" in again.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["kill", "--by", "a", "--reason", "r"],
            "give exactly one of --agent NAME, --tool NAME, --user ID or --all",
        ),
        (["kill", "--user", "u", "--tool", "t", "--by", "a", "--reason", "r"], "give exactly one of"),
        (["kill", "--user", "u", "--reason", "r"], "--by is required"),
        (["kill", "--user", "u", "--by", "a"], "--reason is required"),
        (
            ["kill", "--agent-ref", "nowhere.py:x", "--by", "a", "--reason", "r"],
            "--agent-ref: no file 'nowhere.py'",
        ),
        (["kill", "--agent", "x", "list"], "`tether kill list` takes no --agent"),
        (["unkill", "--user", "u"], "--by is required"),
    ],
)
def test_bad_commands_say_what_to_do(app: Path, governance: Path, args: list[str], message: str) -> None:
    out = tether(app, governance, *args)
    assert out.exit_code == 2 and message in out.stderr, out.output
    assert json.loads(tether(app, governance, "kill", "list", "--json").stdout)["history"] == []


def test_a_switch_needs_a_shared_backend(app: Path, tmp_path: Path) -> None:
    none = tether(app, None, "kill", "--all", "--by", "a", "--reason", "r")
    assert (
        none.exit_code == 2
        and "no governance file: pass --governance FILE or set TETHER_GOVERNANCE" in none.stderr
    )
    memory = tmp_path / "memory.toml"
    memory.write_text('backend = "memory"\n')
    local = tether(app, memory, "kill", "--all", "--by", "a", "--reason", "r")
    assert local.exit_code == 2 and "keeps governance in memory, inside each process" in local.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('backend = "redis://127.0.0.1:6379/0"\n[budgets.user]\nmax_tokens = -1\n')
    broken = tether(app, bad, "kill", "list")
    assert broken.exit_code == 2 and "budgets.user.max_tokens: must be 0 or more; got -1" in broken.stderr
