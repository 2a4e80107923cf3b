"""The step loop: model call, tool calls, journal — until an answer or a limit.

Durability rests on two rules:
- A model response is committed to the journal before anything acts on it, so a resumed run reuses it
  and never pays for the call again.
- `ToolStarted` is committed before a tool runs and `ToolCompleted` (or `ToolFailed`) right after, so a
  resumed run never re-runs a completed call; a call that started but never finished is "in doubt".

The outcome of a non-idempotent tool is committed the moment it returns, so a step calling one is two
transactions (the intent, then the outcome): folding that outcome into the next step's transaction
would leave a finished side effect unrecorded during the whole next model call, and a crash then would
leave it in doubt. The outcome of an idempotent tool rides with the next step's transaction instead
(one transaction per step): losing it costs only a harmless re-run with the same idempotency key.

Resume rebuilds the run's state (messages, step count, usage, outstanding calls) from its journal and
carries on from there; nothing is re-executed to get back to where the run was.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Literal, Protocol

import anyio
from pydantic_core import to_jsonable_python

from .._clock import Clock, SystemClock
from ..agents import Agent, RunResult, load_agent
from ..approvals import PolicyDecision, ProposedCall, TierPolicy
from ..exceptions import (
    ConfigError,
    LeaseLost,
    ModelError,
    ModelTimeout,
    StoreError,
    ToolArgumentsError,
    ToolTimeout,
)
from ..governance import BudgetKeys, Governance, GovernanceUnavailable, rate_key
from ..grounding import (
    HOW_TO,
    PARROTED,
    TOOL_GUIDE,
    Evidence,
    answer_numbers,
    asked_object,
    asks_for,
    derive,
    describes_steps,
    find_ungrounded,
    identifiers,
    injected_call,
    json_records,
    left_out,
    mislabelled_amount,
    misscaled,
    named_record,
    names_tool,
    other_amount,
    references,
    reported_missing,
    says_missing,
    stated_numbers,
    unusable_answer,
)
from ..guardrails import (
    CanaryGuard,
    GuardContext,
    GuardResult,
    GuardStack,
    Source,
    Stage,
    ToolCallCheck,
    canary_instruction,
)
from ..journal import (
    AnswerRejected,
    ApprovalDecided,
    ApprovalRequested,
    ContextTrimmed,
    Event,
    GuardChecked,
    Lease,
    ModelFailed,
    ModelResponded,
    RunFinished,
    RunResumed,
    RunStarted,
    Store,
    TerminalStatus,
    ToolCompleted,
    ToolFailed,
    ToolStarted,
    UsageCharged,
    call_hash,
    open_store,
)
from ..models import (
    AssistantMessage,
    BreakerPolicy,
    BreakerState,
    CircuitBreaker,
    Message,
    ModelResponse,
    ModelSettings,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from ..telemetry import get_logger, redact_for_log
from ..tools import Seen, ToolContext, render_output
from ._context import estimate_tokens, fit_context, fold_corrections

__all__ = ["RunObserver", "Runner", "new_run_id"]

_log = get_logger("tether.runtime")

_DEFAULT_POLICY = TierPolicy()
"""The approval policy of an agent that sets none."""


class RunObserver(Protocol):
    """Watches runs as they happen (the CLI's live display is one). Must not raise; may be called
    from a worker thread for `token`."""

    def event(self, run_id: str, event: Event) -> None:
        """An event was added to the run's journal."""

    def token(self, run_id: str, text: str) -> None:
        """The model generated `text`."""


def new_run_id() -> str:
    """A run id that sorts by creation time: `run_` + 12 hex digits of milliseconds + 8 random."""
    return f"run_{int(time.time() * 1000):012x}{secrets.token_hex(4)}"


@dataclass(slots=True)
class _State:
    """Everything the loop knows about a run; rebuilt from the journal on resume."""

    run_id: str
    started: RunStarted
    messages: list[Message]
    seq: int = 0
    step: int = 0
    usage: Usage = field(default_factory=Usage)
    outstanding: list[ToolCall] = field(default_factory=list)
    """Calls of the last response that have no outcome yet."""
    in_doubt: set[str] = field(default_factory=set)
    """Calls that started but have no outcome (only after a crash)."""
    call_counts: dict[tuple[str, str], int] = field(default_factory=dict)
    buffer: list[Event] = field(default_factory=list)
    finished: RunFinished | None = None
    evidence: Evidence = field(default_factory=Evidence)
    """What argument values may be traced to: the input, the instructions, tool results."""
    succeeded: set[str] = field(default_factory=set)
    """Tools that have returned successfully in this run (for `requires=`)."""
    refused: set[str] = field(default_factory=set)
    """Calls refused before they ran (`_FOLDED`): left out of what the model is sent once it moved on."""
    call_ids: set[str] = field(default_factory=set)
    """Every call id the run has used (`_unique_ids`)."""
    answered: set[str] = field(default_factory=set)
    """Repeated calls answered instead of run: what was said to them is shown as a user turn."""
    rejected: set[int] = field(default_factory=set)
    """Indices in `messages` of rejected answers and their rejections (folded away the same way)."""
    not_found: list[str] = field(default_factory=list)
    """What tools said when they raised because something was not there ("find_employee said: ...")."""
    last_missing: bool = False
    """The latest tool that ran said something is not there (and none has found anything since)."""
    ran: set[str] = field(default_factory=set)
    """Tools that have run in this run, returned or raised: the ones left are where a missing value is."""
    missing: dict[str, str] = field(default_factory=dict)
    """Identifiers (casefolded) a tool reported do not exist, with what it said."""
    unchanged: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Writes refused as changing nothing (`NoChange`) and not run since: per tool, the refused arguments
    (whose numbers are the record's current values)."""
    tool_texts: list[str] = field(default_factory=list)
    """What tools returned (results and raised errors): where an injected instruction would be."""
    texts_by: dict[str, list[str]] = field(default_factory=dict)
    """Per tool, the contents of its successful results: which records a `requires=` lookup showed,
    and where a number fed back to a tool came from."""
    parsed_by: dict[str, list[Any]] = field(default_factory=dict)
    """Per tool, its successful results that are JSON, parsed once: what the checks on records read."""
    lookups: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)
    """Every successful call as (tool, arguments, content), in order: what `check=` preconditions read."""
    results: dict[tuple[str, str], str] = field(default_factory=dict)
    """What each (tool, canonical arguments) returned, so that a repeated call is answered, not re-run."""
    started_args: dict[str, tuple[str, str]] = field(default_factory=dict)
    force_answer: bool = False
    """The model repeated a call it already has the result of: its next turn must be text."""
    force_tool: bool = False
    """The model answered with values it never looked up: its next turn must call a tool."""
    force_tools: tuple[str, ...] = ()
    """A precondition refused a call: the next turn must call one of these."""
    answers_rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    """Why each rejected answer was sent back (without the details in brackets), in order."""
    standing: str | None = None
    """The last answer sent back only for its quality (`soft`): returned if every answer after it is
    rejected for its truth once the retries are used up, rather than ending the run `failed`."""
    standing_over: str = ""
    """Why the answer after `standing` was rejected, when `standing` became the answer."""
    derived: tuple[str, ...] = ()
    """How the numbers of the last answer checked were computed from seen ones ("75.8 = 2 × 37.9")."""
    requests: dict[str, ApprovalRequested] = field(default_factory=dict)
    """The latest approval request of each call that needed one."""
    decisions: dict[str, ApprovalDecided] = field(default_factory=dict)
    """The latest decision on each call's requests."""
    suspended: ApprovalRequested | None = None
    """The request the run stopped to wait on (the run holds no process until it is decided)."""
    lease: Lease | None = None
    """The worker's lease on the run, presented with every append (None: an embedded run)."""
    stop: Callable[[], bool] | None = None
    """Asked before each step; True hands the run back unfinished (a worker shutting down)."""
    handed_back: bool = False
    """`stop` said so while the run waited for a synchronous approval."""
    input_checked: bool = False
    """The input guardrails ran on the user's input (or the run is past its first step)."""
    sensitive: bool = False
    """Every model call of the run is marked sensitive (private models only, never cached)."""
    call_guards: dict[str, GuardChecked] = field(default_factory=dict)
    """What the tool-call guardrails found on each call, so that a resumed run neither checks a call again
    nor journals the finding twice."""

    @classmethod
    def rebuild(cls, run_id: str, events: Sequence[Event]) -> _State:
        started = events[0]
        if not isinstance(started, RunStarted):
            raise StoreError(f"the journal of run {run_id!r} does not begin with run_started; it is damaged")
        state = cls(run_id=run_id, started=started, messages=_first_messages(started), seq=len(events))
        state.evidence = _first_evidence(started)
        state.sensitive = started.metadata.get("sensitive") is True
        for ev in events[1:]:
            if isinstance(ev, ModelResponded):
                state.record_response(ev.step, ev.response)
            elif isinstance(ev, UsageCharged):
                state.usage = state.usage + ev.usage
            elif isinstance(ev, ToolStarted):
                state.in_doubt.add(ev.call_id)
                state.started_args[ev.call_id] = (ev.tool, _canonical(ev.arguments))
            elif isinstance(ev, ToolCompleted):
                state.record_outcome(ev.call_id, ev.tool, ev.content, is_error=False, arguments=None)
            elif isinstance(ev, AnswerRejected):
                then = ev.then or ("tool" if ev.values or ev.reason in (HOW_TO, _CUT_OFF) else "either")
                state.record_rejection(ev.message, reason=ev.reason, then=then, needs=ev.needs, soft=ev.soft)
            elif isinstance(ev, ToolFailed):
                state.record_outcome(
                    ev.call_id,
                    ev.tool,
                    f"Error: {ev.message}",  # as the live run sent it
                    is_error=True,
                    kind=ev.kind,
                    arguments=ev.arguments,
                    error_type=ev.error_type,
                )
                state.force_answer = ev.kind == "repeated" or ev.error_type == _RECORD_MISSING
                if ev.needs:
                    state.force_tools = ev.needs
            elif isinstance(ev, GuardChecked):
                state.record_guard(ev)
            elif isinstance(ev, ApprovalRequested):
                state.requests[ev.call_id] = ev
            elif isinstance(ev, ApprovalDecided):
                state.decisions[ev.call_id] = ev
            elif isinstance(ev, RunFinished):
                state.finished = ev
        return state

    def record_guard(self, ev: GuardChecked) -> None:
        """Apply a guardrail finding: the same code path live and on resume, so both see the same run."""
        if ev.stage == "input" and ev.source == "user":
            self.input_checked = True
            if ev.text is not None:  # the model reads the redaction, never the user's raw input
                for i, message in enumerate(self.messages):
                    if isinstance(message, UserMessage):
                        self.messages[i] = UserMessage(content=ev.text)
                        break
        elif ev.stage == "tool_call" and ev.call_id is not None:
            self.call_guards[ev.call_id] = ev
        self.sensitive = self.sensitive or ev.sensitive

    def waiting_on(self, now: float) -> ApprovalRequested | None:
        """The asynchronous request the run waits on, undecided and before its deadline (else None)."""
        for call in self.outstanding[:1]:  # calls run in order: only the first can be waiting
            request = self.requests.get(call.call_id)
            if request is None or request.mode != "async" or now >= request.deadline_at:
                continue
            decision = self.decisions.get(call.call_id)
            if decision is None or decision.request_id != request.request_id:
                return request
        return None

    def record_response(self, step: int, response: ModelResponse) -> tuple[ToolCall, int] | None:
        """Add the model's answer; returns its call made most often so far in the run, with the count."""
        self.step = step
        self.input_checked = True
        self.force_answer = False
        self.force_tool = False
        self.force_tools = ()
        calls = self._unique_ids(step, response.tool_calls)
        self.messages.append(AssistantMessage(content=response.text, tool_calls=calls))
        self.outstanding = list(calls)
        worst: tuple[ToolCall, int] | None = None
        # a loop is a call asked for again turn after turn: the same call written twice in one turn
        # counts once (it runs once; the copy is answered as a repeat)
        distinct = {(c.name, _canonical(c.arguments)): c for c in reversed(calls)}
        for key, call in reversed(distinct.items()):
            count = self.call_counts[key] = self.call_counts.get(key, 0) + 1
            if worst is None or count > worst[1]:
                worst = (call, count)
        return worst

    def _unique_ids(self, step: int, calls: Sequence[ToolCall]) -> tuple[ToolCall, ...]:
        """`calls` with ids no earlier call of the run has: a model may number its calls per response
        (`call_0` in every turn), and the run keys outcomes, refusals and approvals by call id. A reused
        id gets the step appended (`call_0-s3`); the journal's model response keeps the model's own ids,
        and a rebuilt run renames them the same way."""
        out = []
        for call in calls:
            call_id = call.call_id
            if call_id in self.call_ids:
                call_id = f"{call.call_id}-s{step}"
                while call_id in self.call_ids:
                    call_id += "'"
                call = call.model_copy(update={"call_id": call_id})
            self.call_ids.add(call_id)
            out.append(call)
        return tuple(out)

    def record_rejection(
        self, message: str, *, reason: str, then: str, needs: tuple[str, ...] = (), soft: bool = False
    ) -> None:
        """Send a rejected answer's message; `then` ("tool", "answer" or "either") is what the next turn
        must be, and `needs` the tools a required call is limited to. Only rejections that are not
        `soft` count against the answer retries."""
        if not soft:
            self.answers_rejected += 1
        if soft and self.messages and isinstance(self.messages[-1], AssistantMessage):
            # it passed every check of truth: if the answers after it fail those, it is the answer
            self.standing = self.messages[-1].content or None
        self.reasons.append(reason.split(" (", 1)[0])
        self.rejected.update((len(self.messages) - 1, len(self.messages)))
        self.messages.append(UserMessage(content=message))
        self.force_tool = then == "tool" and not needs
        self.force_tools = needs if then == "tool" else ()
        self.force_answer = then == "answer"

    def record_outcome(
        self,
        call_id: str,
        tool: str,
        content: str,
        *,
        is_error: bool,
        kind: str | None = None,
        arguments: dict[str, Any] | str | None = None,
        error_type: str = "",
    ) -> None:
        key = self.started_args.pop(call_id, None) if not is_error else self.started_args.get(call_id)
        if arguments is None and key is not None and key[1].startswith("{"):
            arguments = json.loads(key[1])
        if not is_error:
            self.evidence.add(content)
            self.succeeded.add(tool)
            self.texts_by.setdefault(tool, []).append(content)
            try:
                self.parsed_by.setdefault(tool, []).append(json.loads(content))
            except ValueError:
                pass  # plain text: no records to read
            if isinstance(arguments, dict):
                self.lookups.append((tool, arguments, content))
            if key is not None:
                self.results[key] = content
        if is_error and kind in _FOLDED:
            self.refused.add(call_id)
        if is_error and error_type == _NO_CHANGE and isinstance(arguments, dict):
            self.unchanged[tool] = arguments
        elif not is_error:
            self.unchanged.pop(tool, None)
        if is_error and kind == "repeated":
            self.answered.add(call_id)
        if not is_error or kind == "raised":
            # what a tool said, found or not: the source of an injected instruction, and of "no such record"
            self.ran.add(tool)
            self.tool_texts.append(content)
            self.last_missing = is_error and says_missing(content)
            if self.last_missing:
                self.not_found.append(f"{tool} said: {_plain(content)}")
            if isinstance(arguments, dict):
                gone = reported_missing(arguments, content)
                for ident in gone:
                    self.missing[ident.casefold()] = f"{tool} said: {_plain(content)}"
                if is_error and key is not None and (gone or error_type in _SETTLED_ERRORS):
                    # "there is no order 9999" will not change on asking again: a repeat gets this answer
                    self.results[key] = content
                    self.started_args.pop(call_id, None)
                if not is_error and not gone:
                    for _, ident in identifiers(arguments):
                        self.missing.pop(ident.casefold(), None)
        self.messages.append(
            ToolResultMessage(call_id=call_id, name=tool, content=content, is_error=is_error)
        )
        self.in_doubt.discard(call_id)
        self.outstanding = [c for c in self.outstanding if c.call_id != call_id]


@dataclass(frozen=True, slots=True)
class _Go:
    """A call cleared to run: what decided it, and the arguments a human edited it to (None: as proposed)."""

    policy: str
    reason: str
    arguments: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class _ToolSpecView:
    risk: str
    reversible: bool


class _ToolView:
    """What `_request` reads of a tool (`spec.risk`, `spec.reversible`), from a request being escalated."""

    def __init__(self, *, risk: str, reversible: bool):
        self.spec = _ToolSpecView(risk=risk, reversible=reversible)


def _findings(verdicts: Sequence[dict[str, Any]]) -> str:
    """The guards' findings (`Verdict.to_dict()`s) in one line, for the model and approvers to read."""
    found = (f"{v['category']}: {v['message']}" if v.get("message") else v["category"] for v in verdicts)
    return "; ".join(found)[:400]


def _instructions(agent: Agent) -> str:
    """The agent's instructions, with the tool guide (`Agent(tool_guide=...)`) and a canary planted when
    its guardrails watch for one: a model made to reveal its system prompt repeats the canary, and the
    output guardrails then block the answer."""
    guide = agent.tool_guide if isinstance(agent.tool_guide, str) else TOOL_GUIDE if agent.tool_guide else ""
    instructions = "\n\n".join(part for part in (agent.instructions, guide if agent.tools else "") if part)
    stack = agent.guardrails
    if stack is None:
        return instructions
    canaries = [c for g in stack.guards if isinstance(g, CanaryGuard) for c in g.canaries]
    if not canaries or any(c in agent.instructions for c in canaries):
        return instructions  # none asked for, or the developer planted one already
    return "\n\n".join(part for part in (instructions, canary_instruction(canaries[0])) if part)


def _count_tokens(message: Message) -> int:
    # estimate_tokens counts 4 characters a token; JSON, numbers and ids come nearer 3 with the
    # vocabularies of small models, and an overrun fails the call where an underrun only trims early
    return estimate_tokens(message) * 4 // 3


def _tools_tokens(definitions: Sequence[ToolDefinition]) -> int:
    """What the tool definitions take of the prompt (every call sends them), counted as high as messages."""
    chars = sum(len(d.name) + len(d.description) + len(json.dumps(d.parameters)) for d in definitions)
    return -(-chars // 3)


def _first_messages(started: RunStarted) -> list[Message]:
    messages: list[Message] = []
    if started.instructions:
        messages.append(SystemMessage(content=started.instructions))
    messages.append(UserMessage(content=started.input))
    return messages


def _first_evidence(started: RunStarted) -> Evidence:
    return Evidence((started.input, started.instructions))


# refusals of calls that never ran and that the model only needs to see once (see `fold_corrections`);
# a call refused by a person, a guardrail or the kill switch stays in view
_FOLDED = frozenset({"ungrounded", "precondition", "repeated", "invalid_arguments", "unknown_tool"})
_RECORD_MISSING = "RecordMissing"
"""The `error_type` of a write refused because a tool reported its record missing."""
_NO_CHANGE = "NoChange"
"""The `error_type` of a write refused because it sets a value the record already holds."""
# errors a tool raises that asking again with the same arguments cannot change (unlike a timeout or a
# dropped connection): a repeat of the call is answered with the error instead of run again
_SETTLED_ERRORS = frozenset(
    {
        "LookupError",
        "KeyError",
        "IndexError",
        "ValueError",
        "TypeError",
        "FileNotFoundError",
        "PermissionError",
    }
)

_CUT_OFF = "the answer was cut off at the token limit; answer briefly"
"""Why an answer that hit the token limit was sent back: small models run out of tokens explaining the
steps they are about to take, so the next turn must take one (call a tool)."""


def _numeric_params(tool: Any) -> frozenset[str]:
    """The tool's parameters whose JSON schema type is a number or an integer."""
    props = _params(tool)
    return frozenset(
        n for n, p in props.items() if isinstance(p, dict) and p.get("type") in ("number", "integer")
    )


def _echoed(state: _State, call: ToolCall, tool: Any) -> list[str]:
    """The numbers of a call that only the same tool's earlier results supplied (a model feeding a tool
    its own output: converting there and back, recomputing a result), unless the tool `chains`."""
    own = state.texts_by.get(call.name)
    if not own or tool.spec.chains or not isinstance(call.arguments, dict):
        return []
    numeric = _numeric_params(tool)
    numbers = {
        k: v
        for k, v in call.arguments.items()
        if k in numeric
        and k not in tool.spec.free_text
        and isinstance(v, int | float)
        and not isinstance(v, bool)
    }
    if not numbers:
        return []
    others = _first_evidence(state.started)
    for name, texts in state.texts_by.items():
        if name != call.name:
            for text in texts:
                others.add(text)
    from_others = {u.path for u in find_ungrounded(numbers, others)}
    from_self = {u.path for u in find_ungrounded(numbers, Evidence(own))}
    return [f"{k}={numbers[k]}" for k in numbers if k in from_others and k not in from_self]


_OPERAND = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])")


def _same_step_again(state: _State, call: ToolCall) -> str | None:
    """What a call repeats: the same step as the tool's last call, applied to that call's own result
    (`83.9022 / 0.92` after `77.19 / 0.92` gave 83.9022). A small model iterates a conversion or a
    percentage until the steps run out; each call is grounded, and none brings the answer closer."""
    if not isinstance(call.arguments, dict):
        return None
    last = next(
        ((args, content) for name, args, content in reversed(state.lookups) if name == call.name), None
    )
    if last is None:
        return None
    before, result = last
    result = result.strip()
    if not _OPERAND.fullmatch(result) or set(before) != set(call.arguments):
        return None
    for param, text in call.arguments.items():
        earlier = before.get(param)
        if not isinstance(text, str) or not isinstance(earlier, str) or result not in _OPERAND.findall(text):
            continue
        squeezed = "".join(text.split())
        for m in _OPERAND.finditer(earlier):
            step = "".join((earlier[: m.start()] + result + earlier[m.end() :]).split())
            if step == squeezed and m.group(0) != result:
                return (
                    f"{param}={text!r} does to {result} ({call.name}'s own last result) what {earlier!r} did "
                    f"to {m.group(0)}: the same step again"
                )
    return None


def _plain(content: str, limit: int = 200) -> str:
    """What a tool said, as a sentence: one line, without the `Error: LookupError: ` in front of a raise."""
    text = " ".join(content.split())
    text = re.sub(r"^Error:\s*(?:[A-Za-z_][\w.]*(?:Error|Exception|Warning)\s*:\s*)?", "", text)
    return text[:limit]


def _missing_record(state: _State, call: ToolCall, tool: Any) -> str | None:
    """Why a write or irreversible call may not run: a tool reported the record it is about missing."""
    if not _writes(tool) or not isinstance(call.arguments, dict):
        return None
    free = (*tool.spec.free_text, *_numeric_params(tool))
    for path, ident in identifiers(call.arguments, free_text=free):
        said = state.missing.get(ident.casefold())
        if said is not None:
            # worded as the answer it asks for: a small model told to answer next copies the last message
            return (
                f"{said}. {path}={ident!r} does not exist, so {call.name} was not run and nothing was changed. "
                "Tell the user it was not found."
            )
    return None


def _writes(tool: Any) -> bool:
    """Whether a tool changes something: not low risk, not reversible, or guarded by `requires=`."""
    return tool.spec.risk != "low" or not tool.spec.reversible or bool(tool.spec.requires)


def _unchanged(state: _State, call: ToolCall, tool: Any) -> str | None:
    """Why a write may not run: it sets a number to the value a lookup already shows for the same record
    (`update_salary(E-1021, new_salary=82000)` when E-1021's salary is 82000). A small model asked for a
    change writes the current value back; the write would change nothing and the answer would say it did."""
    if not _writes(tool) or not isinstance(call.arguments, dict):
        return None
    numeric = _numeric_params(tool)
    numbers = {
        k: float(v)
        for k, v in call.arguments.items()
        if k in numeric and isinstance(v, int | float) and not isinstance(v, bool)
    }
    idents = {
        ident.casefold()
        for _, ident in identifiers(call.arguments, free_text=(*numeric, *tool.spec.free_text))
    }
    if not numbers or not idents:
        return None
    for source, parsed in _parsed_results(state):
        for record in json_records(parsed):
            about = [v for v in record.values() if isinstance(v, str) and v.strip().casefold() in idents]
            if not about:
                continue
            for param, number in numbers.items():
                name = _field_holding(record, param, number)
                if name is not None:
                    return (
                        f"{call.name} was not run: {param}={call.arguments[param]} is the {name} {source} "
                        f"already shows for {about[0]}, so it would change nothing. Work out the new "
                        f"value the user asked for first, then call {call.name} with it."
                    )
    return None


def _field_holding(record: Mapping[str, Any], param: str, number: float) -> str | None:
    """The field of `record` that `param` sets (`salary` for `new_salary`) when it already holds `number`."""
    for name, current in record.items():
        if (
            (param == name or param.endswith("_" + name))
            and isinstance(current, int | float)
            and not isinstance(current, bool)
            and abs(float(current) - number) <= 0.005
        ):
            return name
    return None


def _unverified(state: _State, call: ToolCall, tool: Any) -> tuple[str, tuple[str, ...]] | None:
    """Why a write may not run on these arguments (look before you act), with the tools to call first.

    A tool with `requires=` runs only on records a required tool's result showed. (A record a tool
    reported missing is refused earlier, by `_missing_record`, before `requires=` is looked at.)
    """
    args = call.arguments if isinstance(call.arguments, dict) else {}
    # amounts and counts are checked by provenance, not here: a refund's amount comes from the user
    free = (*tool.spec.free_text, *_numeric_params(tool))
    required = tool.spec.requires
    if required:
        shown = [Evidence(state.texts_by.get(r, ())) for r in required]
        for path, ident in identifiers(args, free_text=free):
            # compared as provenance compares values: `37.90` is the `37.9` a lookup returned
            if all(find_ungrounded({path: ident}, seen) for seen in shown):
                return (
                    f"{call.name} was not run: {path}={ident!r} is not in any {' or '.join(required)} result "
                    f"of this run, so it is not verified. Call {required[0]} for {ident!r} first, then act on "
                    "what it returns.",
                    tuple(required),
                )
    return None


def _fmt_number(n: Decimal) -> str:
    """A number as a tool result would show it: 2400000, 37.9."""
    return format(n.normalize(), "f")


def _absent_object(state: _State, tool: Any) -> str | None:
    """Why a write the user asked for may not run: it acts on a thing the request names ("Refund the
    blender from order 4410") that none of its required lookups' results mention. Only for tools with
    `requires=`: their lookups are declared to show what the write acts on."""
    if not tool.spec.requires or not _writes(tool):
        return None
    thing = asked_object(tool.name, state.started.input)
    if thing is None:
        return None
    head = thing.split()[-1]
    forms = {head, head[:-1] if head.endswith("s") else head, head[:-2] if head.endswith("es") else head}
    shown = [text for r in tool.spec.requires for text in state.texts_by.get(r, ())]
    if not shown or any(re.search(rf"(?<![a-z]){re.escape(f)}", text, re.I) for f in forms for text in shown):
        return None
    return (
        f"{tool.name} was not run, and nothing was changed: the request is about the {thing}, and no "
        f"{' or '.join(tool.spec.requires)} result mentions a {head}. Tell the user there is no {thing} there."
    )


# "Dana Whitfield's manager": a named thing's relation, where a value was wanted
_CLAUSE = re.compile(r"\s+(?:works?|is|was|are|lives?|belongs?|reports?|sits?|in|at|of|for|that|who|which)\b")
_POSSESSIVE = re.compile(r"\s*((?:[A-Z][\w.\-]*\s+)*[A-Z][\w.\-]*)['’]s\s+([a-z][a-z ]{1,40}?)\s*")


def _described(tools: Mapping[str, Any], call: ToolCall, tool: Any) -> tuple[str, tuple[str, ...]] | None:
    """Why a call may not run: an argument describes the value instead of giving it
    (`get_department(department="Dana Whitfield's manager")`, a phrase from the request, so provenance
    passes it). With the message, the reads that look the named thing up by name."""
    if not isinstance(call.arguments, dict):
        return None
    for param, value in call.arguments.items():
        if param in tool.spec.free_text or not isinstance(value, str):
            continue
        m = _POSSESSIVE.fullmatch(value)
        if m is None:
            continue
        # "manager works in" is the manager: the clause after the noun says what to do with it
        owner, relation = m.group(1), _CLAUSE.split(m.group(2), maxsplit=1)[0].strip() or m.group(2)
        by_name = tuple(
            t.name
            for t in sorted(tools.values(), key=_source_rank)
            if _reads(t) and t.name != call.name and any(_NAME_PARAM.search(p) for p in _params(t))
        )
        if _NAME_PARAM.search(param) and _reads(tool):
            # the argument is the call's own tool's name (find_employee(name="Dana's manager")): that tool
            # with the owner's name first
            by_name = (call.name, *by_name)
        how = f"call {' or '.join(by_name[:2])} with {owner!r}" if by_name else f"look up {owner!r}"
        return (
            f"{call.name} was not run: {param}={value!r} describes a value instead of giving it. Find "
            f"{owner}'s {relation} first ({how}), then call {call.name} with the {param} the results give.",
            by_name,
        )
    return None


# a name or a phrase ("Dana Whitfield", "ceramic pour-over set"): words, no digits
_NAME_VALUE = re.compile(r"[A-Za-z][\w'.\-]*(?:\s+[A-Za-z][\w'.\-]*)+")
_NAME_DIGITS = re.compile(r"\d")
# a parameter that takes a record's key, and one that takes its name
_ID_PARAM = re.compile(r"(?:^|_)(?:id|sku|code|ref)$")
_NAME_PARAM = re.compile(r"(?:^|_)name$")
# the words that may stand between a label and its value: "order number 7702", "order #7702"
_LABEL_FILLER = r"(?:\s+(?:number|no\.?|id|ID|code))?\s*[#:]?\s*"


def _mislabelled(
    state: _State, tools: Mapping[str, Any], call: ToolCall, tool: Any
) -> tuple[str, tuple[str, ...]] | None:
    """Why a call may not run: an argument holds another kind of value than its parameter takes, so the
    lookup can only fail or find the wrong record. A value the request labels as another kind of record
    ("order 7702" sent as a `customer_id`); a name sent as a key ("Dana Whitfield" as an `employee_id`,
    "copper saucepans" as a `sku`); a key a result gave sent as a name (`find_product(name="BB-310")`
    after find_product gave sku BB-310). With the message, the reads that take such a value; None when
    no tool of the agent takes one."""
    if not isinstance(call.arguments, dict):
        return None
    reads = sorted((t for t in tools.values() if _reads(t) and t.name != call.name), key=_source_rank)
    for param, raw in call.arguments.items():
        if param in tool.spec.free_text or not isinstance(raw, str) or not raw.strip():
            continue
        value = raw.strip()
        if _ID_PARAM.search(param):
            found = _name_as_key(call, param, value, reads) or _labelled_other(
                call, param, value, reads, state.started.input
            )
        elif _NAME_PARAM.search(param):
            found = _key_as_name(state, call, param, value, tools)
        else:
            found = None
        if found is not None:
            return found
    return None


def _name_as_key(
    call: ToolCall, param: str, value: str, reads: Sequence[Any]
) -> tuple[str, tuple[str, ...]] | None:
    if not _NAME_VALUE.fullmatch(value) or _NAME_DIGITS.search(value):
        return None
    by_name = tuple(t.name for t in reads if any(_NAME_PARAM.search(p) for p in _params(t)))
    if not by_name:
        return None
    return (
        f"{call.name} was not run: {param}={value!r} is a name; {call.name} takes the {param} itself. Look "
        f"{value!r} up by name with {' or '.join(by_name[:2])} first; its result gives the {param}.",
        by_name,
    )


def _labelled_other(
    call: ToolCall, param: str, value: str, reads: Sequence[Any], request: str
) -> tuple[str, tuple[str, ...]] | None:
    m = re.search(rf"\b([A-Za-z]+){_LABEL_FILLER}{re.escape(value)}\b", request)
    if m is None:
        return None
    label = m.group(1).lower()
    if _names_part(label, param, call.name):
        return None
    takers = [t for t in reads if _names_part(label, t.name, *_params(t))]
    if not takers:
        return None
    # the read that also gives what the call wanted first: search_orders_by_customer for an order_id
    wanted = param.removesuffix("_id")
    takers = tuple(t.name for t in sorted(takers, key=lambda t: not _names_part(wanted, t.name)))
    return (
        f"{call.name} was not run: {value} is the {label} in the request ({m.group(0).strip()!r}), not a "
        f"{param}. Look the {label} up with {' or '.join(takers[:2])} first; its result gives the {param}.",
        takers,
    )


def _key_as_name(
    state: _State, call: ToolCall, param: str, value: str, tools: Mapping[str, Any]
) -> tuple[str, tuple[str, ...]] | None:
    wanted = value.casefold()
    for source, parsed in _parsed_results(state):
        for record in json_records(parsed):
            key = next(
                (k for k, v in record.items() if _ID_PARAM.search(str(k)) and str(v).casefold() == wanted),
                None,
            )
            if key is None:
                continue
            takers = tuple(
                t.name
                for t in sorted(tools.values(), key=_source_rank)
                if _reads(t)
                and t.name != call.name
                and any(p == key or p.endswith(f"_{key}") for p in _params(t))
            )
            if takers:
                return (
                    f"{call.name} was not run: {param}={value!r} is the {key} {source} gave, not a name. "
                    f"Call {' or '.join(takers[:2])} with {key}={value!r}.",
                    takers,
                )
    return None


def _params(tool: Any) -> dict[str, Any]:
    """A tool's parameters by name, with their JSON schemas."""
    return tool.definition.parameters.get("properties", {})


def _names_part(word: str, *names: str) -> bool:
    """Whether `word` (or its singular) is a part of one of the snake_case `names`."""
    forms = {word, word.removesuffix("s"), word.removesuffix("es")}
    return any(
        part in forms or part.removesuffix("s") in forms for name in names for part in name.lower().split("_")
    )


_JSON_OBJECT = re.compile(r"\{[^{}]*\}")


def _recipe_refused(state: _State, tools: Mapping[str, Any], text: str) -> str | None:
    """What a tool's own `check=` says of the call an answer spells out instead of making
    ("call `reserve_stock` with {"sku": "CS-402", "quantity": 5, ...}" when Leeds has 2): the call is
    never made, and the refusal is what the user should be told."""
    for tool in tools.values():
        if tool.spec.check is None or not names_tool(tool.name, text):
            continue
        params = set(_params(tool))
        for m in _JSON_OBJECT.finditer(text):
            try:
                arguments = json.loads(m.group(0))
            except ValueError:
                continue
            if isinstance(arguments, dict) and arguments and set(arguments) <= params:
                refused = _checked(tool, arguments, state)
                if refused is not None:
                    return refused
    return None


def _checked(tool: Any, arguments: dict[str, Any], state: _State) -> str | None:
    """Why the tool's own `check=` precondition refuses the call (None: it may run). A check that raises
    refuses it too: a rule that cannot be evaluated has not been met."""
    try:
        why = tool.spec.check(dict(arguments), Seen(state.lookups))
    except Exception as exc:  # a bug in the developer's check must not let the call through
        _log.warning("a tool's check raised", tool=tool.name, error=repr(exc))
        why = f"its precondition could not be checked ({type(exc).__name__}: {exc})"
    if why is None:
        return None
    # worded as the answer it asks for, the fact first: a small model told to answer copies it
    why = str(why).strip().rstrip(".")
    return (
        f"{why[:1].upper()}{why[1:]}, so {tool.name} was not run and nothing was changed. Tell the user that."
    )


def _canonical(arguments: dict[str, Any] | str) -> str:
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)


_KEY_PARAMS = ("id", "sku", "name", "number", "code", "path", "key")


def _reads(tool: Any) -> bool:
    """Whether a tool only reads: low risk and reversible (idempotent writes do not count)."""
    return bool(tool.spec.risk == "low" and tool.spec.reversible)


def _source_rank(tool: Any) -> tuple[int, str]:
    """Reads by key (a parameter named `id`, `..._id`, `sku`, `name`...) before other reads, before writes."""
    params = _params(tool)
    by_key = any(p == k or p.endswith("_" + k) for p in params for k in _KEY_PARAMS)
    reads = tool.spec.idempotent or tool.spec.risk == "low"
    return (0 if reads and by_key else 1 if reads else 2, tool.name)


def _sources(agent: Agent, call: ToolCall, limit: int = 3) -> list[str]:
    """The agent's tools most likely to supply a missing value, best first (`_source_rank`)."""
    ranked = sorted((t for t in agent.tools.values() if t.name != call.name), key=_source_rank)
    return [t.name for t in ranked][:limit]


def _reads_left(tools: Mapping[str, Any], state: _State, *, besides: str = "") -> tuple[str, ...]:
    """The read tools that have not run yet in this run, best source first: where a value the model
    does not have can still come from. A call that must fetch a missing value is limited to these (a
    tool that already ran would only be asked the same again)."""
    left = (t for t in tools.values() if t.name != besides and t.name not in state.ran and _reads(t))
    return tuple(t.name for t in sorted(left, key=_source_rank))


_NO_NUMBER = "the user asked how much or how many, and the answer states no number"
"""Why an answer was sent back that leaves out the one thing asked for ("The knife was refunded." to
"...and tell me how much was refunded"); sent back once per run."""
# a request for a quantity, and an answer that states one (a digit, or a word for none)
_QUANTITY = re.compile(r"\bhow\s+(much|many)\b", re.I)
_STATES_QUANTITY = re.compile(r"\d|\b(no|none|zero|nothing|free)\b", re.I)

_REFERENCE = "the answer stops at a record's id that a tool of the agent looks up"
"""Why an answer was sent back that hands the user an id from a tool result ("contact customer C-442")
where one more lookup gives what the id stands for: small models stop one hop short."""
_NOT_WRITTEN = "the answer states a new value that no write has made"
_MISLABELLED = "the answer gives an amount in another currency than its source"
_UNSAID = "a tool said what was asked for is not there, and the answer does not say so"
_LEFT_OUT = "the answer leaves out what the request asks for"


def _new_value_not_written(state: _State, text: str) -> tuple[str, str, Decimal] | None:
    """A write refused as changing nothing (`NoChange`: the model wrote the current salary back) and
    not run since, when the answer states a new value of the same size ("her new salary is 90,200"):
    the change the user asked for was worked out but never made. Returns the tool, what it would have
    changed ("new_salary is still 82000 for E-1021") and the new value."""
    stated = stated_numbers(text) if state.unchanged else []
    for tool_name, arguments in state.unchanged.items():
        for param, current in arguments.items():
            if not isinstance(current, int | float) or isinstance(current, bool) or current <= 0:
                continue
            # the size of a new salary, price or count, not the raise or a percentage of it
            new = [n for n in stated if n != Decimal(str(current)) and 0.5 <= float(n) / current <= 2]
            if new:
                about = ", ".join(f"{k}={v}" for k, v in arguments.items() if k != param)
                still = f"{param} is still {current} for {about}" if about else f"{param} is still {current}"
                return tool_name, still, new[0]
    return None


def _calculation(state: _State, tools: Mapping[str, Any], value: Decimal) -> tuple[str, str] | None:
    """(calculator, expression) that computes `value` from numbers the run has seen in one step
    (`1.1 * 82000` for 90200), when the agent has a calculator and such a step exists."""
    calculators = _calculators(tools)
    how = derive(value, state.evidence.numbers()) if calculators else None
    if how is None:
        return None
    form = how.split(" ", 2)[2]
    added = re.fullmatch(r"(\S+) [+−] (\S+)", form)
    if added is not None:
        # a sum of a fraction and a salary ("0.1 + 82000" for a 10% raise the model got wrong) is a
        # value no one asked for: suggesting it would let the write take it
        small, large = sorted(abs(float(x)) for x in added.groups())
        if small < 1 or small < large / 1000:
            return None
    return calculators[0], form.replace("×", "*").replace("÷", "/").replace("−", "-")


# an answer that says the value is not there, in the words small models use
_GIVES_UP = re.compile(
    r"\b(not (provided|available|given|included|specified|listed)|no information|(cannot|can't|unable to) "
    r"(be )?(determine|find|provide)|(do|does) not (have|contain|include))\b",
    re.I,
)


def _unresolved_reference(
    state: _State, tools: Mapping[str, Any], text: str
) -> tuple[str, str, str, str] | None:
    """(value, field, tool, parameter): an id the answer states that only a tool result gave (its `field`),
    with the read tool whose `parameter` looks it up and that has not been asked about it. None when there
    is none, or when an answer was already sent back for this once (the second answer stands)."""
    if _REFERENCE in state.reasons:
        return None
    # "C-442." at the end of a sentence is C-442
    said = {ident.rstrip(".:/-#@").casefold() for _, ident in identifiers({"answer": text})}
    # or an answer that gives up ("...is not provided in the tool results") while a result points at a
    # record nobody looked up: the chain stopped a hop short (the manager's id, never looked up)
    gives_up = not said and not state.last_missing and _GIVES_UP.search(text) is not None
    if not said and not gives_up:
        return None
    asked = Evidence((state.started.input,))
    request_words = set(re.findall(r"[a-z]+", state.started.input.casefold()))
    found: list[tuple[int, tuple[str, str, str, str]]] = []
    for content in (c for texts in state.texts_by.values() for c in texts):
        for field_name, value in references(content):
            if asked.has_ident(value) or (not gives_up and value.casefold() not in said):
                continue
            if _asked_about(state, value):
                continue  # a tool was already asked about this record: the answer is what it found
            lookup = _looks_up(state, tools, field_name, value)
            if lookup is not None:
                # the pointer the request is about first ("manager" in the request, `manager_id`)
                about = len(set(re.findall(r"[a-z]+", field_name.casefold())) & request_words)
                found.append((-about, (value, field_name, *lookup)))
    if not found:
        return None
    rank, best = min(found, key=lambda f: f[0])
    # giving up with no pointer the request names: nothing to send it to
    return None if gives_up and rank == 0 else best


def _parsed_results(state: _State) -> list[tuple[str, Any]]:
    """(tool, parsed JSON) of every successful result that is JSON, grouped by tool in the order the
    tools first ran."""
    return [(tool, parsed) for tool, results in state.parsed_by.items() for parsed in results]


def _asked_about(state: _State, value: str) -> bool:
    """Whether a call of this run (made or refused) already had `value` in its arguments."""
    return any(value.casefold() in arguments.casefold() for _, arguments in state.call_counts)


def _looks_up(state: _State, tools: Mapping[str, Any], field_name: str, value: str) -> tuple[str, str] | None:
    """(tool, parameter): the read tool that takes `value` (a result's `field_name`), best match first: a
    parameter of the same name, then one whose description shows the id's prefix (`E-` in "(E- and
    digits)"). None when no tool says it takes such ids."""
    prefix = re.match(r"[A-Za-z]+[-_#]?", value)
    scored: list[tuple[int, tuple[int, str], str, str]] = []
    for tool in tools.values():
        if not _reads(tool):
            continue
        props = _params(tool)
        for param, schema in props.items():
            if not isinstance(schema, dict) or schema.get("type") != "string":
                continue
            described = f"{tool.definition.description} {schema.get('description', '')}"
            if param == field_name:
                score = 3
            elif prefix is not None and prefix.group(0) in described:
                score = 2
            else:
                continue  # any other id parameter would be a guess
            scored.append((score, _source_rank(tool), tool.name, param))
    if not scored:
        return None
    _, _, name, param = min(scored, key=lambda s: (-s[0], s[1]))
    return name, param


def _write_pending(state: _State, tools: Mapping[str, Any]) -> bool:
    """Whether the user's request asks for one of the agent's writes that has not run yet."""
    return any(
        _writes(t) and t.name not in state.succeeded and asks_for(t.name, state.started.input)
        for t in tools.values()
    )


def _missing_told(said: str, state: _State) -> str:
    """The message after a rejected answer when a tool said what is missing: that is the answer."""
    return f"{said} {state.not_found[-1]}. Tell the user that, in plain sentences; do not explain the tools."


def _request(state: _State, tools: Mapping[str, Any]) -> str:
    """The user's request, quoted for a corrective message (`request "Who is ...?"`), or just `request`.

    A small model told to "answer the user" after a few turns of tool calls has often lost what was
    asked, and answers another question (or calls the same tool again). A request that asks for one of
    the agent's writes is not quoted until that write has run: quoting "Refund the blender from order
    4410." made the 1.5B model carry it out, with whatever amount was in view.
    """
    text = _plain(state.started.input, 240)
    # once the write has run, a repeat of it is answered, not run: the request can be quoted
    return "request" if _write_pending(state, tools) and not text.endswith("?") else f'request "{text}"'


def _after_rejection(
    state: _State, tools: Mapping[str, Any], reason: str, values: Sequence[str], text: str = ""
) -> tuple[Literal["tool", "answer", "either"], tuple[str, ...], str]:
    """What the model is told after its answer `text` was rejected for `reason`, and what its next turn
    must be: (`then`, the tools a required call is limited to, the message)."""
    said = f"Your answer was not shown to the user: {reason}."
    left = _reads_left(tools, state)
    if reason == HOW_TO and state.not_found:
        # it explains how to look up a record a tool already reported missing: that is the answer
        return "answer", (), _missing_told(said, state)
    if reason == HOW_TO:
        # the reads it names and has not made are the step it is describing instead of taking; when it
        # names only tools that already ran, the results are in front of it and the answer is next
        named = tuple(t for t in left if names_tool(t, text))
        needs = named or (left if not state.succeeded else ())
        if needs:
            return (
                "tool",
                needs,
                f"{said} Do not explain the steps: make the calls yourself now ({' or '.join(needs[:3])}), then "
                "answer with what they return.",
            )
        refused = _recipe_refused(state, tools, text)
        if refused is not None:
            # the write it spelled out would be refused by the tool's own precondition: that is the
            # answer, told as the answer (what a small model told to answer copies is the last message)
            return "answer", (), refused
        # after reads, with a write the user asked for still not run: a free turn is where a refund of
        # whatever amount is in view would run (the blender that order 4410 does not have)
        return (
            "answer" if _write_pending(state, tools) else "either",
            (),
            f"{said} Do not explain the steps: the tool results above are what they give. Answer the user's "
            f"{_request(state, tools)} from them now, in plain sentences.",
        )
    if values and state.succeeded:
        # numbers it worked out wrong after the tools answered (a correct one is derived, and stands):
        # sending it to a calculator had it compute on the wrong numbers ("77.19 * 0.92", a conversion
        # converted twice) and return that grounded result; the values it needs are in view
        known = state.evidence.numbers()
        hints = [
            f"they give {_fmt_number(n)}, not {value}"
            for value in values
            for stated in stated_numbers(value)[:1]
            if (n := misscaled(stated, known)) is not None
        ]
        hint = f" ({'; '.join(hints)})" if hints else ""
        return (
            "either",
            (),
            f"{said} Answer with the values exactly as the tool results above give them{hint}; call a tool "
            "only for a value they do not have.",
        )
    if (
        values
        or reason == _CUT_OFF
        or reason.startswith("no tool was called")
        or (reason == PARROTED and left)
        or (not state.tool_texts and left)
    ):
        # a value it does not have yet: from a read not yet made, when there is one (any tool else)
        where = f"call {' or '.join(left[:3])}" if left else "use the tools"
        return (
            "tool",
            left,
            (
                f"{said} Do not guess or work out values yourself: {where} to get the real values, then answer "
                "again using only values from the tool results and the request."
            ),
        )
    if not state.tool_texts:
        return (
            "either",
            (),
            f"{said} Use the tools to get the real values, then answer using only their results.",
        )
    # empty, a call written as text, or a copied corrective message, after tools answered (found or not);
    # a write it wrote out as text is not its next call: that is how a refund nobody verified would run
    if state.last_missing:
        # the last tool that ran said what is missing: that is the answer, in the tool's words
        return "answer", (), _missing_told(said, state)
    writes = any(_writes(t) and names_tool(t.name, text) for t in tools.values())
    return (
        "answer" if reason == PARROTED or writes else "either",
        (),
        (
            f"{said} Answer the user's {_request(state, tools)} now, in plain sentences, from the tool results "
            "above; if something is missing, say so in your own words."
        ),
    )


def _ungrounded_message(
    agent: Agent,
    call: ToolCall,
    ungrounded: Sequence[Any],
    needs: Sequence[str] = (),
    alike: Sequence[tuple[str, str, str]] = (),
    near: Sequence[tuple[str, str]] = (),
) -> str:
    values = ", ".join(f"{u.path}={u.value}" for u in ungrounded)
    offered = ""
    if near:
        # "file_notes/q3_review.txt" for the request's "notes/q3_review.txt": the request's own words
        given = ", ".join(f"{param}={value!r}" for param, value in near)
        offered = f" The request gives {given}. Call {call.name} again with exactly that."
    elif alike:
        # "E-12345" for a manager the lookup gave as E-1009: the ids of that form in view are the choice
        given = ", ".join(f"{value} ({field} in {source}'s result)" for value, field, source in alike)
        offered = (
            f" The tool results so far give these ids of that form: {given}. Call {call.name} again with the "
            "one the request is about."
        )
    where = (
        f" Call {' or '.join(needs[:3] or _sources(agent, call))} first to get the real value, or use"
        if len(agent.tools) > 1 and not alike and not near
        else " Use"
    )
    return (
        f"{call.name} was not run: {values} does not appear in the user's request or in any tool result so "
        f"far, so it would be a guess.{offered}{where} only values from the request and earlier results."
    )


_ID_PREFIX = re.compile(r"[A-Za-z]+[-_#]?(?=\d)")
# a word of the request: a path, an id, a name part (what a small model copies with a change)
_REQUEST_WORD = re.compile(r"[\w][\w./\-]{3,}[\w]")


def _near_request(state: _State, ungrounded: Sequence[Any]) -> list[tuple[str, str]]:
    """(parameter, the request's word) for each invented text value that holds a word of the request
    with something added or taken away (`file_notes/q3_review.txt` for `notes/q3_review.txt`)."""
    words = _REQUEST_WORD.findall(state.started.input)
    near: list[tuple[str, str]] = []
    for u in ungrounded:
        value = str(u.value)
        if len(value) < 5 or not re.search(r"[A-Za-z]", value):
            continue  # numbers are compared by value, not spelling
        match = max(
            (w for w in words if w != value and (w in value or value in w) and len(w) >= 5),
            key=len,
            default=None,
        )
        if match is not None:
            near.append((u.path, match))
    return near


def _alike_ids(state: _State, ungrounded: Sequence[Any]) -> list[tuple[str, str, str]]:
    """Ids the run's results give in the form of an invented one (`E-1009` for `E-12345`: the same
    letters before the digits), as (id, field, tool), at most four."""
    found: list[tuple[str, str, str]] = []
    for u in ungrounded:
        prefix = _ID_PREFIX.match(str(u.value))
        if prefix is None:
            continue
        for source, texts in state.texts_by.items():
            for text in texts:
                for field_name, ident in references(text):
                    same = ident.casefold().startswith(prefix.group(0).casefold()) and ident != u.value
                    if same and all(ident != f[0] for f in found):
                        found.append((ident, field_name, source))
    return found[:4]


def _calculators(tools: Mapping[str, Any]) -> tuple[str, ...]:
    """The agent's arithmetic tools: reads named or described as calculating, or taking an `expression`."""
    return tuple(
        t.name
        for t in tools.values()
        if _reads(t)
        and (
            re.search(r"calcul|arithmetic|\bmath", f"{t.name} {t.description}", re.I)
            or "expression" in _params(t)
        )
    )


def _worked_out(
    state: _State, tools: Mapping[str, Any], write: str, ungrounded: Sequence[Any]
) -> tuple[tuple[str, ...], str] | None:
    """For the `write` refused over a number the model worked out in its head (`new_salary=90200`,
    which is 82000 x (1 + 0.1)): the calculator to call and the message naming the expression. None
    when a value is not one step of arithmetic on seen numbers, or there is no calculator."""
    if len(ungrounded) != 1:
        return None
    (u,) = ungrounded
    stated = stated_numbers(str(u.value))
    calculation = _calculation(state, tools, stated[0]) if len(stated) == 1 else None
    if calculation is None:
        return None
    calculator, expression = calculation
    return (calculator,), (
        f"{write} was not run: {u.path}={u.value} is worked out ({_fmt_number(stated[0])} = {expression}), "
        f"and a change is made only with values a tool returned. Call {calculator} with {expression!r} "
        f"first, then call {write} with its result."
    )


class Runner:
    """Runs agents and resumes their runs, journaling every step to a store.

    Args:
        store: where journals go. Defaults to `open_store()`: `TETHER_STORE`, else `./.tether/tether.db`.
        clock: the time source (a `tether.testing.FakeClock` in tests).
        observer: told about every event and generated token (for live display).
        governance: the kill switch, budgets, rate limits and prices every step is checked against
            (before each model call and each tool call); None: no governance.
        approval_poll_s: how often a run waiting on a synchronous (`critical`) approval looks for the
            decision in its journal.
        tool_breaker: a circuit breaker per tool (`tether.models.BreakerPolicy`): a tool that keeps
            raising or timing out is not called while its breaker is open (the model is told why and
            when it may retry); None: no breakers.
        breaker_state: where the tool breakers' state lives: in this process by default, or shared by
            every worker (`tether.models.breakers.RedisBreakerState` / `PostgresBreakerState`).
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        clock: Clock | None = None,
        observer: RunObserver | None = None,
        governance: Governance | None = None,
        approval_poll_s: float = 0.5,
        tool_breaker: BreakerPolicy | None = None,
        breaker_state: BreakerState | None = None,
    ):
        self.store = store if store is not None else open_store()
        self.clock = clock or SystemClock()
        self.observer = observer
        self.governance = governance
        self.approval_poll_s = approval_poll_s
        self.tool_breaker = tool_breaker
        self.breaker_state = breaker_state
        self._breakers: dict[str, CircuitBreaker] = {}

    async def run(
        self,
        agent: Agent,
        input: str,
        *,
        run_id: str | None = None,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> RunResult:
        """Start a run of `agent` on `input` and drive it to a terminal status.

        A run that fails (a limit, a model error) returns a `RunResult` saying so; use
        `result.raise_for_status()` to turn that into a `RunError`.

        Raises:
            StoreError: the journal could not be written; the run cannot go on safely.
        """
        run_id = run_id or new_run_id()
        started = self._started(agent, input, user_id=user_id, metadata=metadata)
        await self.store.create_run(run_id, started)
        self._notify(run_id, started)
        state = _State(
            run_id=run_id,
            started=started,
            messages=_first_messages(started),
            seq=1,
            evidence=_first_evidence(started),
            sensitive=started.metadata.get("sensitive") is True,
        )
        return await self._drive(agent, state)

    async def submit(
        self,
        agent: Agent,
        input: str,
        *,
        run_id: str | None = None,
        idempotency_key: str | None = None,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Queue a run of `agent` on `input` for a worker (`tether worker`); nothing runs here.

        Args:
            idempotency_key: the caller's key for this submission; submitting again with the same key
                creates nothing and returns the first run's id.

        Returns:
            The run's id.

        Raises:
            ConfigError: the agent cannot be imported by another process (it has no `ref`).
        """
        if agent.ref is None:
            raise ConfigError(
                f"agent {agent.name!r} cannot be submitted: workers import the agent to run it, and it is "
                "not defined at module level of an importable module; define it there or pass "
                "ref='module:attr'"
            )
        started = self._started(agent, input, user_id=user_id, metadata=metadata)
        return await self.store.enqueue(run_id or new_run_id(), started, idempotency_key=idempotency_key)

    def _started(
        self, agent: Agent, input: str, *, user_id: str | None, metadata: dict[str, Any] | None
    ) -> RunStarted:
        if not isinstance(input, str):
            raise ConfigError(f"run input must be a string; got {type(input).__name__}")
        return RunStarted(
            at=self.clock.now(),
            agent=agent.name,
            agent_ref=agent.ref,
            input=input,
            model=agent.model_name,
            instructions=_instructions(agent),
            tools=tuple(agent.tools),
            limits=agent.limits.as_dict(),
            user_id=user_id,
            metadata=metadata or {},
        )

    async def resume(
        self,
        run_id: str,
        agent: Agent | None = None,
        *,
        lease: Lease | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> RunResult:
        """Continue a run from its journal (after a crash, a restart or a stop), or start a queued one.

        Recorded model responses and completed tool calls are reused, not repeated. A call that had
        started but not finished is re-run with the same idempotency key if its tool is `idempotent`;
        otherwise a human is asked whether it took effect (the run suspends; `Agent(on_in_doubt="report")`
        instead tells the model it may or may not have happened). A run waiting for an approval whose
        deadline has not come is returned `suspended` untouched; once decided (or past its deadline) it
        carries on: the decision (or the deadline's action) applies, and the policy is asked again.

        Args:
            agent: the agent to continue with; by default the one the run recorded (`agent_ref`).
            lease: the worker's lease on the run (from `Store.claim`); every append presents it, so that
                once another worker has taken the run over nothing more is written from here.
            stop: asked before each step (model call); when it returns True the run is handed back
                unfinished, its steps so far journaled, and the result's status is not a terminal one.

        Raises:
            RunNotFound: no such run.
            AgentNotFound: the agent cannot be imported in this process.
            LeaseLost: another worker took the run over; it was left to that worker, not failed.
        """
        stored = await self.store.load(run_id)
        state = _State.rebuild(run_id, [s.event for s in stored])
        state.lease, state.stop = lease, stop
        if agent is None:
            ref = state.started.agent_ref
            if ref is None:
                raise ConfigError(
                    f"run {run_id} was started by agent {state.started.agent!r} defined outside an importable "
                    "module; pass the agent to Runner.resume(run_id, agent) or define it at module level"
                )
            agent = load_agent(ref)
        if state.finished is not None:
            return self._result(agent, state, 0.0)
        waiting = state.waiting_on(self.clock.now())
        if waiting is not None:
            # still waiting for a human and its deadline has not come: nothing to do, nothing written
            state.suspended = waiting
            return self._result(agent, state, 0.0)
        resumed = RunResumed(
            at=self.clock.now(),
            from_seq=state.seq,
            host=socket.gethostname(),
            pid=os.getpid(),
            in_doubt=tuple(sorted(state.in_doubt)),
        )
        state.buffer.append(resumed)
        self._notify(run_id, resumed)
        _log.info("run resumed", run_id=run_id, from_seq=state.seq, in_doubt=sorted(state.in_doubt))
        return await self._drive(agent, state)

    # -- the loop -------------------------------------------------------------------------------------

    async def _drive(self, agent: Agent, state: _State) -> RunResult:
        t0 = self.clock.monotonic()
        limits = agent.limits
        try:
            with anyio.move_on_after(limits.timeout_s) as scope:
                await self._loop(agent, state)
            if scope.cancelled_caught and state.finished is None:
                await self._finish(
                    state, "timed_out", f"the run took longer than its timeout of {limits.timeout_s:g}s"
                )
        except (KeyboardInterrupt, anyio.get_cancelled_exc_class()):
            # Under a lease the run belongs to the queue: a worker being stopped is not anyone cancelling
            # the run, which goes on elsewhere (cancelling a queued run is `tether runs cancel`).
            if state.finished is None and state.lease is None:
                with anyio.CancelScope(shield=True):
                    await self._finish(state, "cancelled", "the run was cancelled (interrupted)")
            raise
        except LeaseLost as exc:
            # not a failure of the run: its new holder carries it on; only this process stops
            _log.warning("lease lost; another worker has the run now", run_id=state.run_id, error=str(exc))
            raise
        except StoreError as exc:
            _log.error("journal write failed; the run stops here", run_id=state.run_id, error=str(exc))
            raise
        except Exception as exc:
            # a bug in a wrapper or in tether itself: record it so the run does not look alive forever
            _log.exception("run crashed", run_id=state.run_id)
            if state.finished is None:
                await self._finish(state, "failed", f"internal error: {type(exc).__name__}: {exc}")
            raise
        return self._result(agent, state, self.clock.monotonic() - t0)

    async def _loop(self, agent: Agent, state: _State) -> None:
        limits = agent.limits
        definitions = [t.definition for t in agent.tools.values()]
        meta = state.started.metadata
        hints = meta.get("route_hints")
        budget = meta.get("budget_usd_per_call")
        settings = replace(
            agent.settings,
            max_tokens=limits.max_output_tokens,
            timeout_s=limits.model_timeout_s,
            route_key=state.run_id,  # every call of a run lands in the same A/B arm
            cache_scope=f"{agent.name}/{state.started.user_id or ''}",  # answers never cross agents or users
            hints=tuple(h for h in hints if isinstance(h, str))
            if isinstance(hints, list)
            else agent.settings.hints,
            budget_usd=float(budget) if isinstance(budget, int | float) else agent.settings.budget_usd,
        )
        # what the context leaves free in the window: the answer, and the tool definitions every call sends
        reserve = (
            limits.max_output_tokens + _tools_tokens(definitions)
            if limits.context_window_tokens is not None
            else 0
        )
        stack = agent.guardrails
        if stack is not None and not state.input_checked and await self._guard_input(stack, agent, state):
            return
        on_token = None
        if self.observer is not None:
            observer, run_id = self.observer, state.run_id

            def on_token(text: str) -> None:
                observer.token(run_id, text)

        while True:
            if state.outstanding:
                await self._run_calls(agent, state)
                if state.suspended is not None or state.finished is not None or state.handed_back:
                    await self._flush(state)
                    return
                continue
            if state.stop is not None and state.stop():
                # between steps: everything done so far is journaled, and the next holder starts here
                await self._flush(state)
                _log.info("run handed back between steps", run_id=state.run_id, step=state.step)
                return
            if state.step >= limits.max_steps:
                await self._finish(
                    state, "max_steps", f"reached max_steps={limits.max_steps} without a final answer"
                )
                return
            if limits.max_total_tokens is not None and state.usage.total_tokens >= limits.max_total_tokens:
                await self._finish(
                    state,
                    "budget_exceeded",
                    f"used {state.usage.total_tokens} tokens, the limit is max_total_tokens={limits.max_total_tokens}",
                )
                return
            # Outcomes of idempotent tools (and calls that never ran) are still in the buffer: they are
            # committed with this step's response, one transaction per step. Dying during the model call
            # loses them, and resume re-runs those calls with the same idempotency key, which is safe
            # by definition. Non-idempotent outcomes were committed the moment their tool returned.
            if self.governance is not None and await self._governed(agent, state):
                return
            step = state.step + 1
            if agent.log_content != "off":
                self._log_content(agent, state, step, "model request", state.messages[-1])
            try:
                # models enforce settings.timeout_s themselves (the contract); a model that does not is
                # still bounded by the run's timeout around this loop
                response = await agent.model.request(
                    self._context(state, limits, step, reserve, grounding=agent.grounding),
                    tools=definitions,
                    settings=self._settings_for(state, settings, bool(definitions)),
                    on_token=on_token,
                )
            except (ModelError, ConfigError) as exc:
                # a ConfigError here is the model's own setup (a missing or corrupt weights file): the run
                # cannot go on, and the message says how to fix it
                await self._model_failed(agent, state, step, exc)
                return
            self._add(state, ModelResponded(at=self.clock.now(), step=step, response=response))
            self._add(
                state,
                UsageCharged(
                    cost_usd=await self._charge(agent, state, response),
                    at=self.clock.now(),
                    step=step,
                    model=response.model or agent.model_name,
                    usage=response.usage,
                ),
            )
            if agent.log_content != "off":
                self._log_content(agent, state, step, "model responded", response)
            repeated = state.record_response(step, response)
            state.usage = state.usage + response.usage
            if not response.tool_calls:
                if await self._reject_answer(
                    state,
                    step,
                    response,
                    limits.max_answer_retries,
                    check_values=agent.grounding,
                    tools=agent.tools,
                ):
                    if state.finished is not None:
                        return
                    continue
                output = state.standing if state.standing_over and state.standing else response.text
                if stack is not None:
                    checked, _ = await self._guard(stack, agent, state, output, "output", "model")
                    if not checked.passed:
                        # no human path for an answer: escalate is a block, and the answer is never shown
                        await self._finish(
                            state,
                            "blocked",
                            f"the answer was withheld by the guardrails ({', '.join(checked.categories)})",
                            output=stack.refusal_message,
                        )
                        return
                    output = checked.text if checked.text is not None else output  # redacted, when it was
                # a number the answer computed is recorded with how it follows from the run's numbers
                computed = f"; computed: {', '.join(state.derived)}" if state.derived else ""
                if state.standing_over:
                    computed = f"; an earlier answer, since the last was rejected: {state.standing_over}"
                await self._finish(
                    state, "completed", f"the model gave a final answer{computed}", output=output
                )
                return
            if repeated is not None and repeated[1] >= limits.max_repeated_calls:
                call, count = repeated
                await self._finish(
                    state,
                    "failed",
                    f"loop detected: {call.name}({_canonical(call.arguments)}) was called {count} times "
                    f"with the same arguments (max_repeated_calls={limits.max_repeated_calls})",
                )
                return

    async def _run_calls(self, agent: Agent, state: _State) -> None:
        """Run the outstanding calls of the last response, in order, journaling each."""
        step = state.step
        for call in list(state.outstanding):
            tool = agent.tools.get(call.name)
            if tool is None:
                self._tool_failed(
                    state,
                    call,
                    "unknown_tool",
                    "ToolNotFound",
                    f"unknown tool {call.name!r}; agent {agent.name!r} has {sorted(agent.tools)}",
                )
                continue
            try:
                kwargs = tool.validate(call.arguments)
            except ToolArgumentsError as exc:
                self._tool_failed(state, call, "invalid_arguments", "ToolArgumentsError", str(exc))
                continue
            previous = state.results.get((call.name, _canonical(call.arguments)))
            if previous is not None:
                # small models call a tool again right after reading its result; running it again
                # would cost a step and, for a write, an effect: hand back the result and ask for the answer
                self._tool_failed(
                    state,
                    call,
                    "repeated",
                    "RepeatedCall",
                    f"{call.name} was already called with these arguments; its result is above, and calling it "
                    f"again returns the same. Answer the user's {_request(state, agent.tools)} now, in plain "
                    f"sentences, from the result of {call.name} above.",
                )
                state.force_answer = True
                continue
            echoed = _echoed(state, call, tool) if agent.grounding else []
            if echoed:
                self._tool_failed(
                    state,
                    call,
                    "repeated",
                    "EchoedResult",
                    f"{call.name} was not run: {', '.join(echoed)} is what {call.name} itself returned earlier "
                    f"in this run; calling it on its own result goes round in circles. Use the results you "
                    "have and answer the user now.",
                )
                state.force_answer = True
                continue
            again = _same_step_again(state, call) if agent.grounding else None
            if again is not None:
                self._tool_failed(
                    state,
                    call,
                    "repeated",
                    "SameStepAgain",
                    f"{call.name} was not run: {again}, which goes round in circles. Use the results you have "
                    "and answer the user now.",
                )
                state.force_answer = True
                continue
            gone = _missing_record(state, call, tool) if agent.grounding else None
            if gone is not None:
                # before the requires= check: "call lookup_order first" about an order it reported
                # missing sends the model round the lookup again; the record is gone, so the answer is next
                self._tool_failed(state, call, "precondition", _RECORD_MISSING, gone)
                state.force_answer = True
                continue
            missing = [r for r in tool.spec.requires if r not in state.succeeded]
            said = (
                next(
                    (
                        n
                        for n in reversed(state.not_found)
                        if n.startswith(tuple(f"{r} said:" for r in missing))
                    ),
                    None,
                )
                if missing and agent.grounding
                else None
            )
            if said is not None:
                # the lookup it requires ran and found nothing ("there is no employee named 'John Doe'"):
                # "call find_employee first" would send it round the same lookup; the answer is next
                self._tool_failed(
                    state,
                    call,
                    "precondition",
                    _RECORD_MISSING,
                    f"{said}. So {call.name} was not run and nothing was changed. Tell the user it was not found.",
                )
                state.force_answer = True
                continue
            absent = _absent_object(state, tool) if agent.grounding and not missing else None
            if absent is not None:
                # "Refund the blender from order 4410" on an order without one: the amount it would
                # refund can only be another item's, so the answer is next
                self._tool_failed(state, call, "precondition", _RECORD_MISSING, absent)
                state.force_answer = True
                continue
            if missing:
                self._tool_failed(
                    state,
                    call,
                    "precondition",
                    "PreconditionFailed",
                    f"{call.name} was not run: it needs a successful {' and '.join(missing)} call earlier in this "
                    f"run. Call {missing[0]} first.",
                    needs=tuple(missing),
                )
                state.force_tools = tuple(missing)
                continue
            tainted = ""
            escalated: str | None = None
            described = _described(agent.tools, call, tool) if agent.grounding else None
            if described is not None:
                message, needs = described
                self._tool_failed(state, call, "ungrounded", "Description", message, needs=needs)
                state.force_tools = needs
                continue
            mislabelled = _mislabelled(state, agent.tools, call, tool) if agent.grounding else None
            if mislabelled is not None:
                message, needs = mislabelled
                self._tool_failed(state, call, "ungrounded", "WrongKind", message, needs=needs)
                state.force_tools = needs
                continue
            if agent.grounding and isinstance(call.arguments, dict):
                ungrounded = find_ungrounded(call.arguments, state.evidence, free_text=tool.spec.free_text)
                asked = named_record(state.started.input) if ungrounded else None
                gone_asked = state.missing.get(asked.casefold()) if asked is not None else None
                if gone_asked is not None:
                    # the record the user asked about does not exist: there is nothing to compute from,
                    # and the guessed value says so; the answer is next (a resumed run forces it too)
                    self._tool_failed(
                        state,
                        call,
                        "ungrounded",
                        _RECORD_MISSING,
                        f"{gone_asked}. {call.name} was not run: {asked!r} does not exist, so "
                        f"{', '.join(f'{u.path}={u.value}' for u in ungrounded)} would be a guess. Tell the user "
                        f"{asked!r} was not found.",
                    )
                    state.force_answer = True
                    continue
                if ungrounded:
                    # the value has to come from somewhere: the constrained decoder makes the next call
                    # one of the reads not yet made (none left: the model chooses)
                    needs = _reads_left(agent.tools, state, besides=call.name)
                    # only for a write the user asked for: the calculator's result would let it run
                    # (a refund of the "how much" the user only asked about would be grounded then)
                    asked = _writes(tool) and asks_for(call.name, state.started.input)
                    worked = _worked_out(state, agent.tools, call.name, ungrounded) if asked else None
                    if worked is not None:
                        # a write's value the model computed in its head: a calculator's result is one
                        # the run has seen, so the write can take it
                        needs, message = worked
                    else:
                        near = _near_request(state, ungrounded)
                        alike = [] if near else _alike_ids(state, ungrounded)
                        if near or alike:
                            # the tool it chose, with an id the results give: offered another read as
                            # well, the 1.5B model took that one and lost the chain
                            needs = (call.name,)
                        message = _ungrounded_message(agent, call, ungrounded, needs, alike, near)
                    self._tool_failed(state, call, "ungrounded", "Ungrounded", message, needs=needs)
                    state.force_tools = needs
                    continue
                refusal = _unverified(state, call, tool)
                if refusal is not None:
                    message, needs = refusal
                    self._tool_failed(state, call, "precondition", "PreconditionFailed", message, needs=needs)
                    state.force_tools = needs
                    continue
                other = other_amount(
                    state.started.input, _parsed_results(state), call.arguments, free_text=tool.spec.free_text
                )
                if other is not None:
                    # "refund the price of the knife" with the order's total: grounded, and another amount
                    calculators = _calculators(agent.tools)
                    needs = (call.name, *calculators)
                    work = f", or work it out from them with {calculators[0]}" if calculators else ""
                    self._tool_failed(
                        state,
                        call,
                        "ungrounded",
                        "OtherAmount",
                        f"{call.name} was not run: {other.describe()}. Call {call.name} with the {other.item}'s "
                        f"own numbers{work}.",
                        needs=needs,
                    )
                    state.force_tools = needs
                    continue
                unchanged = _unchanged(state, call, tool)
                if unchanged is not None:
                    self._tool_failed(state, call, "precondition", _NO_CHANGE, unchanged)
                    continue
                injected = injected_call(
                    call.name, request=state.started.input, tool_results=state.tool_texts
                )
                if injected is not None:
                    risky = tool.spec.risk != "low" or not tool.spec.reversible
                    if not risky:
                        tainted = injected.source
                        _log.warning("tainted call runs (low risk)", run_id=state.run_id, tool=call.name)
                    elif agent.on_injected == "refuse":
                        self._tool_failed(state, call, "injected", "InjectedCall", injected.message())
                        continue
                    else:
                        escalated = (
                            f"only a tool result asked for {call.name}, not the user ({injected.source!r})"
                        )
            if tool.spec.check is not None and isinstance(call.arguments, dict):
                refused = _checked(tool, call.arguments, state)
                if refused is not None:
                    self._tool_failed(state, call, "precondition", "CheckFailed", refused)
                    continue
            if self.governance is not None and self.governance.kill_switch is not None:
                killed = await self.governance.kill_switch.check(agent.name, call.name, state.started.user_id)
                if not killed.allowed:
                    self._tool_failed(
                        state, call, "blocked", "KillSwitch", f"{call.name} is switched off: {killed.reason}"
                    )
                    continue
            stack = agent.guardrails
            if stack is not None and isinstance(call.arguments, dict):
                action, found = await self._guard_call(stack, agent, state, call)
                if action == "block":
                    self._tool_failed(
                        state, call, "blocked", "GuardBlocked", f"{call.name} was not run: {found}"
                    )
                    continue
                if action == "escalate":
                    escalated = f"guardrails: {found}" + (f"; {escalated}" if escalated else "")
            go = await self._approve(agent, state, call, tool, escalated=escalated)
            if go is None:
                if state.suspended is not None or state.finished is not None or state.handed_back:
                    return
                continue
            if go.arguments is not None:  # a human edited the call: the edited arguments run
                try:
                    kwargs = tool.validate(go.arguments)
                except ToolArgumentsError as exc:
                    self._tool_failed(
                        state,
                        call,
                        "invalid_arguments",
                        "ToolArgumentsError",
                        f"the arguments a human approved for {call.name} do not fit it: {exc}",
                    )
                    continue
            key = f"{state.run_id}:{step}:{call.call_id}"
            args = call.arguments if isinstance(call.arguments, dict) else {}
            run_args = go.arguments if go.arguments is not None else args
            state.started_args[call.call_id] = (call.name, _canonical(args))
            self._add(
                state,
                ToolStarted(
                    at=self.clock.now(),
                    step=step,
                    call_id=call.call_id,
                    tool=call.name,
                    arguments=run_args,
                    idempotency_key=key,
                    policy=go.policy,
                    policy_reason=go.reason,
                    original_arguments=args if go.arguments is not None else None,
                    tainted=tainted,
                ),
            )
            await self._flush(state)
            ctx = ToolContext(
                run_id=state.run_id, call_id=call.call_id, idempotency_key=key, agent=agent.name, step=step
            )
            breaker = self._breaker(call.name)
            permit = await breaker.acquire() if breaker is not None else None
            if permit is not None and not permit.allowed:
                self._tool_failed(
                    state, call, "blocked", "CircuitOpen", f"{call.name} was not run: {permit.reason}"
                )
                if not tool.spec.idempotent:
                    await self._flush(state)
                continue
            t0 = self.clock.monotonic()
            try:
                output = await tool.execute(kwargs, ctx, timeout_s=agent.limits.tool_timeout_s)
            except ToolTimeout as exc:
                self._tool_failed(
                    state, call, "timeout", "ToolTimeout", str(exc), self.clock.monotonic() - t0
                )
                if breaker is not None:
                    await breaker.record_failure(f"timed out: {exc}")
            except Exception as exc:
                took = self.clock.monotonic() - t0
                if breaker is not None:
                    await breaker.record_failure(f"{type(exc).__name__}: {exc}")
                # the model sees the error and may correct its call (reflection); the step limit bounds retries
                message = f"{type(exc).__name__}: {exc}"
                if stack is not None:  # an error can quote what the tool read (a page, an email): guarded too
                    message = await self._guard_result(stack, agent, state, call, message)
                self._tool_failed(state, call, "raised", type(exc).__name__, message, took)
            else:
                took = self.clock.monotonic() - t0  # the tool's own time; the guards' is in guard_checked
                if breaker is not None and permit is not None:
                    await breaker.record_success(permit)
                content = render_output(output)
                if stack is not None:
                    content = await self._guard_result(stack, agent, state, call, content)
                self._add(
                    state,
                    ToolCompleted(
                        at=self.clock.now(),
                        step=step,
                        call_id=call.call_id,
                        tool=call.name,
                        output=to_jsonable_python(output, fallback=str),
                        content=content,
                        duration_s=took,
                    ),
                )
                state.record_outcome(call.call_id, call.name, content, is_error=False)
            if not tool.spec.idempotent:
                # this call's effect must never be repeated: its outcome is durable before anything else
                await self._flush(state)

    async def _approve(
        self, agent: Agent, state: _State, call: ToolCall, tool: Any, *, escalated: str | None = None
    ) -> _Go | None:
        """The approval policy (and, when it asks, a human) on one call about to run.

        Returns how to run it, or None when it does not run now: denied, rejected, expired, waiting for a
        human (`state.suspended` is set), handed back, or the run ended. The policy is asked every time a
        call is about to run, on resume too; a recorded decision holds only for the request it answered,
        which is bound to the tool and a hash of the arguments (`call_hash`): other arguments need a new
        decision. `escalated`: the tool-call guardrails or the taint check sent the call to a human (why); a human
        is asked even where the policy would run it, with the policy's approvers and deadline.
        """
        args = call.arguments if isinstance(call.arguments, dict) else {}
        digest = call_hash(call.name, args)
        policy = agent.policy if agent.policy is not None else _DEFAULT_POLICY
        kind: Any = "policy"
        if call.call_id in state.in_doubt and not tool.spec.idempotent:
            if agent.on_in_doubt == "report":
                self._tool_failed(
                    state,
                    call,
                    "in_doubt",
                    "InDoubt",
                    f"the run stopped while {call.name!r} was running; it is not idempotent, so tether did not "
                    "run it again. It may or may not have taken effect: check before calling it again",
                )
                _log.warning(
                    "in-doubt call not re-run", run_id=state.run_id, tool=call.name, call_id=call.call_id
                )
                return None
            kind = "in_doubt"
            base = policy.decide(self._proposed(agent, state, call, tool, args)) if agent.policy else None
            decided = PolicyDecision(
                action="ask_async",
                reason=f"the run stopped while {call.name} was running and it is not idempotent: did it take "
                "effect? Approve to run it again (it did not happen), reject to not run it (it did)",
                approvers=base.approvers if base else _DEFAULT_POLICY.approvers,
                deadline_s=base.deadline_s if base else _DEFAULT_POLICY.deadline_s,
                on_expiry="reject",
            )
        else:
            decided = policy.decide(self._proposed(agent, state, call, tool, args))
            if escalated is not None and decided.action != "deny":
                asks = decided.action in ("ask_async", "ask_sync")
                decided = replace(
                    decided,
                    action=decided.action if asks else "ask_async",
                    reason=escalated + (f"; policy: {decided.reason}" if asks else ""),
                )
            if decided.action == "deny":
                self._tool_failed(
                    state,
                    call,
                    "denied",
                    "PolicyDenied",
                    f"{call.name} is not allowed here: {decided.reason}",
                )
                return None
            if decided.action in ("run", "flag"):
                return _Go(policy=decided.action, reason=decided.reason)
        while True:
            request = state.requests.get(call.call_id)
            decision = state.decisions.get(call.call_id)
            if decision is not None and request is not None and decision.request_id == request.request_id:
                if decision.args_hash != request.args_hash:
                    # a decision bound to other arguments than the ones requested never lets a call run
                    _log.warning(
                        "approval decision does not match its request's arguments; asking again",
                        run_id=state.run_id,
                        request_id=request.request_id,
                    )
                    request = None
            if request is not None and request.args_hash == digest and request.kind == kind:
                if decision is not None and decision.request_id == request.request_id:
                    return await self._decided(state, call, request, decision)
                now = self.clock.now()
                if now < request.deadline_at:
                    if request.mode == "async":
                        state.suspended = request
                        _log.info(
                            "run suspended for approval",
                            run_id=state.run_id,
                            request_id=request.request_id,
                            tool=call.name,
                            approvers=request.approvers,
                        )
                        return None
                    if not await self._wait_for_decision(state, request):
                        return None  # handed back while waiting
                    continue
                # recorded as expired: `_decided` applies its action next time round, or (escalate) a new
                # request to the next group went in, to wait on
                await self._expire(state, call, request)
                continue
            self._request(state, call, tool, args, digest, kind, decided)
            await self._flush(state)

    def _proposed(
        self, agent: Agent, state: _State, call: ToolCall, tool: Any, args: dict[str, Any]
    ) -> ProposedCall:
        groups = state.started.metadata.get("groups", ())
        return ProposedCall(
            agent=agent.name,
            tool=call.name,
            arguments=args,
            risk=tool.spec.risk,
            reversible=tool.spec.reversible,
            confidence=call.confidence,
            user_id=state.started.user_id,
            user_groups=tuple(g for g in groups if isinstance(g, str))
            if isinstance(groups, list | tuple)
            else (),
        )

    def _request(
        self,
        state: _State,
        call: ToolCall,
        tool: Any,
        args: dict[str, Any],
        digest: str,
        kind: Any,
        decided: PolicyDecision,
        *,
        escalated_from: str | None = None,
    ) -> ApprovalRequested:
        now = self.clock.now()
        request = ApprovalRequested(
            at=now,
            request_id=f"{state.run_id}.{state.seq + len(state.buffer)}",
            step=state.step,
            call_id=call.call_id,
            tool=call.name,
            arguments=args,
            args_hash=digest,
            kind=kind,
            mode="sync" if decided.action == "ask_sync" else "async",
            risk=tool.spec.risk,
            reversible=tool.spec.reversible,
            confidence=call.confidence,
            reason=decided.reason,
            approvers=decided.approvers,
            deadline_at=now + decided.deadline_s,
            on_expiry=decided.on_expiry,
            escalate_to=decided.escalate_to,
            escalated_from=escalated_from,
        )
        self._add(state, request)
        state.requests[call.call_id] = request
        _log.info(
            "approval requested",
            run_id=state.run_id,
            request_id=request.request_id,
            tool=call.name,
            mode=request.mode,
            approvers=request.approvers,
            reason=request.reason,
        )
        return request

    async def _decided(
        self, state: _State, call: ToolCall, request: ApprovalRequested, decision: ApprovalDecided
    ) -> _Go | None:
        """Apply a recorded decision to its call."""
        who = f"{decision.by}" + (f" ({decision.reason})" if decision.reason else "")
        if decision.decision == "approved":
            return _Go(policy="approved", reason=f"approved by {who}")
        if decision.decision == "edited":
            return _Go(
                policy="edited", reason=f"edited and approved by {who}", arguments=decision.arguments or {}
            )
        if decision.decision == "expired" and decision.on_expiry == "fail":
            await self._finish(
                state,
                "failed",
                f"approval {request.request_id} of {call.name} had no decision by its deadline; the policy fails "
                "the run",
            )
            return None
        if request.kind == "in_doubt":
            message = (
                f"{call.name} was not run again: {who} said it had already taken effect"
                if decision.decision == "rejected"
                else f"{call.name} was not run again: nobody confirmed before the deadline whether it had taken "
                "effect; check before calling it again"
            )
            self._tool_failed(state, call, "in_doubt", "InDoubt", message)
            return None
        message = (
            f"{call.name} was not run: {who} rejected it. Do not call it again with these arguments"
            if decision.decision == "rejected"
            else f"{call.name} was not run: it needed approval from {request.approvers} and nobody decided before "
            "the deadline"
        )
        self._tool_failed(state, call, "rejected", "ApprovalRejected", message)
        return None

    async def _expire(self, state: _State, call: ToolCall, request: ApprovalRequested) -> None:
        """The request's deadline passed with no decision: record it and take the configured action."""
        expired = ApprovalDecided(
            at=self.clock.now(),
            request_id=request.request_id,
            call_id=call.call_id,
            tool=call.name,
            decision="expired",
            by="tether",
            reason=f"no decision by the deadline; on_expiry={request.on_expiry}",
            args_hash=request.args_hash,
            on_expiry=request.on_expiry,
        )
        self._add(state, expired)
        state.decisions[call.call_id] = expired
        _log.warning(
            "approval expired",
            run_id=state.run_id,
            request_id=request.request_id,
            tool=call.name,
            action=request.on_expiry,
        )
        if request.on_expiry == "escalate":
            # the next group gets a fresh deadline; an escalated request is not escalated again
            tool = _ToolView(risk=request.risk, reversible=request.reversible)
            self._request(
                state,
                call,
                tool,
                request.arguments,
                request.args_hash,
                request.kind,
                PolicyDecision(
                    action="ask_sync" if request.mode == "sync" else "ask_async",
                    reason=f"{request.reason}; escalated: {request.approvers} did not decide in time",
                    approvers=request.escalate_to or request.approvers,
                    deadline_s=request.deadline_at - request.at,
                    on_expiry="reject",
                ),
                escalated_from=request.request_id,
            )
        await self._flush(state)

    async def _wait_for_decision(self, state: _State, request: ApprovalRequested) -> bool:
        """Wait (the caller waits: a synchronous approval) until the request is decided or its deadline
        passes; decisions come into the journal from other processes. False: handed back meanwhile."""
        await self._flush(state)
        while self.clock.now() < request.deadline_at:
            if state.stop is not None and state.stop():
                state.handed_back = True
                return False
            await anyio.sleep(max(0.0, min(self.approval_poll_s, request.deadline_at - self.clock.now())))
            stored = await self.store.load(state.run_id)
            for item in stored[state.seq :]:
                self._notify(state.run_id, item.event)
                if isinstance(item.event, ApprovalDecided):
                    state.decisions[item.event.call_id] = item.event
            state.seq = len(stored)
            decision = state.decisions.get(request.call_id)
            if decision is not None and decision.request_id == request.request_id:
                return True
        return True

    async def _guard(
        self,
        stack: GuardStack,
        agent: Agent,
        state: _State,
        subject: str | ToolCallCheck,
        stage: Stage,
        source: Source,
        *,
        call_id: str | None = None,
    ) -> tuple[GuardResult, str]:
        """Run the stack over one text or call, journal what it found, and apply it to the run's state.

        Returns the stack's decision and its findings in one line. A check that allowed everything writes
        nothing: the journal stays small, and a run with guardrails on and no `guard_checked` passed them.
        """
        context = GuardContext(stage=stage, source=source, agent=agent.name, run_id=state.run_id)
        # in a thread: the classifier takes milliseconds, and other runs of this process go on meanwhile
        checked = await anyio.to_thread.run_sync(stack.check, subject, context)
        if checked.action == "allow":
            return checked, ""
        found = [v.to_dict() for v in checked.verdicts if v.action != "allow"]
        from_user = stage == "input" and source == "user"
        event = GuardChecked(
            at=self.clock.now(),
            stage=stage,
            source=source,
            step=state.step,
            call_id=call_id,
            action=checked.action,
            categories=checked.categories,
            verdicts=found,
            # what the model reads instead of the user's input, whatever the strongest action (a redaction
            # under a flag is still a redaction)
            text=checked.text if from_user and checked.text != subject else None,
            sensitive=from_user and "pii" in checked.categories,
            elapsed_ms=round(checked.elapsed_s * 1000, 3),
        )
        self._add(state, event)
        state.record_guard(event)
        _log.info(
            "guardrails",
            run_id=state.run_id,
            stage=stage,
            source=source,
            action=checked.action,
            categories=checked.categories,
        )
        return checked, _findings(found)

    async def _guard_input(self, stack: GuardStack, agent: Agent, state: _State) -> bool:
        """The user's input, before the first model call; True when the run ended here (blocked).

        Personal data in it marks the whole run sensitive (redacted or not, the conversation is about a
        person). An escalation ends the run like a block: nobody is there to decide on a user's text.
        """
        checked, _ = await self._guard(stack, agent, state, state.started.input, "input", "user")
        state.input_checked = True
        if not checked.passed:
            await self._finish(
                state,
                "blocked",
                f"the input was refused by the guardrails ({', '.join(checked.categories)})",
                output=checked.refusal or stack.refusal_message,
            )
            return True
        return False

    async def _guard_result(
        self, stack: GuardStack, agent: Agent, state: _State, call: ToolCall, content: str
    ) -> str:
        """A tool's result (or error) before the model reads it (indirect injection): what it is shown."""
        checked, _ = await self._guard(
            stack, agent, state, content, "input", "tool_result", call_id=call.call_id
        )
        if not checked.passed:
            # the categories only (the findings are in guard_checked): worded so that the note itself is
            # no injection to the guards, should a replay or a later check read it again
            found = ", ".join(checked.categories)
            return (
                f"The result of {call.name} was withheld by the guardrails ({found}). Answer with what you "
                "have, or say what is missing."
            )
        return checked.text if checked.text is not None else content

    async def _guard_call(
        self, stack: GuardStack, agent: Agent, state: _State, call: ToolCall
    ) -> tuple[str, str]:
        """The tool-call guardrails (scope, argument rules) on a proposed call: their action and findings.

        A call the journal already holds a finding for (a resumed run, after an escalation) is not
        checked again: the recorded finding stands.
        """
        recorded = state.call_guards.get(call.call_id)
        if recorded is not None:
            return recorded.action, _findings(recorded.verdicts)
        assert isinstance(call.arguments, dict)
        subject = ToolCallCheck(tool_name=call.name, arguments=call.arguments, tool_call_id=call.call_id)
        checked, found = await self._guard(
            stack, agent, state, subject, "tool_call", "model", call_id=call.call_id
        )
        return checked.action, found

    @staticmethod
    def _log_content(agent: Agent, state: _State, step: int, what: str, item: Any) -> None:
        """The newest message sent, or the response, in the logs (`Agent(log_content=...)`)."""
        if isinstance(item, ModelResponse):
            text = item.text
            calls = [f"{c.name}({_canonical(c.arguments)})" for c in item.tool_calls]
        else:
            text, calls = getattr(item, "content", ""), []
        if agent.log_content == "redacted":
            text = redact_for_log(text)
            calls = [redact_for_log(c) for c in calls]
        _log.info(what, run_id=state.run_id, step=step, text=text, calls=calls, content=agent.log_content)

    def _breaker(self, tool: str) -> CircuitBreaker | None:
        if self.tool_breaker is None:
            return None
        breaker = self._breakers.get(tool)
        if breaker is None:
            breaker = self._breakers[tool] = CircuitBreaker(
                f"tool:{tool}", policy=self.tool_breaker, state=self.breaker_state
            )
        return breaker

    def _context(
        self, state: _State, limits: Any, step: int, reserve: int, *, grounding: bool = False
    ) -> list[Message]:
        """What this step's call is sent: the conversation less the corrections the model has moved past
        (`fold_corrections`), and (with `Limits.context_window_tokens`) as much of it as fits with
        `reserve` tokens to spare, oldest turns pruned first.

        Nothing about the trim needs the journal on resume: it is a pure function of the conversation,
        which the journal rebuilds exactly, so a resumed run sends what the first process would have.
        """
        # with grounding on, the text beside a call is left out: it is where small models invent results
        folded = fold_corrections(
            state.messages, state.refused, state.rejected, narration=not grounding, answered=state.answered
        )
        if limits.context_window_tokens is None:
            return folded
        messages, trim = fit_context(
            folded,
            window_tokens=limits.context_window_tokens,
            reserve_tokens=reserve,
            count_tokens=_count_tokens,
        )
        if trim is not None:
            self._add(
                state,
                ContextTrimmed(
                    at=self.clock.now(),
                    step=step,
                    dropped_messages=trim.dropped_messages,
                    dropped_turns=trim.dropped_turns,
                    dropped_call_ids=trim.dropped_call_ids,
                    summarized_values=trim.summarized_values,
                    tokens_before=trim.tokens_before,
                    tokens_after=trim.tokens_after,
                    budget_tokens=trim.budget_tokens,
                    fits=trim.fits,
                    note=trim.note,
                ),
            )
        return messages

    def _budget_keys(self, state: _State) -> BudgetKeys:
        feature = state.started.metadata.get("feature")
        return BudgetKeys(
            run_id=state.run_id,
            user_id=state.started.user_id,
            feature=feature if isinstance(feature, str) else None,
        )

    async def _governed(self, agent: Agent, state: _State) -> bool:
        """Kill switch, budgets and rate limits before a model call; True when the run ended here.

        A governance backend that cannot be reached fails the run (closed): a control that cannot be
        checked is not passed.
        """
        gov = self.governance
        assert gov is not None
        user = state.started.user_id
        try:
            if gov.kill_switch is not None:
                killed = await gov.kill_switch.check(agent.name, None, user)
                if not killed.allowed:
                    await self._finish(state, "cancelled", f"kill switch: {killed.reason}")
                    return True
            if gov.ledger is not None:
                budget = await gov.ledger.check(self._budget_keys(state))
                if not budget.allowed:
                    await self._finish(state, "budget_exceeded", budget.reason)
                    return True
            if gov.limiter is not None:
                feature = state.started.metadata.get("feature")
                keys = [rate_key("user", user)] if user else []
                keys += [rate_key("feature", feature)] if isinstance(feature, str) else []
                for key in keys:
                    # wait for the bucket to refill; the run's timeout bounds the wait
                    while not (decision := await gov.limiter.acquire(key)).allowed:
                        _log.info("rate limited", run_id=state.run_id, key=key, wait_s=decision.retry_after_s)
                        await anyio.sleep(decision.retry_after_s)
        except GovernanceUnavailable as exc:
            await self._finish(state, "failed", f"governance unavailable, so the step was not taken: {exc}")
            return True
        return False

    async def _charge(self, agent: Agent, state: _State, response: ModelResponse) -> float:
        """Charge the call to the run's budgets; returns its cost in USD (0 without a price table)."""
        if self.governance is None:
            return 0.0
        model = response.model or agent.model_name
        try:
            spend = await self.governance.charge(self._budget_keys(state), model, response.usage)
        except GovernanceUnavailable as exc:
            # the call is already paid for; its cost is recorded in the journal, and the next step's
            # check will find the backend down and stop the run
            _log.error("budget charge failed", run_id=state.run_id, error=str(exc))
            return self.governance.spend(model, response.usage).usd
        return spend.usd

    @staticmethod
    def _settings_for(state: _State, settings: ModelSettings, has_tools: bool) -> ModelSettings:
        if state.sensitive and not settings.sensitive:
            settings = replace(settings, sensitive=True)
        if state.force_answer:
            return replace(settings, tool_choice="none")
        if state.force_tools:
            # a precondition refused the call: the constrained decoder makes the next call the lookup
            return replace(settings, tool_choice="required", allowed_tools=state.force_tools)
        if state.force_tool and has_tools:
            # it answered with numbers it never looked up: constrained decoding makes it call a tool
            return replace(settings, tool_choice="required")
        return settings

    async def _reject_answer(
        self,
        state: _State,
        step: int,
        response: ModelResponse,
        retries: int,
        *,
        check_values: bool,
        tools: Mapping[str, Any] | None = None,
    ) -> bool:
        """Send an unusable or ungrounded final answer back to the model; True when it was sent back.

        Ends the run `failed` (and returns True) once the retries are used up: an answer that is not
        grounded is never returned as if it were true. A truncated, empty or transcript-like answer is
        never an answer, whatever `check_values` says; numbers are checked only with grounding on.
        """
        tools = tools or {}
        text = response.text
        reason = unusable_answer(text)
        if reason is None and response.finish_reason == "length":
            reason = _CUT_OFF
        values: list[str] = []
        if reason is None and check_values:
            numbers = answer_numbers(text, state.evidence)
            values, state.derived = list(numbers.ungrounded), numbers.derived
            if values:
                reason = f"the answer states {', '.join(values)}, which appear in no tool result and not in the request"
        mislabelled = None
        if reason is None and check_values:
            results = [(tool, text) for tool, texts in state.texts_by.items() for text in texts]
            mislabelled = mislabelled_amount(text, results)
            if mislabelled is not None:
                reason = f"{_MISLABELLED} ({mislabelled.describe()})"
        if reason is None:
            # a recipe for calling the tools, checked last: invented values in it are the more specific
            # fault, and their message ("use the tools to get the real values") is what made the demo's
            # model look the order up and compute; the recipe message alone sent it round in circles
            reason = unusable_answer(text, tuple(tools))
        # the rules below judge an answer's quality, not its truth (`soft`): each sends an answer back
        # once per run, outside the retries
        soft = False
        if (
            reason is None
            and check_values
            and not state.call_counts
            and any(_reads(t) for t in tools.values())
        ):
            # an answer about a record no tool was even asked about ("summarise notes/q3.txt" answered
            # without reading it) can only be made up; a call that was refused or blocked counts as asked
            named = named_record(state.started.input)
            if named is not None:
                reason = (
                    f"no tool was called, so nothing in the answer comes from a tool result about {named}"
                )
            else:
                # or a read the instructions or the request name ("Call get_weather, then answer")
                # (the tool guide's "call a calculator tool" is tether's text, not the agent's)
                told = f"{state.started.instructions.replace(TOOL_GUIDE, '')}\n{state.started.input}"
                asked = [t.name for t in tools.values() if _reads(t) and names_tool(t.name, told)]
                if asked:
                    reason = f"no tool was called, though the instructions name {asked[0]}"
        reference = None
        if reason is None and check_values:
            reference = _unresolved_reference(state, tools, text)
            if reference is not None:
                reason, soft = f"{_REFERENCE} ({reference[0]})", True
        not_written = None
        if reason is None and check_values and _NOT_WRITTEN not in state.reasons:
            not_written = _new_value_not_written(state, text)
            if not_written is not None:
                reason, soft = f"{_NOT_WRITTEN} ({not_written[0]})", True
        if (
            reason is None
            and check_values
            and state.last_missing
            and _UNSAID not in state.reasons
            and not says_missing(text)
        ):
            # "please try again with a valid order number": the one thing to tell the user, left out
            reason, soft = _UNSAID, True
        left = None
        if (
            reason is None
            and check_values
            and _LEFT_OUT not in state.reasons
            and not state.last_missing
            and not says_missing(text)
        ):
            # "James Chen" for "which email address...": grounded, and not what was asked
            used = [arguments for _, arguments in state.call_counts]
            left = left_out(state.started.input, _parsed_results(state), text, used=used)
            if left is not None:
                reason, soft = f"{_LEFT_OUT} ({left.field})", True
        if reason is None and tools and HOW_TO not in state.reasons and describes_steps(text):
            reason, soft = HOW_TO, True  # the steps told to the user without naming a tool: once per run
        if (
            reason is None
            and check_values
            and _NO_NUMBER not in state.reasons
            and _QUANTITY.search(state.started.input)
            and not _STATES_QUANTITY.search(text)
            and not state.last_missing
            and not says_missing(text)
        ):
            reason, soft = _NO_NUMBER, True
        if reason is None:
            return False
        if state.answers_rejected >= retries and not soft:
            if state.standing is not None:
                # an earlier answer was sent back only to be better; this one is worse: that one stands
                state.derived, state.standing_over = (), reason
                return False
            await self._finish(state, "failed", f"no grounded answer after {retries + 1} tries: {reason}")
            return True
        if reference is not None:
            value, field_name, tool_name, param = reference
            then, needs = "tool", (tool_name,)
            message = (
                f"Your answer was not shown to the user: the tool results point at {value} (their "
                f"{field_name}), which no tool has looked up yet. Call {tool_name} with {param}={value!r} to "
                f"look it up, then answer the user's {_request(state, tools)} from what it returns."
            )
        elif left is not None:
            lookup = _looks_up(state, tools, left.field, left.value)
            said = f"{left.tool} gives {left.field} {left.value!r}"
            if lookup is not None and not _asked_about(state, left.value):
                # the field is a pointer (the manager's id): what the user wants is the record it points at
                then, needs = "tool", (lookup[0],)
                how = f"call {lookup[0]} with {lookup[1]}={left.value!r}, then answer from what it returns"
            else:
                then, needs, how = "answer", (), "answer with it, in plain sentences"
            message = (
                f"Your answer was not shown to the user: the user's {_request(state, tools)} asks for the "
                f"{left.field.replace('_', ' ')}, and the answer does not give it; {said}. Then {how}."
            )
        elif reason == _UNSAID:
            then, needs, message = (
                "answer",
                (),
                _missing_told(f"Your answer was not shown to the user: {reason}.", state),
            )
        elif mislabelled is not None:
            # the tools that take a currency are how an amount changes currency (convert_currency)
            converters = tuple(
                t.name for t in tools.values() if _reads(t) and any("currency" in p for p in _params(t))
            )
            then, needs = ("tool", converters) if converters else ("either", ())
            how = f"convert it with {' or '.join(converters[:2])}" if converters else "convert it"
            message = (
                f"Your answer was not shown to the user: {mislabelled.describe()}. An amount keeps its "
                f"currency: {how} if the user wants it in {mislabelled.said}, or give it in "
                f"{mislabelled.source}."
            )
        elif not_written is not None:
            tool_name, current, value = not_written
            calculation = _calculation(state, tools, value)
            if calculation is not None:
                # the value it stated, computed where the run can see it: the write may then take it
                then, needs = "tool", (calculation[0],)
                how = f"call {calculation[0]} with {calculation[1]!r}, then call {tool_name} with its result"
            else:
                then, needs = "tool", ()
                how = f"work it out with a tool, then call {tool_name} with it"
            message = (
                f"Your answer was not shown to the user: {tool_name} has not run, so nothing was changed "
                f"({current}). If the user asked for the new value {_fmt_number(value)}, {how}; if it "
                "cannot be done, say that nothing was changed."
            )
        elif reason == _NO_NUMBER:
            then, needs = "either", ()
            message = (
                f"Your answer was not shown to the user: it states no number, and the user's "
                f"{_request(state, tools)} asks for one. Answer with the number from the tool results (if it "
                "must be worked out, use a tool first), in plain sentences."
            )
        else:
            then, needs, message = _after_rejection(state, tools, reason, values, text)
        self._add(
            state,
            AnswerRejected(
                at=self.clock.now(),
                step=step,
                reason=reason,
                values=tuple(values),
                message=message,
                then=then,
                needs=needs,
                soft=soft,
            ),
        )
        state.record_rejection(message, reason=reason, then=then, needs=needs, soft=soft)
        _log.info("answer rejected", run_id=state.run_id, reason=reason)
        return True

    # -- journal helpers ------------------------------------------------------------------------------

    def _tool_failed(
        self,
        state: _State,
        call: ToolCall,
        kind: Any,
        error_type: str,
        message: str,
        duration_s: float = 0.0,
        *,
        needs: tuple[str, ...] = (),
    ) -> None:
        self._add(
            state,
            ToolFailed(
                at=self.clock.now(),
                step=state.step,
                call_id=call.call_id,
                tool=call.name,
                kind=kind,
                error_type=error_type,
                message=message,
                arguments=call.arguments,
                duration_s=duration_s,
                needs=needs,
            ),
        )
        state.record_outcome(
            call.call_id,
            call.name,
            f"Error: {message}",
            is_error=True,
            kind=kind,
            arguments=call.arguments,
            error_type=error_type,
        )
        _log.info("tool call failed", run_id=state.run_id, tool=call.name, kind=kind, error=message)

    async def _model_failed(
        self, agent: Agent, state: _State, step: int, exc: ModelError | ConfigError
    ) -> None:
        self._add(
            state,
            ModelFailed(
                at=self.clock.now(),
                step=step,
                model=agent.model_name,
                error_type=type(exc).__name__,
                message=str(exc),
                retryable=exc.retryable,
                attempts=tuple(getattr(exc, "attempts", ())),
            ),
        )
        status: TerminalStatus = "timed_out" if isinstance(exc, ModelTimeout) else "failed"
        await self._finish(state, status, f"model call failed: {exc}")

    def _add(self, state: _State, event: Event) -> None:
        state.buffer.append(event)
        self._notify(state.run_id, event)

    async def _flush(self, state: _State) -> None:
        if state.buffer:
            state.seq = await self.store.append(
                state.run_id, state.buffer, expected_seq=state.seq, lease=state.lease
            )
            state.buffer.clear()

    async def _finish(
        self, state: _State, status: TerminalStatus, reason: str, *, output: str | None = None
    ) -> None:
        finished = RunFinished(
            at=self.clock.now(),
            status=status,
            reason=reason,
            output=output,
            steps=state.step,
            usage=state.usage,
        )
        self._add(state, finished)
        state.finished = finished
        await self._flush(state)
        log = _log.info if status == "completed" else _log.warning
        log(
            "run finished",
            run_id=state.run_id,
            status=status,
            reason=reason,
            steps=state.step,
            tokens=state.usage.total_tokens,
        )

    def _notify(self, run_id: str, event: Event) -> None:
        if self.observer is not None:
            self.observer.event(run_id, event)

    def _result(self, agent: Agent, state: _State, duration_s: float) -> RunResult:
        finished = state.finished
        if finished is None and state.suspended is not None:
            request = state.suspended
            return RunResult(
                run_id=state.run_id,
                agent=agent.name,
                status="suspended",
                reason=f"waiting for {request.approvers} to decide approval {request.request_id} of "
                f"{request.tool} ({request.reason}); `tether approvals show {request.request_id}`",
                output=None,
                steps=state.step,
                usage=state.usage,
                duration_s=duration_s,
                store=repr(self.store),
                waiting_for=request.request_id,
                wake_at=request.deadline_at,
            )
        if finished is None:  # handed back by `stop`
            return RunResult(
                run_id=state.run_id,
                agent=agent.name,
                status="running",
                reason=f"handed back unfinished after step {state.step}; the next worker carries it on",
                output=None,
                steps=state.step,
                usage=state.usage,
                duration_s=duration_s,
                store=repr(self.store),
            )
        return RunResult(
            run_id=state.run_id,
            agent=agent.name,
            status=finished.status,
            reason=finished.reason,
            output=finished.output,
            steps=finished.steps,
            usage=finished.usage,
            duration_s=duration_s,
            store=repr(self.store),
        )
