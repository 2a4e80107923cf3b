"""Replay: journals recorded by the test suite are re-driven with the current code; a changed path fails
with a readable diff (as Temporal's replay tests do).

`journals/*.jsonl` were written by `record.py` from the scenarios in `replay_scenarios.py`. Each is
replayed with its scenario's agent as the code defines it today: the model answers from the journal and
no tool runs. A change to tether or to an agent that makes a recorded run take another path (a check
moved, a precondition added, a limit changed) fails here and shows where.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from replay_scenarios import SCENARIOS

from tether import ConfigError, Limits
from tether.journal import Event, MemoryStore, event_adapter
from tether.runtime import Runner, check_replay

pytestmark = pytest.mark.anyio

JOURNALS = Path(__file__).resolve().parent / "journals"


def read(name: str) -> list[Event]:
    lines = (JOURNALS / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    return [event_adapter.validate_json(line) for line in lines if line]


def test_every_scenario_has_a_recorded_journal_and_back() -> None:
    assert sorted(p.stem for p in JOURNALS.glob("*.jsonl")) == sorted(SCENARIOS)


def test_the_journals_cover_the_paths_a_run_can_take() -> None:
    seen = {
        (e.type, getattr(e, "kind", None) or getattr(e, "status", None))
        for name in SCENARIOS
        for e in read(name)
    }
    for path in [
        ("tool_completed", None),
        ("answer_rejected", None),
        ("tool_failed", "ungrounded"),
        ("tool_failed", "precondition"),
        ("tool_failed", "raised"),
        ("run_finished", "max_steps"),
        ("run_finished", "completed"),
    ]:
        assert path in seen, path


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_recorded_journals_replay_against_the_current_code(name: str) -> None:
    report = await check_replay(read(name), SCENARIOS[name].agent(), run_id=f"{name}.jsonl")
    assert report.ok, report.diff
    assert report.recorded == report.replayed and report.diff == ""
    assert report.recorded[0] == "run_started" and report.recorded[-1].startswith("run_finished status=")


async def test_a_precondition_added_to_a_tool_fails_the_replay_with_a_readable_diff() -> None:
    # refund now also requires check_policy, which the recorded run never called
    changed = SCENARIOS["tool_calls"].agent(refund_requires=("lookup_order", "check_policy"))
    report = await check_replay(read("tool_calls"), changed, run_id="tool_calls.jsonl")
    assert not report.ok
    assert report.first_divergence == 7
    assert report.recorded[7] == "tool_started step=2 tool=refund"
    assert report.replayed[7] == "tool_failed step=2 tool=refund kind=precondition"
    first, *diff = report.diff.splitlines()
    assert first == (
        "replay of tool_calls.jsonl diverged at event 7: the journal recorded `tool_started step=2 "
        "tool=refund`, the current code did `tool_failed step=2 tool=refund kind=precondition`"
    )
    assert diff[:3] == ["--- recorded", "+++ replayed with the current code", "@@ -5,8 +5,7 @@"]
    assert diff[3:] == [
        " tool_completed step=1 tool=lookup_order",
        " model_responded step=2 calls=refund",
        " usage_charged step=2",
        "-tool_started step=2 tool=refund",
        "-tool_completed step=2 tool=refund",
        "+tool_failed step=2 tool=refund kind=precondition",
        " model_responded step=3 answer",
        " usage_charged step=3",
        " run_finished status=completed",
    ]


async def test_a_lowered_limit_shows_as_the_run_ending_early() -> None:
    changed = SCENARIOS["rejected_answer"].agent()
    changed.limits = Limits(max_steps=6, max_answer_retries=0)  # a rejected answer now ends the run
    report = await check_replay(read("rejected_answer"), changed)
    assert report.first_divergence == 3
    assert report.recorded[3] == "answer_rejected step=1"
    assert report.replayed[3:] == ("run_finished status=failed",)
    assert "diverged at event 3" in report.diff.splitlines()[0]


async def test_more_model_calls_than_were_recorded_is_a_divergence() -> None:
    changed = SCENARIOS["max_steps"].agent()
    changed.limits = Limits(max_steps=5)  # it would have asked the model twice more
    report = await check_replay(read("max_steps"), changed)
    assert report.first_divergence == len(report.recorded) - 1
    assert report.recorded[-1] == "run_finished status=max_steps"
    assert report.replayed[-2:] == ("model_failed step=4", "run_finished status=failed")


async def test_a_stored_journal_replays_and_is_named_by_its_run_id() -> None:
    store = MemoryStore()
    scenario = SCENARIOS["precondition"]
    result = await Runner(store).run(scenario.agent(), scenario.input)
    report = await check_replay(await store.load(result.run_id), scenario.agent())
    assert report.ok and report.run_id == result.run_id
    changed = scenario.agent(refund_requires=())  # the refund is no longer refused before the lookup
    report = await check_replay(await store.load(result.run_id), changed)
    assert not report.ok and report.diff.startswith(f"replay of {result.run_id} diverged at event 3")


async def test_a_journal_that_does_not_begin_with_run_started_is_refused() -> None:
    with pytest.raises(ConfigError, match="begins with run_started"):
        await check_replay(read("tool_calls")[1:], SCENARIOS["tool_calls"].agent())
