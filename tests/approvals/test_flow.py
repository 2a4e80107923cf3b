"""Approvals in the loop: a policy decides each call; high risk suspends the run until a human decides,
critical makes the caller wait; deadlines, escalation, edits and in-doubt calls; all in the journal."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from tether import Agent, Runner, tool
from tether.approvals import ApprovalError, Approvals, TierPolicy
from tether.journal import ApprovalDecided, ApprovalRequested, Store, ToolFailed, ToolStarted, call_hash
from tether.models import ModelResponse, ToolCall, ToolResultMessage
from tether.testing import FakeClock, ScriptedModel, call

pytestmark = pytest.mark.anyio


class ProcessDied(BaseException):
    """Stands in for kill -9: nothing after it runs."""


def build(
    effects: list[str],
    *,
    risk: str = "high",
    policy: Any = None,
    confidence: float | None = None,
    crash: bool = False,
    idempotent: bool = False,
) -> Agent:
    @tool
    def lookup_order(order_id: str) -> str:
        """Read an order."""
        return f"order {order_id}: kettle, paid 49.00"

    @tool(risk=risk, reversible=False, idempotent=idempotent)  # type: ignore[arg-type]
    def refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        effects.append(f"refund {order_id} {amount}")
        if crash:
            raise ProcessDied
        return f"refunded {amount}"

    def script(messages: Any, tools: Any) -> Any:
        results = [m for m in messages if isinstance(m, ToolResultMessage)]
        done = [m.name for m in results]
        if "lookup_order" not in done:
            return call("lookup_order", order_id="1042")
        if "refund" not in done:
            c = call("refund", order_id="1042", amount=49.0)
            if confidence is not None:
                c = ToolCall(call_id=c.call_id, name=c.name, arguments=c.arguments, confidence=confidence)
            return ModelResponse(tool_calls=(c,))
        last = results[-1]
        return "Refunded 49.00" if not last.is_error else f"No refund: {last.content[:80]}"

    return Agent(
        "support",
        tools=[lookup_order, refund],
        model=ScriptedModel(script),
        ref="tests:unused",
        policy=policy,
    )


def _events(stored: Any, kind: type) -> list[Any]:
    return [s.event for s in stored if isinstance(s.event, kind)]


async def test_high_risk_suspends_until_approved_then_runs(store: Store) -> None:
    effects: list[str] = []
    clock = FakeClock()
    runner = Runner(store, clock=clock)
    result = await runner.run(build(effects), "refund order 1042", run_id="r1")
    assert result.status == "suspended" and result.waiting_for is not None
    assert effects == []  # nothing ran
    assert (await store.get_run("r1")).status == "suspended"
    approvals = Approvals(store, clock=clock)
    (pending,) = await approvals.list()
    assert pending.request_id == result.waiting_for and pending.status == "pending"
    assert pending.request.tool == "refund" and pending.request.arguments == {
        "order_id": "1042",
        "amount": 49.0,
    }
    assert (
        pending.request.risk == "high"
        and not pending.request.reversible
        and "high risk" in pending.request.reason
    )

    # resuming before a decision changes nothing and writes nothing
    count = (await store.get_run("r1")).event_count
    again = await runner.resume("r1", build(effects))
    assert again.status == "suspended" and (await store.get_run("r1")).event_count == count

    decided = await approvals.approve(pending.request_id, by="ana", reason="customer verified")
    assert decided.decision == "approved"
    assert (await store.get_run("r1")).status == "pending"  # ready for whoever resumes it
    done = await runner.resume("r1", build(effects))
    assert done.status == "completed" and done.output == "Refunded 49.00"
    assert effects == ["refund 1042 49.0"]
    started = [e for e in _events(await store.load("r1"), ToolStarted) if e.tool == "refund"]
    assert started[0].policy == "approved" and "ana" in started[0].policy_reason
    with pytest.raises(ApprovalError, match="already decided: approved by ana"):
        await approvals.reject(pending.request_id, by="bo", reason="too late")


async def test_rejection_goes_back_to_the_model_with_its_reason(store: Store) -> None:
    effects: list[str] = []
    clock = FakeClock()
    runner = Runner(store, clock=clock)
    result = await runner.run(build(effects), "refund order 1042", run_id="r1")
    await Approvals(store, clock=clock).reject(
        result.waiting_for or "", by="ana", reason="order was never paid"
    )
    done = await runner.resume("r1", build(effects))
    assert effects == [] and done.status == "completed"
    (failed,) = _events(await store.load("r1"), ToolFailed)
    assert failed.kind == "rejected" and "ana" in failed.message and "order was never paid" in failed.message
    assert "order was never paid" in (done.output or "")


async def test_edit_then_approve_runs_the_edited_arguments_and_keeps_both(store: Store) -> None:
    effects: list[str] = []
    clock = FakeClock()
    runner = Runner(store, clock=clock)
    agent = build(effects)
    result = await runner.run(agent, "refund order 1042", run_id="r1")
    approvals = Approvals(store, clock=clock)
    request_id = result.waiting_for or ""
    with pytest.raises(ApprovalError, match="do not fit the tool"):
        await approvals.approve(
            request_id,
            by="ana",
            arguments={"order_id": "1042", "amount": "lots"},
            validate=agent.tools["refund"].validate,
        )
    assert (await approvals.get(request_id)).status == "pending"  # the bad edit changed nothing
    await approvals.approve(
        request_id,
        by="ana",
        reason="half",
        arguments={"order_id": "1042", "amount": 24.5},
        validate=agent.tools["refund"].validate,
    )
    done = await runner.resume("r1", build(effects))
    assert done.status == "completed" and effects == ["refund 1042 24.5"]
    started = [e for e in _events(await store.load("r1"), ToolStarted) if e.tool == "refund"][0]
    assert started.policy == "edited"
    assert started.arguments == {"order_id": "1042", "amount": 24.5}
    assert started.original_arguments == {"order_id": "1042", "amount": 49.0}


async def test_bad_decisions_are_refused_and_change_nothing(store: Store) -> None:
    clock = FakeClock()
    result = await Runner(store, clock=clock).run(build([]), "refund order 1042", run_id="r1")
    approvals = Approvals(store, clock=clock, roster={"approvers": ["ana"]})
    count = (await store.get_run("r1")).event_count
    with pytest.raises(ApprovalError, match="'mallory' may not decide .* group 'approvers' \\(ana\\)"):
        await approvals.approve(result.waiting_for or "", by="mallory")
    with pytest.raises(ApprovalError, match="not an approval request id"):
        await approvals.approve("nonsense", by="ana")
    with pytest.raises(ApprovalError, match="run 'nope' does not exist"):
        await approvals.approve("nope.3", by="ana")
    with pytest.raises(ApprovalError, match="has no such request"):
        await approvals.approve("r1.1", by="ana")
    with pytest.raises(ApprovalError, match="needs a reason"):
        await approvals.reject(result.waiting_for or "", by="ana", reason=" ")
    with pytest.raises(ApprovalError, match="say who decides"):
        await approvals.approve(result.waiting_for or "", by="")
    clock.advance(25 * 3600)  # past the default 24 h deadline
    with pytest.raises(ApprovalError, match="passed its deadline"):
        await approvals.approve(result.waiting_for or "", by="ana")
    assert (await store.get_run("r1")).event_count == count


@pytest.mark.parametrize("on_expiry", ["reject", "fail"])
async def test_an_expired_deadline_takes_its_action_on_resume(store: Store, on_expiry: str) -> None:
    effects: list[str] = []
    clock = FakeClock()
    runner = Runner(store, clock=clock)
    policy = TierPolicy(deadline_s=3600, on_expiry=on_expiry)  # type: ignore[arg-type]
    result = await runner.run(build(effects, policy=policy), "refund order 1042", run_id="r1")
    assert result.wake_at == pytest.approx(clock.now() + 3600)
    clock.advance(3599)
    assert (await runner.resume("r1", build(effects, policy=policy))).status == "suspended"
    clock.advance(2)
    assert (await Approvals(store, clock=clock).get(result.waiting_for or "")).status == "overdue"
    done = await runner.resume("r1", build(effects, policy=policy))
    assert effects == []
    expired = _events(await store.load("r1"), ApprovalDecided)[0]
    assert expired.decision == "expired" and expired.by == "tether" and expired.on_expiry == on_expiry
    if on_expiry == "reject":
        assert done.status == "completed"
        (failed,) = _events(await store.load("r1"), ToolFailed)
        assert failed.kind == "rejected" and "nobody decided before the deadline" in failed.message
    else:
        assert done.status == "failed" and "had no decision by its deadline" in done.reason


async def test_an_expired_request_escalates_to_the_next_group(store: Store) -> None:
    effects: list[str] = []
    clock = FakeClock()
    runner = Runner(store, clock=clock)
    policy = TierPolicy(deadline_s=600, on_expiry="escalate", escalate_to="leads")
    first = await runner.run(build(effects, policy=policy), "refund order 1042", run_id="r1")
    clock.advance(601)
    second = await runner.resume("r1", build(effects, policy=policy))
    assert second.status == "suspended" and second.waiting_for != first.waiting_for
    approvals = Approvals(store, clock=clock, roster={"leads": ["lee"]})
    escalated = await approvals.get(second.waiting_for or "")
    assert escalated.request.approvers == "leads" and escalated.request.escalated_from == first.waiting_for
    assert escalated.request.on_expiry == "reject"  # escalated once, not forever
    await approvals.approve(second.waiting_for or "", by="lee")
    done = await runner.resume("r1", build(effects, policy=policy))
    assert done.status == "completed" and effects == ["refund 1042 49.0"]


async def test_medium_is_flagged_low_runs_and_deny_refuses(store: Store) -> None:
    effects: list[str] = []
    done = await Runner(store).run(build(effects, risk="medium"), "refund order 1042", run_id="m")
    assert done.status == "completed" and effects == ["refund 1042 49.0"]
    started = {e.tool: e for e in _events(await store.load("m"), ToolStarted)}
    assert started["refund"].policy == "flag" and "medium risk" in started["refund"].policy_reason
    assert started["lookup_order"].policy == "run"

    policy = TierPolicy(tiers={"high": "deny"})
    denied = await Runner(store).run(build(effects, policy=policy), "refund order 1042", run_id="d")
    (failed,) = _events(await store.load("d"), ToolFailed)
    assert failed.kind == "denied" and denied.status == "completed" and effects == ["refund 1042 49.0"]


async def test_low_confidence_irreversible_call_escalates_whatever_its_tier(store: Store) -> None:
    result = await Runner(store).run(build([], risk="low", confidence=0.2), "refund order 1042", run_id="c")
    assert result.status == "suspended"
    request = (await Approvals(store).get(result.waiting_for or "")).request
    assert request.confidence == 0.2 and "confidence 0.20 is below 0.50" in request.reason
    sure = await Runner(store).run(build([], risk="low", confidence=0.9), "refund order 1042", run_id="s")
    assert sure.status == "completed"


async def test_a_decision_binds_to_the_arguments_it_saw(store: Store) -> None:
    """A decision whose hash is not the call's (other arguments) does not let the call run."""
    effects: list[str] = []
    clock = FakeClock()
    runner = Runner(store, clock=clock)
    result = await runner.run(build(effects), "refund order 1042", run_id="r1")
    request = (await Approvals(store, clock=clock).get(result.waiting_for or "")).request
    forged = ApprovalDecided(
        at=clock.now(),
        request_id=request.request_id,
        call_id=request.call_id,
        tool="refund",
        decision="approved",
        by="ana",
        args_hash=call_hash("refund", {"order_id": "1042", "amount": 4900.0}),
    )
    await store.append("r1", [forged], expected_seq=(await store.get_run("r1")).event_count)
    again = await runner.resume("r1", build(effects))
    assert effects == [] and again.status == "suspended" and again.waiting_for != request.request_id
    assert call_hash("refund", {"order_id": "1042", "amount": 49.0}) == request.args_hash


async def test_critical_makes_the_caller_wait_for_a_decision(store: Store) -> None:
    effects: list[str] = []
    clock = FakeClock()
    runner = Runner(store, clock=clock, approval_poll_s=0.01)
    approvals = Approvals(store, clock=clock)
    outcome: dict[str, Any] = {}

    async def drive() -> None:
        outcome["result"] = await runner.run(
            build(effects, risk="critical"), "refund order 1042", run_id="r1"
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(drive)
        with anyio.fail_after(10):
            while not (pending := await approvals.list()):
                await anyio.sleep(0.01)
        assert pending[0].request.mode == "sync" and effects == []
        await approvals.approve(pending[0].request_id, by="ana")
    assert outcome["result"].status == "completed" and effects == ["refund 1042 49.0"]


async def test_critical_wait_ends_at_the_deadline(store: Store) -> None:
    clock = FakeClock()
    runner = Runner(store, clock=clock, approval_poll_s=0.01)
    policy = TierPolicy(deadline_s=60)
    outcome: dict[str, Any] = {}

    async def drive() -> None:
        outcome["result"] = await runner.run(
            build([], risk="critical", policy=policy), "refund order 1042", run_id="r1"
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(drive)
        with anyio.fail_after(10):
            while not await Approvals(store, clock=clock).list():
                await anyio.sleep(0.01)
        clock.advance(61)
    assert outcome["result"].status == "completed"
    (failed,) = _events(await store.load("r1"), ToolFailed)
    assert failed.kind == "rejected"


async def test_an_in_doubt_call_asks_a_human_whether_it_happened(store: Store) -> None:
    effects: list[str] = []
    runner = Runner(store)
    with pytest.raises(ProcessDied):
        await runner.run(build(effects, risk="low", crash=True), "refund order 1042", run_id="r1")
    assert effects == ["refund 1042 49.0"]
    result = await runner.resume("r1", build(effects, risk="low"))
    assert result.status == "suspended"
    found = await Approvals(store).get(result.waiting_for or "")
    assert found.request.kind == "in_doubt" and "did it take effect" in found.request.reason
    await Approvals(store).reject(found.request_id, by="ops", reason="the bank shows the refund")
    done = await runner.resume("r1", build(effects, risk="low"))
    assert effects == ["refund 1042 49.0"]  # not run again
    (failed,) = _events(await store.load("r1"), ToolFailed)
    assert failed.kind == "in_doubt" and "ops" in failed.message and "already taken effect" in failed.message
    assert done.status == "completed"


async def test_an_in_doubt_call_approved_runs_again_with_the_same_key(store: Store) -> None:
    effects: list[str] = []
    runner = Runner(store)
    with pytest.raises(ProcessDied):
        await runner.run(build(effects, risk="low", crash=True), "refund order 1042", run_id="r1")
    result = await runner.resume("r1", build(effects, risk="low"))
    await Approvals(store).approve(result.waiting_for or "", by="ops", reason="no trace at the bank")
    done = await runner.resume("r1", build(effects, risk="low"))
    assert done.status == "completed" and effects == ["refund 1042 49.0", "refund 1042 49.0"]
    keys = [e.idempotency_key for e in _events(await store.load("r1"), ToolStarted) if e.tool == "refund"]
    assert len(keys) == 2 and keys[0] == keys[1]


async def test_a_suspended_run_is_not_claimed_until_decided_or_due(store: Store) -> None:
    clock = FakeClock()
    if hasattr(store, "clock"):
        store.clock = clock  # type: ignore[attr-defined]  # the queue's times follow the fake clock
    runner = Runner(store, clock=clock)
    agent = build([], policy=TierPolicy(deadline_s=3600))
    run_id = await store.enqueue(
        "q1", runner._started(agent, "refund order 1042", user_id=None, metadata=None)
    )
    lease = await store.claim("w1", lease_s=30)
    assert lease is not None and lease.run_id == run_id
    result = await runner.resume(run_id, agent, lease=lease)
    assert result.status == "suspended"
    assert await store.release(lease)
    if store.__class__.__name__ == "PostgresStore":
        return  # the server's clock decides there; the decision path is covered by the worker tests
    assert await store.claim("w2", lease_s=30) is None  # waiting: no worker picks it up
    await Approvals(store, clock=clock).approve(result.waiting_for or "", by="ana")
    again = await store.claim("w2", lease_s=30)
    assert again is not None and again.run_id == run_id  # decided: runnable now
    assert (await runner.resume(run_id, agent, lease=again)).status == "completed"
