"""Budgets, rate limits and the kill switch across two `tether worker` processes.

Two workers share a PostgreSQL journal and one governance file whose backend is Redis, then PostgreSQL.
Every figure checked comes from the journals (the events the workers wrote) and from the shared
counters, never from how fast the test ran:

- budgets: runs of several users under a per-user daily token budget; the shared counters equal the sum
  of the `usage_charged` events exactly, and the runs the budget refuses end `budget_exceeded` with the
  figures;
- rate limits: one user's bucket, drawn from by both workers; the `model_responded` times never show
  more calls than the bucket allows in any window;
- the kill switch: `tether kill --agent` from the shell while runs of that agent run on both workers;
  each ends `cancelled` with the switch's reason before its next step, another agent's runs go on, and
  after `tether unkill` new runs complete.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import gov_worker_agents as agents
import pytest
from gov_helpers import POSTGRES_DSN, drop_schema, new_schema_name, postgres_url

from tether.governance import NANO_USD, BudgetKeys, load_governance
from tether.journal import ModelResponded, RunResumed, UsageCharged
from tether.journal.stores.postgres import PostgresStore
from tether.workers import submit

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

TETHER = [sys.executable, "-m", "tether.cli"]


@dataclass
class Fleet:
    """Two (or more) `tether worker` processes on one store and one governance file."""

    store_url: str
    store: PostgresStore
    governance: Path
    logs: Path
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, concurrency: int) -> None:
        out = open(self.logs / f"{name}.out", "wb")  # noqa: SIM115 - lives as long as the process
        err = open(self.logs / f"{name}.err", "wb")  # noqa: SIM115 - likewise
        self.procs[name] = subprocess.Popen(
            [*TETHER, "worker", "--store", self.store_url, "--governance", str(self.governance),
             "--concurrency", str(concurrency), "--poll-s", "0.05", "--lease-s", "10",
             "--worker-id", name, "--json"],
            env=self.env, stdout=out, stderr=err,
        )  # fmt: skip
        out.close()
        err.close()

    async def ready(self, name: str) -> None:
        """Wait until the worker has loaded the governance file and is claiming."""
        log = self.logs / f"{name}.err"
        with anyio.fail_after(30):
            while f"worker {name}:" not in log.read_text(errors="replace"):
                assert self.procs[name].poll() is None, self.log(name)
                await anyio.sleep(0.05)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.err").read_text(errors="replace")[-3000:]

    def stop(self) -> dict[str, dict[str, Any]]:
        """SIGTERM (drain) every worker; returns each one's final figures."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        stats: dict[str, dict[str, Any]] = {}
        for name, proc in self.procs.items():
            try:
                code = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            assert code == 0, f"worker {name} exited {code}: {self.log(name)}"
            stats[name] = json.loads((self.logs / f"{name}.out").read_text())
        return stats

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def tether(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The CLI in a process of its own, on the fleet's store and governance file."""
        return subprocess.run(
            [*TETHER, *args, "--governance", str(self.governance), "--json"],
            env={**self.env, "TETHER_STORE": self.store_url},
            capture_output=True,
            text=True,
            timeout=60,
        )


Start = Callable[[str], Awaitable[Fleet]]


@pytest.fixture(params=["redis", "postgres"])
async def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Start]:
    """Starts a fleet whose governance file has the given body, on the backend of this parameter."""
    if request.param == "redis":
        backend = (
            f'backend = "redis://127.0.0.1:6379/0"\nprefix = "{request.getfixturevalue("redis_prefix")}"\n'
        )
        gov_schema = None
    else:
        gov_schema = new_schema_name()
        backend = f'backend = "{postgres_url(gov_schema)}"\n'
    store_schema = new_schema_name()
    started: list[Fleet] = []

    async def start(body: str) -> Fleet:
        path = tmp_path / "governance.toml"
        path.write_text(backend + body)
        url = postgres_url(store_schema)
        env = {**os.environ, "GOV_GATE": str(tmp_path / "gate"), "TETHER_LOG_FORMAT": "json"}
        f = Fleet(url, PostgresStore(POSTGRES_DSN, schema=store_schema, max_size=4), path, tmp_path, env)
        started.append(f)
        return f

    try:
        yield start
    finally:
        for f in started:
            f.kill_all()
            await f.store.aclose()
        await drop_schema(store_schema)
        if gov_schema is not None:
            await drop_schema(gov_schema)


async def wait_until(predicate: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 30) -> None:
    with anyio.fail_after(timeout_s):
        while not await predicate():
            await anyio.sleep(0.05)


async def all_finished(store: PostgresStore, run_ids: list[str]) -> bool:
    return all([(await store.get_run(r)).terminal for r in run_ids])


async def pids(store: PostgresStore, run_ids: list[str]) -> set[int]:
    """The worker processes that ran these runs, from their journals."""
    return {s.event.pid for r in run_ids for s in await store.load(r) if isinstance(s.event, RunResumed)}


# -- budgets --------------------------------------------------------------------------------------------

USERS = ["ana", "ben", "cho"]
RUNS_PER_USER = 4
BUDGET = 1000
CONCURRENCY = 2
BUDGET_FILE = f"""
[budgets.user]
max_tokens = {BUDGET}

[budgets.run]
max_tokens = 1_000_000

[prices.models."test:scripted"]
input = 1.5
output = 6.0
"""


async def test_budgets_are_exact_and_enforced_across_two_workers(
    fleet: Start, capsys: pytest.CaptureFixture[str]
) -> None:
    f = await fleet(BUDGET_FILE)
    f.start("w1", CONCURRENCY)
    f.start("w2", CONCURRENCY)
    await f.ready("w1")
    await f.ready("w2")
    runs: dict[str, list[str]] = {u: [] for u in USERS}
    for i in range(RUNS_PER_USER):
        for user in USERS:
            runs[user].append(await submit(f.store, agents.metered, f"run {i}", user_id=user))
    every = [r for ids in runs.values() for r in ids]
    await wait_until(lambda: all_finished(f.store, every), "every run finished")
    stats = f.stop()

    gov = load_governance(f.governance)
    assert gov.ledger is not None
    figures: dict[str, Any] = {}
    for user, ids in runs.items():
        spent_tokens = spent_nano = 0
        statuses: Counter[str] = Counter()
        refused_at: list[int] = []
        for run_id in ids:
            info = await f.store.get_run(run_id)
            statuses[info.status] += 1
            charges = [s.event for s in await f.store.load(run_id) if isinstance(s.event, UsageCharged)]
            tokens = sum(c.usage.total_tokens for c in charges)
            nano = sum(round(c.cost_usd * NANO_USD) for c in charges)
            # the run's own counter holds exactly what its journal charged
            (run_spend,) = (await gov.ledger.spent(BudgetKeys(run_id=run_id))).values()
            assert (run_spend.tokens, round(run_spend.usd * NANO_USD)) == (tokens, nano), run_id
            spent_tokens += tokens
            spent_nano += nano
            if info.status == "budget_exceeded":
                match = re.fullmatch(
                    rf"budget exceeded: user '{user}' on \d{{4}}-\d\d-\d\d \(UTC\): ([\d,]+) tokens spent "
                    rf"\+ 0 tokens projected > 1,000 tokens allowed",
                    info.reason or "",
                )
                assert match, info.reason
                refused_at.append(int(match[1].replace(",", "")))
            else:
                assert info.status == "completed", (info.status, info.reason)
        (user_spend,) = (await gov.ledger.spent(BudgetKeys(user_id=user))).values()
        # exact attribution: the shared counter is the sum of every charge the journals record
        assert user_spend.tokens == spent_tokens and round(user_spend.usd * NANO_USD) == spent_nano
        # enforced: a call goes ahead only while spend is under the budget, so it overshoots by at most the
        # calls in flight at once (one per run slot); runs beyond that end budget_exceeded
        assert BUDGET <= user_spend.tokens < BUDGET + 2 * CONCURRENCY * agents.TOKENS_PER_CALL
        assert statuses["budget_exceeded"] >= 1 and statuses["completed"] >= 1, statuses
        # each refusal quotes what the user had spent then: at least the budget, at most the final figure
        assert all(BUDGET <= spent <= user_spend.tokens for spent in refused_at), refused_at
        figures[user] = {"tokens": user_spend.tokens, **statuses}
    await gov.aclose()
    assert len(await pids(f.store, every)) == 2  # both workers ran some
    assert sum(s["finished"] for s in stats.values()) == len(every)
    with capsys.disabled():
        print(f"\nbudget figures (limit {BUDGET} tokens a user): {json.dumps(figures)}", flush=True)


# -- rate limits ----------------------------------------------------------------------------------------

CAPACITY, RATE = 2, 4.0
RATE_FILE = f"""
[rate_limits."user:pat"]
capacity = {CAPACITY}
refill_per_s = {RATE}
"""
PACED_RUNS = 10
LATENCY_S = 0.5
"""Slack between taking a token and journaling the model's response (scheduling, the journal write)."""


async def test_a_rate_limit_holds_across_two_workers(
    fleet: Start, capsys: pytest.CaptureFixture[str]
) -> None:
    f = await fleet(RATE_FILE)
    f.start("w1", 3)
    f.start("w2", 3)
    await f.ready("w1")
    await f.ready("w2")
    ids = [await submit(f.store, agents.paced, f"run {i}", user_id="pat") for i in range(PACED_RUNS)]
    await wait_until(lambda: all_finished(f.store, ids), "every run finished")
    f.stop()

    times: list[float] = []
    for run_id in ids:
        assert (await f.store.get_run(run_id)).status == "completed"
        times += [s.event.at for s in await f.store.load(run_id) if isinstance(s.event, ModelResponded)]
    times.sort()
    assert len(times) == PACED_RUNS * agents.CALLS_PER_RUN
    # the token bucket's promise: over any span, at most capacity + rate x span calls
    worst = max(
        (j - i + 1) - (CAPACITY + RATE * (times[j] - times[i] + LATENCY_S))
        for i in range(len(times))
        for j in range(i, len(times))
    )
    assert worst <= 0, f"{worst:.2f} calls more than the bucket allows; times {times}"
    # and it did bind: unlimited, these calls take a fraction of a second
    assert times[-1] - times[0] >= (len(times) - CAPACITY) / RATE - LATENCY_S
    assert len(await pids(f.store, ids)) == 2
    achieved = (len(times) - CAPACITY) / (times[-1] - times[0])
    with capsys.disabled():
        print(
            f"\nrate figures: {len(times)} calls, {achieved:.2f}/s beyond the burst (limit {RATE}/s)",
            flush=True,
        )


# -- the kill switch ------------------------------------------------------------------------------------


async def test_a_kill_switch_from_the_shell_stops_runs_on_both_workers(fleet: Start, tmp_path: Path) -> None:
    f = await fleet("")
    gate = tmp_path / "gate"

    async def claimed(run_ids: list[str]) -> None:
        async def going() -> bool:
            for run_id in run_ids:
                events = [s.event for s in await f.store.load(run_id)]
                if not any(isinstance(e, ModelResponded) for e in events):
                    return False
            return True

        await wait_until(going, f"{run_ids} running")

    # one worker at a time, each full with a run of each agent: runs of `stoppable` are on both
    f.start("w1", 2)
    await f.ready("w1")
    first = [await submit(f.store, agents.stoppable, "x"), await submit(f.store, agents.steady, "y")]
    await claimed(first)
    f.start("w2", 2)
    await f.ready("w2")
    second = [await submit(f.store, agents.stoppable, "x"), await submit(f.store, agents.steady, "y")]
    await claimed(second)
    stopped, steady = [first[0], second[0]], [first[1], second[1]]
    assert len(await pids(f.store, stopped)) == 2

    out = f.tether("kill", "--agent", "stoppable", "--by", "oncall", "--reason", "runaway loop")
    # the switch is in the backend by the time the command returns (its record is stamped just before
    # the write, so journal times between the two may precede it)
    engaged_by = time.time()
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["engaged"]["at"] <= engaged_by

    await wait_until(lambda: all_finished(f.store, stopped), "the stopped runs ended", timeout_s=10)
    for run_id in stopped:
        info = await f.store.get_run(run_id)
        assert (info.status, info.reason) == (
            "cancelled",
            "kill switch: stopped by kill switch: agent:stoppable engaged by 'oncall': runaway loop",
        )
        after = [
            s.event
            for s in await f.store.load(run_id)
            if isinstance(s.event, ModelResponded) and s.event.at > engaged_by
        ]
        assert len(after) <= 1, after  # at most the model call already in flight: no step began after it
    # the other agent's runs are still going on both workers; a new run of the stopped one does not start
    assert not any([(await f.store.get_run(r)).terminal for r in steady])
    blocked = await submit(f.store, agents.stoppable, "x")
    await wait_until(lambda: all_finished(f.store, [blocked]), "the blocked run ended", timeout_s=10)
    blocked_info = await f.store.get_run(blocked)
    assert (blocked_info.status, blocked_info.steps) == ("cancelled", 0)

    gate.touch()  # the steady runs may finish now
    await wait_until(lambda: all_finished(f.store, steady), "the steady runs ended")
    for run_id in steady:
        info = await f.store.get_run(run_id)
        assert (info.status, info.output) == ("completed", "through the gate")

    out = f.tether("unkill", "--agent", "stoppable", "--by", "oncall", "--reason", "fixed")
    assert out.returncode == 0, out.stderr
    again = await submit(f.store, agents.stoppable, "x")
    await wait_until(lambda: all_finished(f.store, [again]), "the new run ended")
    assert (await f.store.get_run(again)).status == "completed"
    f.stop()

    history = json.loads(f.tether("kill", "list").stdout)["history"]
    assert [(r["action"], r["switch"], r["by"]) for r in history] == [
        ("engage", "agent:stoppable", "oncall"),
        ("release", "agent:stoppable", "oncall"),
    ]
