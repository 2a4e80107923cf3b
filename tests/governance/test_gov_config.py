"""Governance files: what a worker and the CLI load, and a clear error for every mistake in one."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from gov_helpers import postgres_url

from tether import Agent, ConfigError, Runner
from tether.governance import (
    GOVERNANCE_ENV,
    Budget,
    InMemoryCounters,
    InMemoryKillSwitch,
    InMemoryRateLimiter,
    ModelPrice,
    RateLimit,
    load_governance,
)
from tether.journal import MemoryStore
from tether.models import Usage
from tether.testing import ScriptedModel

pytestmark = pytest.mark.anyio

FULL = """
backend = "{backend}"
{prefix}

[budgets.run]
max_tokens = 50_000

[budgets.user]
max_tokens = 200_000
max_usd = 5

[budgets."user:intern"]
max_usd = 0.5

[budgets.feature]
max_usd = 100.0
period = "total"

[rate_limits.user]
per_minute = 30
burst = 10

[rate_limits."feature:search"]
capacity = 5
refill_per_s = 0.5

[rate_limits.default]
per_second = 20

[prices]
unknown = "zero"

[prices.models."openai:gpt-4o-mini@*"]
input = 0.15
output = 0.60
"""


def write(tmp_path: Path, text: str, name: str = "governance.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


async def test_a_full_file_in_memory(tmp_path: Path) -> None:
    gov = load_governance(write(tmp_path, FULL.format(backend="memory", prefix="")))
    assert isinstance(gov.kill_switch, InMemoryKillSwitch)
    assert isinstance(gov.limiter, InMemoryRateLimiter)
    assert gov.ledger is not None and isinstance(gov.ledger.counters, InMemoryCounters)
    assert gov.ledger.budgets == (
        Budget(scope="run", max_tokens=50_000, period="total"),
        Budget(scope="user", max_tokens=200_000, max_usd=5.0, period="day"),
        Budget(scope="user", max_usd=0.5, period="day", target="intern"),
        Budget(scope="feature", max_usd=100.0, period="total"),
    )
    limits = gov.limiter.limits
    assert limits.for_key("user:bob") == RateLimit(capacity=10, refill_per_s=0.5)
    assert limits.for_key("feature:search") == RateLimit(capacity=5, refill_per_s=0.5)
    assert limits.for_key("tool:refund") == RateLimit(capacity=20, refill_per_s=20)
    assert gov.prices is not None
    assert gov.prices.price("openai:gpt-4o-mini@https://api.openai.com/v1") == ModelPrice(
        input=0.15, output=0.6
    )
    assert gov.prices.unknown == "zero"
    await gov.aclose()


async def test_shared_backends_by_url(tmp_path: Path, redis_prefix: str) -> None:
    from tether.governance.postgres import PostgresCounters, PostgresKillSwitch, PostgresRateLimiter
    from tether.governance.redis import RedisCounters, RedisKillSwitch, RedisRateLimiter

    redis = load_governance(
        write(tmp_path, FULL.format(backend="redis://127.0.0.1:6379/0", prefix=f'prefix = "{redis_prefix}"'))
    )
    assert isinstance(redis.kill_switch, RedisKillSwitch) and isinstance(redis.limiter, RedisRateLimiter)
    assert redis.ledger is not None and isinstance(redis.ledger.counters, RedisCounters)
    assert (await redis.kill_switch.check("support")).allowed  # it connects, under the prefix given
    await redis.aclose()

    pg = load_governance(
        write(tmp_path, FULL.format(backend=postgres_url("gov_cfg_schema") + "&max_size=2", prefix=""))
    )
    assert isinstance(pg.kill_switch, PostgresKillSwitch) and isinstance(pg.limiter, PostgresRateLimiter)
    assert pg.ledger is not None and isinstance(pg.ledger.counters, PostgresCounters)
    assert pg.kill_switch.schema == "gov_cfg_schema"  # nothing is contacted until first use
    await pg.aclose()


async def test_the_environment_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "kill_switch = false\n[budgets.run]\nmax_tokens = 10\n")
    monkeypatch.setenv(GOVERNANCE_ENV, str(path))
    gov = load_governance()
    assert gov.kill_switch is None and gov.limiter is None and gov.prices is None
    assert gov.ledger is not None and gov.ledger.budgets == (Budget(scope="run", max_tokens=10),)
    monkeypatch.delenv(GOVERNANCE_ENV)
    with pytest.raises(
        ConfigError, match=r"no governance file: pass one \(--governance FILE\) or set TETHER_GOVERNANCE"
    ):
        load_governance()


async def test_a_price_file_is_found_next_to_the_governance_file(tmp_path: Path) -> None:
    write(
        tmp_path,
        '[models."local:*"]\ninput = 0\noutput = 0\n[models."x:y"]\ninput = 1\noutput = 2\n',
        "p.toml",
    )
    gov = load_governance(write(tmp_path, 'prices = "p.toml"\n'))
    assert gov.prices is not None and gov.prices.price("x:y") == ModelPrice(input=1, output=2)


async def test_a_loaded_budget_ends_a_run_with_the_figures(tmp_path: Path) -> None:
    gov = load_governance(write(tmp_path, "[budgets.user]\nmax_tokens = 100\n"))
    agent = Agent("support", model=ScriptedModel(["fine"], usage=Usage(input_tokens=80, output_tokens=40)))
    store = MemoryStore()
    first = await Runner(store, governance=gov).run(agent, "hello", user_id="alice")
    assert first.ok
    second = await Runner(store, governance=gov).run(agent, "hello", user_id="alice")
    assert second.status == "budget_exceeded"
    assert (
        "user 'alice'" in second.reason
        and "120 tokens spent" in second.reason
        and "100 tokens allowed" in second.reason
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'backends = "memory"\n',
            r"backends: unknown key \['backends'\] in the top level; known: \['backend'",
        ),
        ('backend = "mysql://db"\n', r"backend: unknown backend 'mysql://db'; use \"memory\""),
        ("backend = 5\n", "backend: must be a string; got 5"),
        (
            'backend = "postgresql://h/db?max_size=0"\n',
            "backend: max_size must be a whole number of at least 1",
        ),
        ('backend = "postgresql://h/db?schema=Bad-Name"\n', "backend: PostgreSQL schema name 'Bad-Name'"),
        ('prefix = "x:"\n', "prefix: applies to a Redis backend only"),
        ("kill_switch = 1\n", "kill_switch: must be true or false; got 1"),
        ("[budgets.user]\nmax_tokens = -5\n", r"budgets.user.max_tokens: must be 0 or more; got -5"),
        ("[budgets.user]\nmax_usd = -0.5\n", r"budgets.user.max_usd: must be 0 or more; got -0.5"),
        ("[budgets.user]\nmax_tokens = 1.5\n", r"budgets.user.max_tokens: must be a whole number; got 1.5"),
        (
            '[budgets.user]\nmax_tokens = "lots"\n',
            r"budgets.user.max_tokens: must be a whole number; got 'lots'",
        ),
        (
            "[budgets.user]\nmax_token = 5\n",
            r"budgets.user.max_token: unknown key \['max_token'\] in \[budgets.user\]",
        ),
        ("[budgets.user]\nperiod = 'day'\n", "budgets.user: needs max_tokens, max_usd or both"),
        ("[budgets.team]\nmax_tokens = 5\n", r"budgets.team: names no budget; use \[budgets.run\]"),
        ('[budgets."run:r1"]\nmax_tokens = 5\n', "a run budget applies to every run; it takes no target"),
        (
            "[budgets.run]\nmax_tokens = 5\nperiod = 'day'\n",
            "budgets.run.period: a run budget covers the whole run",
        ),
        (
            "[budgets.user]\nmax_tokens = 5\nperiod = 'week'\n",
            'budgets.user.period: must be "total" or "day"',
        ),
        ("budgets = 5\n", r"budgets: must be a table \(\[budgets\]\); got 5"),
        ("[rate_limits.users]\nper_second = 1\n", r"rate_limits.users: names no bucket"),
        ("[rate_limits.user]\nburst = 3\n", "rate_limits.user: give exactly one rate"),
        (
            "[rate_limits.user]\nper_second = 1\nper_minute = 60\n",
            r"give exactly one rate.*got \['per_second', 'per_minute'\]",
        ),
        ("[rate_limits.user]\nper_second = 0\n", "rate_limits.user.per_second: must be positive; got 0"),
        ("[rate_limits.user]\nrefill_per_s = 1\n", "rate_limits.user: refill_per_s needs capacity"),
        (
            "[rate_limits.user]\nper_second = 1\ncapacity = 3\n",
            "rate_limits.user.capacity: goes with refill_per_s",
        ),
        ("[rate_limits.user]\nper_second = 1\nrate = 3\n", r"rate_limits.user.rate: unknown key"),
        ("[prices]\ncurrency = 'EUR'\n", r"prices: \[prices\]: unknown keys \['currency'\]"),
        (
            '[prices.models."m"]\ninput = -1\noutput = 1\n',
            "prices: ModelPrice.input must be a number of USD, 0 or more",
        ),
        ('prices = "missing.toml"\n', "prices: no price file"),
        ("[budgets\n", "is not valid TOML"),
    ],
)
def test_every_mistake_names_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_governance(path)
    assert str(path) in str(info.value)


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no governance file '.*nope\.toml'; check the path"):
        load_governance(tmp_path / "nope.toml")
