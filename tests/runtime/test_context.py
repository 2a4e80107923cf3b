"""Context management: old turns are pruned to fit the window, tool-call pairs are never split."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.exceptions import ConfigError
from tether.models import (
    AssistantMessage,
    Message,
    ModelSettings,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolResultMessage,
    UserMessage,
)
from tether.models.anthropic import AnthropicModel
from tether.runtime._context import NOTE_PREFIX, estimate_tokens, fit_context
from tether.testing import AnthropicServer

SYSTEM = SystemMessage(content="You are the order assistant.")
TASK = UserMessage(content="Refund the kettles of order 1042.")


def by_chars(message: Message) -> int:
    """One token per character of content (and call arguments): easy to reason about in tests."""
    size = len(message.content)
    if isinstance(message, AssistantMessage):
        size += sum(len(json.dumps(c.arguments)) for c in message.tool_calls)
    return size + 1


def call_turn(call_id: str, name: str, arguments: dict, result: str) -> list[Message]:
    return [
        AssistantMessage(tool_calls=(ToolCall(call_id=call_id, name=name, arguments=arguments),)),
        ToolResultMessage(call_id=call_id, name=name, content=result),
    ]


def conversation() -> list[Message]:
    return [
        SYSTEM,
        TASK,
        *call_turn(
            "c1",
            "lookup_order",
            {"order_id": "1042"},
            json.dumps({"order_id": "1042", "item": "kettle", "unit_price": 37.9, "quantity": 3}),
        ),
        AssistantMessage(content="The order has 3 kettles at 37.90 each. " * 4),
        UserMessage(content="Yes, refund all of them please, to the original card. " * 3),
        *call_turn(
            "c2", "compute_refund", {"unit_price": 37.9, "quantity": 3}, json.dumps({"amount": 113.7})
        ),
        *call_turn(
            "c3", "issue_refund", {"order_id": "1042", "amount": 113.7}, json.dumps({"refund_id": "R-77"})
        ),
    ]


def test_a_conversation_that_fits_is_returned_as_is() -> None:
    messages = conversation()
    kept, trim = fit_context(messages, window_tokens=10_000, count_tokens=by_chars)
    assert kept == messages and trim is None


def test_old_turns_are_pruned_and_the_note_carries_their_values() -> None:
    messages = conversation()
    total = sum(by_chars(m) for m in messages)

    kept, trim = fit_context(messages, window_tokens=total - 150, reserve_tokens=0, count_tokens=by_chars)

    assert trim is not None and trim.fits
    assert kept[:2] == [SYSTEM, TASK]
    note = kept[2]
    assert isinstance(note, UserMessage) and note.content.startswith(NOTE_PREFIX)
    # the oldest turn went: the lookup with its result; the refund calls are the most recent turns
    assert trim.dropped_call_ids == ("c1",)
    assert "lookup_order" in note.content
    assert (
        "order_id=1042" in note.content and "unit_price=37.9" in note.content and "quantity=3" in note.content
    )
    assert kept[-4:] == messages[-4:]
    assert trim.tokens_after == sum(by_chars(m) for m in kept) <= trim.budget_tokens
    assert trim.tokens_before == total


def test_the_summary_gives_way_before_any_more_turns_do() -> None:
    messages = conversation()
    total = sum(by_chars(m) for m in messages)
    with_values, full = fit_context(messages, window_tokens=total - 150, count_tokens=by_chars)
    without, bare = fit_context(messages, window_tokens=total - 150, count_tokens=by_chars, summarize=False)
    assert full is not None and bare is not None
    assert full.dropped_messages == bare.dropped_messages
    assert full.summarized_values > 0 and bare.summarized_values == 0
    assert len(with_values) == len(without)


def test_the_summary_is_bounded_and_skips_errors() -> None:
    rows = json.dumps([{"sku": f"SKU-{n}"} for n in range(5000)])
    messages = [
        TASK,
        AssistantMessage(
            tool_calls=(ToolCall(call_id="c1", name="lookup_order", arguments={"order_id": "9"}),)
        ),
        ToolResultMessage(call_id="c1", name="lookup_order", content="KeyError: no order 9", is_error=True),
        *call_turn("c2", "list_items", {}, rows),
        UserMessage(content="Never mind, which kettles?"),
        AssistantMessage(content="Kettles: SKU-1."),
    ]
    kept, trim = fit_context(messages, window_tokens=400, count_tokens=by_chars, max_summary_values=40)
    assert trim is not None and trim.fits and trim.dropped_call_ids == ("c1", "c2")
    note = kept[1].content
    assert "[0].sku=SKU-0" in note and "SKU-4999" not in note
    assert 0 < trim.summarized_values <= 12
    assert "no order 9" not in note


def test_when_nothing_may_be_dropped_the_trim_says_it_does_not_fit() -> None:
    messages = [SYSTEM, TASK, *call_turn("c1", "lookup_order", {"order_id": "1042"}, "x" * 500)]
    kept, trim = fit_context(messages, window_tokens=100, count_tokens=by_chars, keep_recent=1)
    assert kept == messages
    assert trim is not None and not trim.fits and trim.dropped_messages == 0 and trim.note == ""


def test_a_reserve_that_leaves_nothing_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="reserve_tokens=512 leaves nothing"):
        fit_context([TASK], window_tokens=512, reserve_tokens=512)
    with pytest.raises(ConfigError):
        fit_context([TASK], window_tokens=0)


def test_the_default_estimate_counts_tool_call_arguments() -> None:
    bare = estimate_tokens(AssistantMessage(content=""))
    with_call = estimate_tokens(
        AssistantMessage(tool_calls=(ToolCall(call_id="c", name="f", arguments={"text": "x" * 400}),))
    )
    assert with_call >= bare + 100


@pytest.mark.anyio
async def test_a_pruned_conversation_is_accepted_by_the_messages_api() -> None:
    """The pruned list still pairs every tool_use with its tool_result, so a strict server takes it."""
    messages = conversation()
    total = sum(by_chars(m) for m in messages)
    kept, trim = fit_context(messages, window_tokens=total - 150, count_tokens=by_chars)
    assert trim is not None
    with AnthropicServer(api_key="k") as server:
        server.reply_text("Refunded 113.70 (R-77).")
        model = AnthropicModel("claude-test", base_url=server.base_url, api_key="k")
        tools = [
            ToolDefinition(name=n, parameters={"type": "object", "properties": {}})
            for n in ("lookup_order", "compute_refund", "issue_refund")
        ]
        try:
            response = await model.request(kept, tools=tools, settings=ModelSettings(max_tokens=64))
        finally:
            await model.aclose()
    assert server.requests[0].rejected is None
    assert response.text == "Refunded 113.70 (R-77)."


# -- properties ------------------------------------------------------------------------------------

_words = st.text(alphabet="abcdefghij 0123456789", min_size=0, max_size=120)
_result_values = st.dictionaries(
    st.sampled_from(["order_id", "amount", "sku", "status"]),
    st.one_of(st.integers(0, 99_999), st.text(alphabet="ABC-0123456789", min_size=1, max_size=10)),
    max_size=4,
)


@st.composite
def turns(draw: st.DrawFn) -> list[list[Message]]:
    """A run's turns after the task: calls with their results, answers, user follow-ups."""
    found: list[list[Message]] = []
    ids = iter(range(10_000))
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["calls", "answer", "user"]))
        if kind == "calls":
            calls = tuple(
                ToolCall(
                    call_id=f"call_{next(ids)}",
                    name=draw(st.sampled_from(["lookup", "refund"])),
                    arguments={"q": draw(_words)},
                )
                for _ in range(draw(st.integers(1, 3)))
            )
            turn: list[Message] = [AssistantMessage(content=draw(_words), tool_calls=calls)]
            for c in calls:
                content = json.dumps(draw(_result_values)) if draw(st.booleans()) else draw(_words)
                turn.append(
                    ToolResultMessage(
                        call_id=c.call_id, name=c.name, content=content, is_error=draw(st.booleans())
                    )
                )
            found.append(turn)
        elif kind == "answer":
            found.append([AssistantMessage(content=draw(_words))])
        else:
            found.append([UserMessage(content=draw(_words))])
    return found


def flatten(groups: Sequence[Sequence[Message]]) -> list[Message]:
    return [m for g in groups for m in g]


def without_note(kept: Sequence[Message]) -> list[Message]:
    return [m for m in kept if not (isinstance(m, UserMessage) and m.content.startswith(NOTE_PREFIX))]


@settings(max_examples=300, deadline=None)
@given(
    with_system=st.booleans(),
    body=turns(),
    window=st.integers(20, 1500),
    reserve=st.integers(0, 19),
    keep_recent=st.integers(0, 3),
    summarize=st.booleans(),
)
def test_properties(
    with_system: bool, body: list[list[Message]], window: int, reserve: int, keep_recent: int, summarize: bool
) -> None:
    head: list[Message] = [SYSTEM, TASK] if with_system else [TASK]
    messages = head + flatten(body)
    kept, trim = fit_context(
        messages,
        window_tokens=window,
        reserve_tokens=reserve,
        count_tokens=by_chars,
        keep_recent=keep_recent,
        summarize=summarize,
    )
    budget = window - reserve
    total = sum(by_chars(m) for m in messages)

    if total <= budget:
        assert kept == messages and trim is None
        return
    assert trim is not None

    # the system message and the task are always kept, first
    assert kept[: len(head)] == head
    # order is preserved: what is kept (note aside) is the original list with some messages left out
    rest = without_note(kept)
    positions = [next(i for i, m in enumerate(messages) if m is k) for k in rest]
    assert positions == sorted(positions)
    assert len(rest) == len(messages) - trim.dropped_messages
    # at most one note, right after the task
    originals = {id(m) for m in messages}
    notes = [m for m in kept if id(m) not in originals]
    assert len(notes) == (1 if trim.dropped_messages else 0)
    if notes:
        assert kept[len(head)] is notes[0]

    # a tool call and its results are kept or dropped together; no result without its call
    kept_ids = {id(m) for m in kept}
    for group in body:
        present = [id(m) in kept_ids for m in group]
        if isinstance(group[0], AssistantMessage) and group[0].tool_calls:
            assert all(present) or not any(present)
    calls_seen: set[str] = set()
    for m in kept:
        if isinstance(m, AssistantMessage):
            calls_seen |= {c.call_id for c in m.tool_calls}
        if isinstance(m, ToolResultMessage):
            assert m.call_id in calls_seen
    assert set(trim.dropped_call_ids) == {
        c.call_id
        for g in body
        for m in g
        if isinstance(m, AssistantMessage) and id(m) not in kept_ids
        for c in m.tool_calls
    }

    # the most recent turns are kept whole
    for group in body[len(body) - keep_recent :] if keep_recent else []:
        assert all(id(m) in kept_ids for m in group)

    # the oldest turns go first: every dropped turn is older than every kept one
    dropped_turns = [i for i, g in enumerate(body) if id(g[0]) not in kept_ids]
    kept_turns = [i for i, g in enumerate(body) if id(g[0]) in kept_ids]
    if dropped_turns and kept_turns:
        assert max(dropped_turns) < min(kept_turns)
    assert trim.dropped_turns == len(dropped_turns)

    # it fits whenever dropping every droppable turn (leaving the bare note) would make it fit
    droppable = body[: max(0, len(body) - keep_recent)]
    if droppable:
        floor = head + flatten(body[len(droppable) :])
        if sum(by_chars(m) for m in floor) + by_chars(note_with_all_dropped(messages, keep_recent)) <= budget:
            assert trim.fits
    if trim.fits:
        assert sum(by_chars(m) for m in kept) == trim.tokens_after <= budget
    else:
        assert trim.summarized_values == 0


def note_with_all_dropped(messages: list[Message], keep_recent: int) -> UserMessage:
    """The note fit_context writes when it drops every turn it may: what it does when nothing fits
    (here, a first message too large for any window)."""
    _, trim = fit_context(
        messages,
        window_tokens=1,
        count_tokens=lambda m: 10**9 if m is messages[0] else 1,
        keep_recent=keep_recent,
        summarize=False,
    )
    assert trim is not None and not trim.fits
    return UserMessage(content=trim.note)
