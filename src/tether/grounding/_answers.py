"""Grounded final answers: a number in an answer must come from the input or a tool result."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ._arithmetic import derive
from ._currency import is_amount, named_currencies, priced_in
from ._entities import json_records, singular
from ._provenance import _IDENT, _NUMBER, Evidence, _numbers

__all__ = [
    "HOW_TO",
    "PARROTED",
    "AnswerNumbers",
    "LeftOut",
    "answer_numbers",
    "describes_steps",
    "left_out",
    "names_tool",
    "stated_numbers",
    "ungrounded_in_answer",
    "unusable_answer",
]

_TRANSCRIPT = re.compile(
    r"<\s*/?\s*(tool_call|tool_response|function_call|\|im_start\|)|^\s*\{\s*\"(name|function)\"\s*:",
    re.I | re.M,
)


PARROTED: str = "the answer repeats a corrective message instead of answering the user"
"""The reason `unusable_answer` gives for an answer that copies the runtime's corrective message."""
# what a small model copies back when it has nothing to say: the runtime's own corrective messages
# ("lookup_order was already called...", "Your answer was not shown..."), bare or behind "Error: ". A
# copied tool error ("Error: LookupError: there is no order '9999'") is not one: it is what the tool said
_PARROT = re.compile(
    r"\A\s*(Error:\s*)?(Your answer was not shown|\w+ was not run:|\w+ was already called|"
    r"(The|Your) answer (is|was) (a tool call|not shown))",
    re.I,
)

HOW_TO: str = "the answer tells the user how to call the tools instead of calling them"
"""The reason `unusable_answer` gives for an answer that explains the steps rather than taking them."""

# a line that begins a numbered list ("1. ", "2) "): the number counts items, it states no value
_LIST_MARKER = re.compile(r"(?m)^\s*\d{1,2}[.)](?=\s)")
# how a model writes a recipe for the user instead of doing the work
_HOW_TO = re.compile(
    r"\b(here'?s how|here is how|follow these steps|to do (this|that|so)|"
    r"you (can|could|need to|should|must|will need to|'ll need to) (first )?(call|use|run|invoke)|"
    r"(first|then|next),? (call|use|run|invoke)|(call|calling|use|using|invoke) the [`'\"]?\w+[`'\"]? (function|tool))\b",
    re.I,
)


# "To refund the blender from order 4410, you need to first look up the order details.": the steps of
# the task, told to the user, without naming a tool
_STEPS_FOR_USER = re.compile(
    r"\A\s*to [^.,;:\n]{3,100},\s+((you|we|i)(\s+will|'ll)?\s+(need|have|must|should)|call|use|run)\b",
    re.I,
)


def names_tool(tool: str, text: str) -> bool:
    """Whether `text` names the tool `tool` as a word of its own (`lookup_order`, not `lookup_orders`)."""
    return re.search(rf"(?<![\w]){re.escape(tool)}(?![\w])", text) is not None


# a calculation carried to its result: "37.9 * 2 = 75.8", "= $75.80"
_WORKED_OUT = re.compile(r"=\s*[-+]?[$€£¥]?\s?\d")


def describes_steps(text: str) -> bool:
    """Whether `text` opens by telling the reader what must be done ("To calculate the refund, you need
    to know the unit price...") rather than doing it. Looser than the `HOW_TO` rule (no tool named): a
    policy answer ("To get a refund, you need to return the item") reads the same, so the loop sends an
    answer back for this once per run at most. Steps carried to their result ("...so the calculation
    would be 37.9 * 2 = 75.8.") are an answer that shows its working, not a recipe."""
    return bool(_STEPS_FOR_USER.match(text)) and not _WORKED_OUT.search(text)


def unusable_answer(text: str, tools: Iterable[str] = ()) -> str | None:
    """Why `text` cannot be shown as an answer (empty, a tool call, a fake transcript, a copied corrective
    message, instructions for calling the agent's own `tools`), or None."""
    if not text.strip():
        return "the answer is empty"
    if _TRANSCRIPT.search(text):
        return "the answer is a tool call or a transcript, not an answer to the user"
    if _PARROT.match(text):
        return PARROTED
    named = [t for t in tools if names_tool(t, text)]
    if named and _HOW_TO.search(text):
        return HOW_TO
    return None


@dataclass(frozen=True, kw_only=True)
class AnswerNumbers:
    """What the numbers of an answer trace to.

    Attributes:
        ungrounded: the numbers that appear in nothing the run has seen, in order, without repeats.
        derived: how each number the answer computed comes from seen ones ("75.8 = 2 × 37.9").
    """

    ungrounded: tuple[str, ...] = ()
    derived: tuple[str, ...] = ()


def _stated(text: str) -> Iterator[re.Match[str]]:
    """The numbers `text` states: not a list's item markers, not digits inside an identifier (`E-1021`)."""
    inside_idents = [m.span() for m in _IDENT.finditer(text) if re.search(r"[A-Za-z]", m.group(0))]
    markers = {m.end() for m in _LIST_MARKER.finditer(text)}
    for m in _NUMBER.finditer(text):
        if m.end() in markers or m.end() + 1 in markers:
            continue
        if any(a <= m.start() and m.end() <= b for a, b in inside_idents):
            continue
        yield m


def stated_numbers(text: str) -> list[Decimal]:
    """The numbers an answer states, as values (`90,200` is 90200), in order."""
    return [n for m in _stated(text) for n in itertools.islice(_numbers(m.group(0)), 1)]


def answer_numbers(text: str, evidence: Evidence, *, arithmetic: bool = True) -> AnswerNumbers:
    """Trace every number `text` states to `evidence`; with `arithmetic`, a number one step of arithmetic
    on two seen numbers gives is grounded too (`derive`), and its derivation is returned."""
    ungrounded: list[str] = []
    derived: list[str] = []
    for m in _stated(text):
        value = m.group(0).strip()
        if value in ungrounded:
            continue
        for n in _numbers(m.group(0)):
            if evidence.has_number(n):
                continue
            how = derive(n, evidence.numbers()) if arithmetic else None
            if how is None:
                ungrounded.append(value)
                break
            if how not in derived:
                derived.append(how)
            break
    return AnswerNumbers(ungrounded=tuple(ungrounded), derived=tuple(derived))


def ungrounded_in_answer(text: str, evidence: Evidence, *, arithmetic: bool = True) -> list[str]:
    """The numbers in `text` that appear in nothing the run has seen (nor follow from it by one step of
    arithmetic, with `arithmetic`), in order, without repeats."""
    return list(answer_numbers(text, evidence, arithmetic=arithmetic).ungrounded)


@dataclass(frozen=True, kw_only=True)
class LeftOut:
    """A field the request asks for that a tool result gives and the answer does not state.

    Attributes:
        field: the result's key (`email`, `units_left`, `manager_id`).
        value: its value in the result, as text.
        tool: the tool whose result gave it.
    """

    field: str
    value: str
    tool: str


# a question, from its question word to its end
_QUESTION = re.compile(r"\b(?:who|whom|whose|what|which|where|when|how)\b([^.?!;]*)", re.I)
# "in euros", "to US dollars", "into yen": a currency an amount is wanted in
_IN_CURRENCY = re.compile(r"\b(?:in|into|to)\s+((?:[A-Za-z]+\s+)?(?:[A-Za-z]+|[$€£¥]))")
# words that ask for a total without naming it
_ALL = frozenset({"all", "altogether", "overall", "combined"})
# the question word that asks for a field a request does not name
_ASKS_WHERE = re.compile(r"\bwhere\b", re.I)
_PLACE_FIELDS = frozenset({"location", "address", "city", "place", "position"})
# key parts that say what kind of key a field is, not what it is about
_KEY_WORDS = frozenset({"id", "ids", "no", "num", "number", "code", "ref", "by", "of", "per", "is", "has"})


def left_out(
    request: str, results: Iterable[tuple[str, Any]], answer: str, *, used: Iterable[str] = ()
) -> LeftOut | None:
    """The first field the request asks for that the answer leaves out, or None.

    A field is asked for when a word of one of the request's questions names it (`email` for "Which
    email address...", `units_left` for "tell me how many are left", `manager_id` for "Who is Dana's
    manager?"); a "where" question asks for a `location`, "across all" for the total, "...in euros?"
    for the amounts a result gives in euros. Fields whose value the request already holds (the order it
    names) are not asked for, nor numbers that went into a later call (a total converted to yen: the
    answer gives the yen). A pointer is stated when the answer states what the record it points at
    says (the manager's name for `manager_id`). The answer leaves a field out when it states the value
    of none of the fields asked for: one is enough ("Write to j.chen@example.org" need not also give
    the customer's id).

    Args:
        request: what the user asked.
        results: (tool, parsed result) for every successful tool call, in order.
        answer: the answer to judge.
        used: the arguments of the calls made, as text.
    """
    # the words of the request's questions: "tell me how many are left", not "a customer is returning"
    words = {
        singular(w) for q in _QUESTION.finditer(request) for w in re.findall(r"[a-z]+", q.group(1).casefold())
    }
    if words & _ALL:
        words.add("total")  # "across all warehouses", "altogether": the total is asked for
    used_numbers = set(stated_numbers(" ".join(used)))
    wants_place = bool(_ASKS_WHERE.search(request))
    # "How much is order 5531 in euros?": the amounts a result gives in euros are asked for
    wants_currencies = set().union(*(named_currencies(m.group(1)) for m in _IN_CURRENCY.finditer(request)))
    said = answer.casefold()
    said_numbers = set(stated_numbers(answer))
    asked: list[LeftOut] = []
    results = list(results)
    records = [r for _, result in results for r in json_records(result)]
    for tool, result in results:
        for record in json_records(result):
            in_wanted = priced_in(record) in wants_currencies
            for key, value in record.items():
                if not isinstance(key, str) or isinstance(value, dict | list) or value is None or value == "":
                    continue
                parts = {singular(p) for p in _parts(key)} - _KEY_WORDS
                amount = in_wanted and is_amount(key, value)
                named = amount or bool(parts & words) or (wants_place and bool(parts & _PLACE_FIELDS))
                if not named:
                    continue
                text = str(value)
                if text.casefold() in request.casefold():
                    continue  # the request holds it: it is what the user asked about, not for
                if not amount and isinstance(value, int | float) and Decimal(str(value)) in used_numbers:
                    continue  # it went into a later call (converted, computed): the answer gives what came out
                if _states(text, value, said, said_numbers) or _states_pointed(key, text, records, said):
                    return None
                asked.append(LeftOut(field=key, value=text, tool=tool))
    # a field the request is about before a key that points at it (the email before the customer's id)
    return min(asked, key=lambda f: _is_pointer(f.field), default=None)


def _parts(key: str) -> set[str]:
    """The words of a field's key: `units_left` is {units, left}."""
    return {p for p in re.split(r"[_\W]+", key.casefold()) if p}


def _is_pointer(key: str) -> bool:
    """Whether a field holds a key of a record (`manager_id`, `order_ids`) rather than a fact."""
    return bool(_parts(key) & _KEY_WORDS)


def _states_pointed(key: str, value: str, records: list[Mapping[str, Any]], said: str) -> bool:
    """Whether the answer states what a pointer field leads to: the manager's name for `manager_id`
    E-1009, from the record whose own id is E-1009."""
    if not _is_pointer(key):
        return False
    for record in records:
        own = any(k != key and str(v) == value for k, v in record.items() if not isinstance(v, dict | list))
        if own and any(
            isinstance(v, str) and len(v) >= 3 and v != value and v.casefold() in said
            for v in record.values()
        ):
            return True
    return False


def _states(text: str, value: Any, said: str, said_numbers: set[Decimal]) -> bool:
    if isinstance(value, bool):
        return True  # a yes or no is said in words
    if isinstance(value, int | float):
        return Decimal(str(value)) in said_numbers
    return text.casefold() in said
