"""Time travel over a journal: the state of a run at any event, and new runs forked from it.

Both rebuild state exactly as a resume does (`_State.rebuild`), so what `tether runs replay` shows at
event N is what a worker resuming from event N would start from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .._clock import Clock, SystemClock
from ..exceptions import ConfigError
from ..journal import Event, RunFinished, RunStarted, Store
from ..models import Message, ToolCall, Usage
from ._loop import _State
from ._loop import new_run_id as _new_run_id

__all__ = ["RunState", "fork", "replay"]


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
