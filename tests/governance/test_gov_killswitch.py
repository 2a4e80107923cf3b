"""The kill switch: scopes, audit records, refusals that change nothing, and Redis or PostgreSQL seen by
every worker."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from gov_helpers import BACKENDS, POSTGRES_DSN, SHARED
from gov_helpers import kill_switch as make

from tether import ConfigError
from tether.governance import GovernanceUnavailable, KillRecord
from tether.testing import FakeClock

pytestmark = pytest.mark.anyio


@pytest.fixture(params=BACKENDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


async def test_scopes_records_and_release(kind: str, request: pytest.FixtureRequest) -> None:
    clock = FakeClock()
    ks = make(kind, request, clock)
    try:
        assert (await ks.check("support", tool="refund", user="alice")).allowed
        record = await ks.engage("tool", "refund", by="oncall", reason="refunds double-paid")
        assert record == KillRecord(
            action="engage",
            scope="tool",
            target="refund",
            by="oncall",
            reason="refunds double-paid",
            at=clock.now(),
        )
        assert (await ks.check("support", tool="lookup", user="alice")).allowed
        stopped = await ks.check("support", tool="refund", user="alice")
        assert not stopped.allowed and stopped.engaged == (record,)
        assert (
            stopped.reason == "stopped by kill switch: tool:refund engaged by 'oncall': refunds double-paid"
        )

        await ks.engage("user", "mallory", by="trust", reason="abuse")
        await ks.engage("agent", "support", by="oncall", reason="bad release")
        assert not (await ks.check("support")).allowed
        assert (await ks.check("billing", user="alice")).allowed
        assert not (await ks.check("billing", user="mallory")).allowed
        clock.advance(60)
        glob = await ks.engage("global", by="cto", reason="incident 42")
        assert not (await ks.check("billing", user="alice")).allowed
        assert [r.field for r in await ks.active()] == [
            "agent:support",
            "global",
            "tool:refund",
            "user:mallory",
        ]

        released = await ks.release("global", by="cto", reason="resolved")
        assert (released.action, released.at) == ("release", glob.at)
        assert (await ks.check("billing", user="alice")).allowed
        with pytest.raises(
            ConfigError, match=r"no kill switch is engaged for 'global'; engaged: \['agent:support'"
        ):
            await ks.release("global", by="cto")
        history = await ks.history()
        assert [(r.action, r.field) for r in history] == [
            ("engage", "tool:refund"),
            ("engage", "user:mallory"),
            ("engage", "agent:support"),
            ("engage", "global"),
            ("release", "global"),
        ]
        assert history[-1].by == "cto" and history[-1].reason == "resolved"
    finally:
        await ks.aclose()


async def test_unknown_agent_is_refused_and_nothing_changes(
    kind: str, request: pytest.FixtureRequest
) -> None:
    ks = make(kind, request, FakeClock(), known_agents=["support", "billing"], known_tools=["refund"])
    try:
        with pytest.raises(
            ConfigError, match=r"unknown agent 'suport'; known agents: \['billing', 'support'\]"
        ):
            await ks.engage("agent", "suport", by="oncall", reason="typo")
        with pytest.raises(ConfigError, match="unknown tool 'refnd'"):
            await ks.engage("tool", "refnd", by="oncall", reason="typo")
        with pytest.raises(ConfigError, match="needs a reason"):
            await ks.engage("agent", "support", by="oncall", reason=" ")
        with pytest.raises(ConfigError, match="needs `by`"):
            await ks.engage("agent", "support", by="", reason="x")
        with pytest.raises(ConfigError, match="takes no target"):
            await ks.engage("global", "support", by="oncall", reason="x")
        with pytest.raises(ConfigError, match="needs a target"):
            await ks.engage("user", None, by="oncall", reason="x")
        assert await ks.active() == [] and await ks.history() == []
    finally:
        await ks.aclose()


WORKER = textwrap.dedent(
    """
    import sys, anyio

    async def main():
        if sys.argv[1] == "redis":
            from tether.governance.redis import RedisKillSwitch
            ks = RedisKillSwitch(prefix=sys.argv[2])
        else:
            from tether.governance.postgres import PostgresKillSwitch
            ks = PostgresKillSwitch(url=sys.argv[3], schema=sys.argv[2])
        if sys.argv[4] == "engage":
            await ks.engage("agent", "support", by="oncall", reason="stop it")
        else:
            d = await ks.check("support")
            print(d.allowed, d.reason)
        await ks.aclose()

    anyio.run(main)
    """
)


@pytest.mark.parametrize("shared", SHARED)
def test_a_switch_engaged_in_one_process_stops_another(shared: str, request: pytest.FixtureRequest) -> None:
    where = request.getfixturevalue("redis_prefix" if shared == "redis" else "gov_pg_schema")

    def worker(action: str) -> str:
        out = subprocess.run(
            [sys.executable, "-c", WORKER, shared, where, POSTGRES_DSN, action],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert worker("check") == "True no kill switch engaged"
    worker("engage")
    assert worker("check") == "False stopped by kill switch: agent:support engaged by 'oncall': stop it"


async def test_redis_unreachable_fails_closed() -> None:
    from tether.governance.redis import RedisKillSwitch

    ks = RedisKillSwitch(url="redis://127.0.0.1:1/0")
    with pytest.raises(GovernanceUnavailable, match="unreachable while checking the kill switch"):
        await ks.check("support")
    await ks.aclose()


async def test_postgres_unreachable_fails_closed() -> None:
    from tether.governance.postgres import PostgresKillSwitch

    ks = PostgresKillSwitch(url="postgresql://root:secret@127.0.0.1:1/test")
    with pytest.raises(GovernanceUnavailable) as info:
        await ks.check("support")
    await ks.aclose()
    message = str(info.value)
    assert "unreachable while checking the kill switch" in message and "127.0.0.1:1/test" in message
    assert "start the server" in message and "secret" not in message and "\n" not in message
    assert info.value.retryable
