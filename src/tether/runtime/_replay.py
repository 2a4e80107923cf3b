"""Time travel over a journal: the state of a run at any event, new runs forked from it, and replay checks.

`replay` and `fork` rebuild state exactly as a resume does (`_State.rebuild`), so what `tether runs replay`
shows at event N is what a worker resuming from event N would start from.

`check_replay` is the determinism check (as Temporal's replay tests): it re-drives a recorded run with
the current code, the model answering from the journal and the tools returning their recorded outcomes,
and reports where the run's decisions (which tool, refused or run, which step, how it ended) differ.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import exceptions
from .._clock import Clock, SystemClock
from ..agents import Agent
from ..exceptions import ConfigError, ModelError, ModelResponseError, ToolTimeout
from ..journal import (
    Event,
    MemoryStore,
    ModelFailed,
    ModelResponded,
    RunFinished,
    RunResumed,
    RunStarted,
    Store,
    StoredEvent,
    ToolCompleted,
    ToolFailed,
)
from ..models import (
    Message,
    Model,
    ModelResponse,
    ModelSettings,
    TokenCallback,
    ToolCall,
    ToolDefinition,
    Usage,
)
from ..tools import Tool, ToolContext
from ._loop import Runner, _State
from ._loop import new_run_id as _new_run_id

__all__ = ["ReplayReport", "RunState", "check_replay", "fork", "replay"]


@dataclass(frozen=True, kw_only=True)
class RunState:
    """What a run knew after one event of its journal.

    Attributes:
        run_id: the run.
        seq: the last event taken into account (0 is `run_started`).
        events: how many events the journal has in all.
        step: model calls made so far.
        usage: tokens used so far.
        messages: the conversation the next model call would be sent.
        outstanding: calls of the last model response that have no outcome yet.
        in_doubt: call ids that started but have no outcome (the run stopped while they ran).
        finished: the run's end, when `seq` is at or past it.
    """

    run_id: str
    seq: int
    events: int
    step: int
    usage: Usage
    messages: tuple[Message, ...]
    outstanding: tuple[ToolCall, ...]
    in_doubt: tuple[str, ...]
    finished: RunFinished | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (as `tether runs replay --json` prints it)."""
        return {
            "run_id": self.run_id,
            "seq": self.seq,
            "events": self.events,
            "step": self.step,
            "usage": self.usage.model_dump(),
            "messages": [{"role": _role(m), **m.model_dump(mode="json")} for m in self.messages],
            "outstanding": [c.model_dump(mode="json") for c in self.outstanding],
            "in_doubt": list(self.in_doubt),
            "finished": None if self.finished is None else self.finished.model_dump(mode="json"),
        }


_ROLES = {"SystemMessage": "system", "UserMessage": "user", "AssistantMessage": "assistant"}


def _role(message: Message) -> str:
    return _ROLES.get(type(message).__name__, "tool")


def _upto(run_id: str, events: Sequence[Event], until: int | None) -> int:
    last = len(events) - 1
    if until is None:
        return last
    if not 0 <= until <= last:
        raise ConfigError(f"run {run_id} has events 0 to {last}; event {until} does not exist")
    return until


async def replay(store: Store, run_id: str, *, until: int | None = None) -> RunState:
    """Rebuild the state of `run_id` after event `until` (default: the last), from its journal.

    Raises:
        RunNotFound: no such run.
        ConfigError: the journal has no event `until`.
    """
    events = [s.event for s in await store.load(run_id)]
    upto = _upto(run_id, events, until)
    state = _State.rebuild(run_id, events[: upto + 1])
    return RunState(
        run_id=run_id,
        seq=upto,
        events=len(events),
        step=state.step,
        usage=state.usage,
        messages=tuple(state.messages),
        outstanding=tuple(state.outstanding),
        in_doubt=tuple(sorted(state.in_doubt)),
        finished=state.finished,
    )


async def fork(
    store: Store,
    run_id: str,
    *,
    at: int,
    input: str | None = None,
    model: str | None = None,
    new_run_id: str | None = None,
    queue: bool = False,
    idempotency_key: str | None = None,
    clock: Clock | None = None,
) -> str:
    """Start a new run from event `at` of `run_id`: its journal is a copy of events 0 to `at`.

    The copy is hash-chained anew under the new run's id; its `run_started` records where it came from
    in `metadata["forked_from"]` (`run_id`, `at`, and when). The new run continues from there when
    resumed (`Runner.resume`) or, with `queue=True`, when a worker claims it. Recorded model responses
    and tool results up to `at` are reused, not requested again.

    Args:
        at: the last event to copy; it must come before the run finished.
        input: replace the user's input in the copy's `run_started` (the events copied after it were
            the answers to the old input; fork at 0 to start over with the new one).
        model: record another model in the copy (`run_started.model` and `metadata["model_override"]`);
            the process that continues the fork must run the agent with that model.
        new_run_id: the new run's id (default: a new one).
        queue: put the fork in the queue for workers (`Store.enqueue`) instead of creating it for the
            caller to drive.
        idempotency_key: with `queue`, the submission's key (see `Store.enqueue`).

    Returns:
        The new run's id.

    Raises:
        RunNotFound: no such run.
        ConfigError: `at` is not an event of the run, or is at or after its end.
    """
    events = [s.event for s in await store.load(run_id)]
    upto = _upto(run_id, events, at)
    copied = events[: upto + 1]
    if any(isinstance(ev, RunFinished) for ev in copied):
        raise ConfigError(
            f"event {upto} of run {run_id} is at or after its end; fork at an earlier event "
            f"(it finished at event {next(i for i, ev in enumerate(events) if isinstance(ev, RunFinished))})"
        )
    first = copied[0]
    assert isinstance(first, RunStarted)  # _upto passed and load returns a journal: it begins with it
    metadata = dict(first.metadata)
    metadata["forked_from"] = {"run_id": run_id, "at": upto, "forked_at": (clock or SystemClock()).now()}
    changes: dict[str, Any] = {"metadata": metadata}
    if input is not None:
        changes["input"] = input
    if model is not None:
        changes["model"] = model
        metadata["model_override"] = model
    started = first.model_copy(update=changes)
    new_id = new_run_id or _new_run_id()
    if queue:
        return await store.enqueue(new_id, started, idempotency_key=idempotency_key, history=copied[1:])
    await store.create_run(new_id, started, history=copied[1:])
    return new_id


# --- replay checks -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ReplayReport:
    """What re-driving a recorded run with the current code found.

    Attributes:
        run_id: the recorded run.
        recorded: the recorded run's decisions, one line per journal event (`tool_failed step=2
            tool=refund kind=precondition`); `run_resumed` (a process taking the run up) is left out.
        replayed: the same for the run the current code made from the same model answers and tool results.
        first_divergence: the index into `recorded` (and `replayed`) of the first line that differs; None
            when the two agree.
        diff: a unified diff from `recorded` to `replayed`, headed by a line naming the first diverging
            event; empty when they agree.
    """

    run_id: str
    recorded: tuple[str, ...]
    replayed: tuple[str, ...]
    first_divergence: int | None
    diff: str

    @property
    def ok(self) -> bool:
        """Whether the current code makes the recorded run's decisions, in the same order."""
        return self.first_divergence is None


def _decision(event: Event) -> str:
    """One line for what an event decided; times, ids, texts and durations left out."""
    parts = [event.type]
    for name in ("step", "tool", "kind", "status", "decision"):
        value = getattr(event, name, None)
        if value is not None:
            parts.append(f"{name}={value}")
    if isinstance(event, ModelResponded):
        calls = [call.name for call in event.response.tool_calls]
        parts.append(f"calls={','.join(calls)}" if calls else "answer")
    return " ".join(parts)


class _RecordedModel(Model):
    """Answers each request with the journal's next recorded response (or raises its recorded failure)."""

    def __init__(self, name: str, answers: Sequence[ModelResponded | ModelFailed]) -> None:
        self._name = name
        self._answers = list(answers)
        self._next = 0

    @property
    def name(self) -> str:
        return self._name

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        settings: ModelSettings = ModelSettings(),  # noqa: B008 - frozen dataclass, safe as a default
        on_token: TokenCallback | None = None,
    ) -> ModelResponse:
        if self._next >= len(self._answers):
            raise ModelResponseError(
                f"replay: the recorded run made {len(self._answers)} model calls and the current code "
                "asks for another; the run's steps changed"
            )
        answer = self._answers[self._next]
        self._next += 1
        if isinstance(answer, ModelFailed):
            kind = getattr(exceptions, answer.error_type, None)
            if isinstance(kind, type) and issubclass(kind, ModelError):
                raise kind(answer.message, retryable=answer.retryable)
            raise ModelError(answer.message, retryable=answer.retryable)
        return answer.response


class _RecordedTool(Tool):
    """A tool that never runs: it returns the outcome the journal recorded for the same call."""

    __slots__ = ("_outcomes", "_tool")

    def __init__(self, tool: Tool, outcomes: dict[tuple[int, str], ToolCompleted | ToolFailed]) -> None:
        # not Tool.__init__: the schema, spec and validation are the current tool's own
        self._tool = tool
        self._outcomes = outcomes
        self.name = tool.name
        self.description = tool.description
        self.spec = tool.spec
        self.definition = tool.definition

    def validate(self, arguments: Any) -> dict[str, Any]:
        return self._tool.validate(arguments)

    async def execute(
        self, kwargs: dict[str, Any], ctx: ToolContext, *, timeout_s: float | None = None
    ) -> Any:
        outcome = self._outcomes.get((ctx.step, ctx.call_id))
        if outcome is None:
            raise LookupError(
                f"replay: {self.name} ran for call {ctx.call_id} of step {ctx.step}, which did not run in "
                "the recorded run"
            )
        if isinstance(outcome, ToolCompleted):
            return outcome.content  # what the model read, exactly
        if outcome.kind == "timeout":
            raise ToolTimeout(outcome.message)
        # the runner records `f"{type(exc).__name__}: {exc}"`; raise an exception that reads the same
        prefix = f"{outcome.error_type}: "
        message = outcome.message.removeprefix(prefix)
        raise type(outcome.error_type, (Exception,), {})(message)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._tool(*args, **kwargs)


def _replay_agent(
    agent: Agent, model: Model, outcomes: dict[tuple[int, str], ToolCompleted | ToolFailed]
) -> Agent:
    return Agent(
        agent.name,
        instructions=agent.instructions,
        tools=[_RecordedTool(t, outcomes) for t in agent.tools.values()],
        model=model,
        limits=agent.limits,
        settings=agent.settings,
        ref=agent.ref,
        grounding=agent.grounding,
        policy=agent.policy,
        on_in_doubt=agent.on_in_doubt,
        on_injected=agent.on_injected,
        guardrails=agent.guardrails,
        log_content=agent.log_content,
    )


async def check_replay(
    events: Sequence[Event | StoredEvent], agent: Agent, *, run_id: str | None = None
) -> ReplayReport:
    """Re-drive a recorded run with the current `agent` and code; compare its decisions with the journal's.

    The model is not called: each request is answered with the journal's next recorded response (or
    failure). Tools are not run: each call returns the outcome recorded for the same step and call id
    (a call the recorded run never made fails, which shows in the comparison). What is compared is the
    sequence of decisions (`ReplayReport.recorded`): which tool was called or refused and why, at which
    step, and how the run ended. A change to the agent or to tether that makes a recorded run take
    another path (a tool's `requires=` added, a check reordered, a limit lowered) is a divergence, reported
    with a readable diff; a change that only rewords messages is not.

    Args:
        events: the recorded journal, from `run_started` on (as `Store.load` returns it, or the events).
        agent: the agent as the current code defines it.
        run_id: how the report names the recorded run (default: the stored events' run id).

    Raises:
        ConfigError: the events do not begin with `run_started`.
    """
    journal = [e.event if isinstance(e, StoredEvent) else e for e in events]
    if not journal or not isinstance(journal[0], RunStarted):
        raise ConfigError("check_replay needs a journal that begins with run_started (a whole recorded run)")
    started = journal[0]
    recorded_events = [ev for ev in journal if not isinstance(ev, RunResumed)]
    answers = [ev for ev in recorded_events if isinstance(ev, (ModelResponded, ModelFailed))]
    outcomes: dict[tuple[int, str], ToolCompleted | ToolFailed] = {
        (ev.step, ev.call_id): ev
        for ev in recorded_events
        if isinstance(ev, ToolCompleted) or (isinstance(ev, ToolFailed) and ev.kind in ("raised", "timeout"))
    }
    store = MemoryStore()
    runner = Runner(store)
    replayed_agent = _replay_agent(agent, _RecordedModel(started.model, answers), outcomes)
    result = await runner.run(
        replayed_agent, started.input, user_id=started.user_id, metadata=dict(started.metadata)
    )
    replayed_events = [s.event for s in await store.load(result.run_id)]
    recorded = tuple(_decision(ev) for ev in recorded_events)
    replayed = tuple(_decision(ev) for ev in replayed_events if not isinstance(ev, RunResumed))
    if run_id is None:
        run_id = events[0].run_id if isinstance(events[0], StoredEvent) else "the recorded run"
    first = next(
        (i for i, (a, b) in enumerate(zip(recorded, replayed, strict=False)) if a != b),
        None if len(recorded) == len(replayed) else min(len(recorded), len(replayed)),
    )
    if first is None:
        return ReplayReport(
            run_id=run_id, recorded=recorded, replayed=replayed, first_divergence=None, diff=""
        )
    was = recorded[first] if first < len(recorded) else "(nothing: the recorded run had ended)"
    now = replayed[first] if first < len(replayed) else "(nothing: the replayed run ended)"
    header = (
        f"replay of {run_id} diverged at event {first}: the journal recorded `{was}`, "
        f"the current code did `{now}`"
    )
    lines = difflib.unified_diff(
        recorded, replayed, fromfile="recorded", tofile="replayed with the current code", lineterm=""
    )
    return ReplayReport(
        run_id=run_id,
        recorded=recorded,
        replayed=replayed,
        first_divergence=first,
        diff="\n".join([header, *lines]),
    )
