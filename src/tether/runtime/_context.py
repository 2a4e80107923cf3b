"""Context management: fit a conversation into a model's window by pruning its oldest turns.

A run's conversation grows with every step; a long one ends in a context-length error in mid-run.
`fit_context` is called on the whole conversation before each model call and returns what to send:
when it fits, the conversation itself; otherwise the oldest turns are dropped until it does.

What is never dropped:
- the system messages and the first user message (the task; also the prefix a local model's KV cache
  holds, so pruning after it keeps that cache valid);
- the most recent turns (`keep_recent`), which the next answer depends on;
- half of a tool call: an assistant message with tool calls and the results of those calls are one
  turn, kept or dropped together, so no provider ever sees a result without its call or a call
  without its result (the Messages API rejects both).

In place of the dropped turns comes one user message saying how many messages were removed and which
tool calls they held, followed, as far as the budget allows, by the values their results held
(`lookup_order: order_id=1042, unit_price=37.9`), copied verbatim, newest results first. The model
still sees the facts it looked up and need not call the tool again or guess; and because the values
are copied rather than paraphrased, a number the model takes from the note matches the tool result it
came from, which the run's grounding checks (built from the journal, not from this list) still hold.

The function is pure: the run's own history is never changed, so a later step with a larger window
(a fallback model) sees everything again, and the same history always gives the same result.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..exceptions import ConfigError
from ..models import AssistantMessage, Message, SystemMessage, ToolResultMessage, UserMessage

__all__ = [
    "NOTE_PREFIX",
    "ContextTrim",
    "TokenCounter",
    "estimate_tokens",
    "fit_context",
    "fold_corrections",
]

TokenCounter = Callable[[Message], int]
"""How many tokens one message takes in the prompt."""

_CHARS_PER_TOKEN = 4
# what a chat template adds around each message (role markers, separators)
_MESSAGE_OVERHEAD = 4
# bounds on the note's summary, so that it stays a note
_FACTS_PER_RESULT = 12
_VALUE_CHARS = 80
_TEXT_RESULT_CHARS = 160
NOTE_PREFIX = "[context note]"
"""How the note that replaces pruned turns begins."""


def estimate_tokens(message: Message) -> int:
    """A token count for `message` good enough to budget with: one token per 4 characters, plus a little
    for the chat template. Pass a model's real tokenizer as `count_tokens` where one is at hand."""
    chars = len(message.content)
    if isinstance(message, AssistantMessage):
        for call in message.tool_calls:
            arguments = call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)
            chars += len(call.name) + len(arguments) + len(call.call_id)
    return _MESSAGE_OVERHEAD + -(-chars // _CHARS_PER_TOKEN)


@dataclass(frozen=True, kw_only=True)
class ContextTrim:
    """What `fit_context` dropped, for the journal.

    Attributes:
        dropped_messages: messages removed.
        dropped_turns: turns removed (an assistant message with its tool results is one turn).
        dropped_call_ids: the ids of the tool calls removed with their results.
        summarized_values: values from the removed results carried into the note.
        tokens_before: the conversation's tokens as given.
        tokens_after: the tokens of what is returned, the note included.
        budget_tokens: what the conversation had to fit in (`window_tokens - reserve_tokens`).
        fits: False when even dropping every turn it may drop leaves the conversation over budget.
        note: the text of the note that replaced the removed turns ("" when none was inserted).
    """

    dropped_messages: int
    dropped_turns: int
    dropped_call_ids: tuple[str, ...]
    summarized_values: int
    tokens_before: int
    tokens_after: int
    budget_tokens: int
    fits: bool
    note: str


def fit_context(
    messages: Sequence[Message],
    *,
    window_tokens: int,
    reserve_tokens: int = 0,
    count_tokens: TokenCounter = estimate_tokens,
    keep_recent: int = 2,
    summarize: bool = True,
    max_summary_values: int = 24,
) -> tuple[list[Message], ContextTrim | None]:
    """The conversation to send, pruned of its oldest turns if it does not fit the window.

    Args:
        messages: the whole conversation, oldest first.
        window_tokens: the model's context window.
        reserve_tokens: tokens kept free for the answer (at least the call's `max_tokens`).
        count_tokens: tokens per message; `estimate_tokens` by default.
        keep_recent: the most recent turns kept whatever their size.
        summarize: carry the values of dropped tool results into the note.
        max_summary_values: at most this many values in the note.

    Returns:
        The messages to send (in their original order, with the note where the dropped turns were), and
        what was dropped (None when the conversation fit as it was).

    Raises:
        ConfigError: the window, the reserve or a bound makes no sense.
    """
    if window_tokens <= 0 or reserve_tokens < 0 or keep_recent < 0 or max_summary_values < 0:
        raise ConfigError(
            "fit_context needs window_tokens > 0 and reserve_tokens, keep_recent, max_summary_values >= 0; "
            f"got {window_tokens}, {reserve_tokens}, {keep_recent}, {max_summary_values}"
        )
    budget = window_tokens - reserve_tokens
    if budget <= 0:
        raise ConfigError(
            f"reserve_tokens={reserve_tokens} leaves nothing of window_tokens={window_tokens} for the "
            "conversation; reserve less (max_tokens) or use a model with a larger window"
        )
    counts = [count_tokens(m) for m in messages]
    total = sum(counts)
    if total <= budget:
        return list(messages), None
    head_end, turns = _turns(messages)
    droppable = turns[: max(0, len(turns) - keep_recent)]
    if not droppable:
        return list(messages), ContextTrim(
            dropped_messages=0,
            dropped_turns=0,
            dropped_call_ids=(),
            summarized_values=0,
            tokens_before=total,
            tokens_after=total,
            budget_tokens=budget,
            fits=False,
            note="",
        )
    removed: list[int] = []
    kept_tokens = total
    turn_count = 0
    for turn in droppable:
        removed += turn
        kept_tokens -= sum(counts[i] for i in turn)
        turn_count += 1
        if kept_tokens + count_tokens(UserMessage(content=_note(messages, removed, facts=[]))) <= budget:
            break
    note = _note(messages, removed, facts=[])
    fits = kept_tokens + count_tokens(UserMessage(content=note)) <= budget
    facts_used = 0
    if summarize and fits and max_summary_values:
        note, facts_used = _with_facts(
            messages, removed, kept_tokens, budget, count_tokens, max_summary_values, fallback=note
        )
    note_message = UserMessage(content=note)
    gone = set(removed)
    result: list[Message] = [*messages[: head_end + 1], note_message]
    result += [m for i, m in enumerate(messages) if i > head_end and i not in gone]
    return result, ContextTrim(
        dropped_messages=len(removed),
        dropped_turns=turn_count,
        dropped_call_ids=tuple(
            call.call_id
            for i in sorted(removed)
            if isinstance(m := messages[i], AssistantMessage)
            for call in m.tool_calls
        ),
        summarized_values=facts_used,
        tokens_before=total,
        tokens_after=kept_tokens + count_tokens(note_message),
        budget_tokens=budget,
        fits=fits,
        note=note,
    )


def _turns(messages: Sequence[Message]) -> tuple[int, list[list[int]]]:
    """The index where the protected head ends (the first user message), and the droppable turns after
    it, oldest first, each a list of message indices: an assistant message with tool calls together with
    every result of those calls; any other message alone. System messages belong to no turn."""
    head_end = next((i for i, m in enumerate(messages) if isinstance(m, UserMessage)), -1)
    if head_end < 0:
        head_end = (
            next((i for i, m in enumerate(messages) if not isinstance(m, SystemMessage)), len(messages)) - 1
        )
    owner: dict[str, int | None] = {}
    for m in messages[: head_end + 1]:
        if isinstance(m, AssistantMessage):
            for call in m.tool_calls:
                owner[call.call_id] = None  # a call in the head: its results are kept with it
    turns: list[list[int]] = []
    for i in range(head_end + 1, len(messages)):
        m = messages[i]
        if isinstance(m, SystemMessage):
            continue
        if isinstance(m, ToolResultMessage) and m.call_id in owner:
            turn = owner[m.call_id]
            if turn is not None:
                turns[turn].append(i)
            continue
        turns.append([i])
        if isinstance(m, AssistantMessage):
            for call in m.tool_calls:
                owner[call.call_id] = len(turns) - 1
    return head_end, turns


def _note(messages: Sequence[Message], dropped: Sequence[int], *, facts: Sequence[tuple[int, str]]) -> str:
    calls: dict[str, int] = {}
    for i in sorted(dropped):
        m = messages[i]
        if isinstance(m, AssistantMessage):
            for call in m.tool_calls:
                calls[call.name] = calls.get(call.name, 0) + 1
    count = len(dropped)
    text = (
        f"{NOTE_PREFIX} {count} earlier message{'s' if count != 1 else ''} of this conversation "
        f"{'were' if count != 1 else 'was'} removed to fit the model's context window"
    )
    if calls:
        text += (
            " (tool calls: " + ", ".join(f"{name} x{n}" if n > 1 else name for name, n in calls.items()) + ")"
        )
    text += "."
    if facts:
        by_result: dict[int, list[str]] = {}
        for i, fact in facts:
            by_result.setdefault(i, []).append(fact)
        parts = []
        for i in sorted(by_result):
            m = messages[i]
            assert isinstance(m, ToolResultMessage)
            parts.append(f"{m.name}: {', '.join(by_result[i])}")
        text += " Values their results held: " + "; ".join(parts) + "."
    return text


def _with_facts(
    messages: Sequence[Message],
    removed: Sequence[int],
    kept_tokens: int,
    budget: int,
    count_tokens: TokenCounter,
    limit: int,
    *,
    fallback: str,
) -> tuple[str, int]:
    """The note with as many values of the removed tool results as the budget holds, newest first."""
    candidates = [
        (i, fact)
        for i in sorted(removed, reverse=True)
        if isinstance(m := messages[i], ToolResultMessage) and not m.is_error
        for fact in _facts(m.content)
    ]
    taken: list[tuple[int, str]] = []
    note = fallback
    for candidate in candidates[:limit]:
        trial = _note(messages, removed, facts=[*taken, candidate])
        if kept_tokens + count_tokens(UserMessage(content=trial)) > budget:
            break
        taken.append(candidate)
        note = trial
    return note, len(taken)


def _facts(content: str) -> list[str]:
    """The values a tool result holds, as `path=value`, copied verbatim; prose is kept as its start."""
    try:
        data = json.loads(content)
    except ValueError:
        text = " ".join(content.split())
        if not text:
            return []
        return [text if len(text) <= _TEXT_RESULT_CHARS else text[: _TEXT_RESULT_CHARS - 1] + "…"]
    if isinstance(data, dict | list):
        # islice: a result holding thousands of rows is not walked beyond what the note can use
        return [f"{path}={value}" for path, value in itertools.islice(_leaves(data, ""), _FACTS_PER_RESULT)]
    return [_scalar(data)]


def _leaves(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{path}[{index}]")
    else:
        yield path or "value", _scalar(value)


def _scalar(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    text = " ".join(text.split())
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 1] + "…"


def fold_corrections(
    messages: Sequence[Message],
    refused: frozenset[str] | set[str],
    rejected: frozenset[int] | set[int],
    *,
    narration: bool = True,
    answered: frozenset[str] | set[str] = frozenset(),
) -> list[Message]:
    """The conversation without the corrections the model has moved past.

    A call the runtime refused before it ran (an invented argument, a missing precondition, a repeat,
    arguments that do not parse) and an answer it sent back stay in front of the model only until the
    model's next turn. After that they are left out of what it is sent: a small model copies from its
    context, and a refused `refund(amount=12.0)` or a rejected "$12.00" left in view is copied into
    every later call and answer. What the model acts on afterwards is what tools returned.

    With `narration` off, the text a model wrote beside its tool calls is left out too, in every turn:
    small models narrate the results they expect ("The response from find_product is: {"sku":
    "CER001"}") and then take those invented values, rather than the real results that follow, for
    what the tools said.

    Args:
        messages: the whole conversation, as the run keeps it (never changed here).
        refused: the call ids of calls refused before they ran.
        rejected: the indices in `messages` of rejected answers and of the messages that rejected them.
        narration: keep the text beside tool calls.
        answered: the call ids of repeats the runtime answered instead of running (a call the model
            already has the result of). They leave the view at once, and what the runtime said to them
            comes after the turn's results as a user message: shown the same result again, the 1.5B
            model calls the tool once more; told in a user turn to answer from the result above, it
            answers.

    A rejected answer itself is left out at once, even in the next turn: its rejection says what was
    wrong, and a small model shown its own answer again writes it again, word for word.

    Returns:
        `messages` with those calls (and their results) and answers left out, except in the latest
        assistant turn and what followed it. The same inputs always give the same result.
    """
    last = max((i for i, m in enumerate(messages) if isinstance(m, AssistantMessage)), default=-1)
    out: list[Message] = []
    said: list[str] = []  # to the answered repeats of the current turn, sent once its results are in
    for i, message in enumerate(messages):
        if not narration and isinstance(message, AssistantMessage) and message.tool_calls and message.content:
            message = AssistantMessage(content="", tool_calls=message.tool_calls)
        if said and not isinstance(message, ToolResultMessage):
            out.extend(UserMessage(content=text) for text in dict.fromkeys(said))
            said.clear()
        if isinstance(message, ToolResultMessage) and message.call_id in answered:
            if i > last:  # in an older turn it is a correction the model has moved past, like the others
                said.append(message.content.removeprefix("Error: "))
            continue
        if (
            isinstance(message, AssistantMessage)
            and answered
            and any(c.call_id in answered for c in message.tool_calls)
        ):
            calls = tuple(c for c in message.tool_calls if c.call_id not in answered)
            if not calls and not message.content:
                continue
            message = AssistantMessage(content=message.content, tool_calls=calls)
        if i in rejected and isinstance(message, AssistantMessage):
            continue  # a rejected answer is never shown back, not even next turn: it would be copied
        if i >= last:
            out.append(message)
        elif i in rejected:
            continue
        elif isinstance(message, AssistantMessage) and message.tool_calls:
            kept = [c for c in message.tool_calls if c.call_id not in refused]
            if len(kept) == len(message.tool_calls):
                out.append(message)
            elif kept or message.content:
                out.append(AssistantMessage(content=message.content, tool_calls=tuple(kept)))
        elif isinstance(message, ToolResultMessage) and message.call_id in refused:
            continue
        else:
            out.append(message)
    out.extend(UserMessage(content=text) for text in dict.fromkeys(said))
    return out
