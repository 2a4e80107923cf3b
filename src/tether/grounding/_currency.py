"""Amounts in an answer keep the currency their source gives them.

A number can be grounded and still wrong: the 1.5B model looked an order up (`"total": 129,
"currency": "USD"`) and answered "the total is 129 yen" without converting it. Provenance finds 129
in a tool result and lets it pass; this check reads the currency beside each amount the answer states
and the currency of the records that amount comes from. An amount every source gives in another
currency is mislabelled. An amount no record gives with a currency (worked out, or from plain text)
is not judged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["Mislabelled", "mislabelled_amount"]

# ISO code by what people write beside an amount; "$" is read as US dollars
_NAMES = {
    "$": "USD",
    "us$": "USD",
    "usd": "USD",
    "dollar": "USD",
    "dollars": "USD",
    "us dollars": "USD",
    "€": "EUR",
    "eur": "EUR",
    "euro": "EUR",
    "euros": "EUR",
    "£": "GBP",
    "gbp": "GBP",
    "pound": "GBP",
    "pounds": "GBP",
    "british pounds": "GBP",
    "pounds sterling": "GBP",
    "¥": "JPY",
    "jpy": "JPY",
    "yen": "JPY",
    "japanese yen": "JPY",
    "chf": "CHF",
    "franc": "CHF",
    "francs": "CHF",
    "swiss francs": "CHF",
    "cad": "CAD",
    "aud": "AUD",
    "cny": "CNY",
    "yuan": "CNY",
    "inr": "INR",
    "rupees": "INR",
}
_AMOUNT = r"(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?"
_WORDS = "|".join(sorted((re.escape(n) for n in _NAMES if n[0].isalpha()), key=len, reverse=True))
_SYMBOLS = "|".join(re.escape(n) for n in _NAMES if not n[0].isalpha())
# "¥19,504.80", "USD 129", "129.00 USD", "129 yen", "129 Japanese yen"
_BEFORE = re.compile(rf"(?<![\w.])(?P<cur>{_SYMBOLS}|\b(?:{_WORDS})\b)\s?{_AMOUNT}(?!\w|[.,]\d)", re.I)
_AFTER = re.compile(rf"(?<![\w.,]){_AMOUNT}\s?(?P<cur>\b(?:{_WORDS})\b)", re.I)
# "the total in Japanese yen is 129.0", "in euros: 77.19", '"total in yen": 129': the currency named
# before the verb
_IN = re.compile(
    rf"\bin (?P<cur>{_WORDS})\b(?:\s+(?:is|are|was|were|would be|will be|comes to|totals?|amounts to))?"
    rf"[\"']?\s*:?\s*(?:about |approximately |roughly )?{_AMOUNT}(?!\w|[.,]\d)",
    re.I,
)
_CODE = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True, slots=True)
class Mislabelled:
    """An amount the answer gives in one currency that its sources give in another."""

    amount: str
    said: str
    source: str
    tool: str

    def describe(self) -> str:
        return f"it gives {self.amount} in {self.said}, but {self.tool} gives {self.amount} in {self.source}"


def _value(whole: str, frac: str | None) -> Decimal | None:
    try:
        return Decimal(whole.replace(",", "") + (frac or ""))
    except InvalidOperation:
        return None


def _labelled(text: str) -> Iterator[tuple[str, Decimal, str]]:
    """(the amount as written, its value, ISO code) for every amount written beside a currency."""
    for pattern, whole, frac in ((_BEFORE, 2, 3), (_AFTER, 1, 2), (_IN, 2, 3)):
        for m in pattern.finditer(text):
            value = _value(m.group(whole), m.group(frac))
            code = _NAMES.get(" ".join(m.group("cur").casefold().split()))
            if value is not None and code is not None:
                yield m.group(whole) + (m.group(frac) or ""), value, code


def priced_in(record: Mapping[str, Any]) -> str | None:
    """The ISO code a JSON record states its amounts in (`"currency": "USD"`), if it states one."""
    for key, value in record.items():
        if (
            key.casefold().endswith("currency")
            and isinstance(value, str)
            and _CODE.match(value.strip().upper())
        ):
            return value.strip().upper()
    return None


_NOT_MONEY = re.compile(r"rate|quantity|qty|count|units|id$|number|year|percent|age", re.I)


def is_amount(key: str, value: Any) -> bool:
    """Whether a record's field holds an amount of money: a number, not a rate, a count, an id..."""
    return isinstance(value, int | float) and not isinstance(value, bool) and not _NOT_MONEY.search(key)


def _amounts(record: Mapping[str, Any]) -> Iterator[Decimal]:
    """The amounts of money in a record: its numbers, less rates, counts, ids and the like."""
    for key, value in record.items():
        if is_amount(key, value):
            yield Decimal(str(value))


def _sources(results: Iterable[tuple[str, str]]) -> Iterator[tuple[str, Decimal, str]]:
    """(tool, amount, currency) for every amount a tool result gives with its currency."""
    for tool, text in results:
        try:
            parsed = json.loads(text)
        except ValueError:
            for _, value, code in _labelled(text):
                yield tool, value, code
            continue
        for value, code in _priced(parsed):
            yield tool, value, code


def _priced(value: Any, inherited: str | None = None) -> Iterator[tuple[Decimal, str]]:
    """(amount, currency) for every amount in a parsed result; a nested record (an order's item) is in
    the currency of the record around it unless it states its own."""
    if isinstance(value, Mapping):
        code = priced_in(value) or inherited
        if code is not None:
            for amount in _amounts(value):
                yield amount, code
        for item in value.values():
            yield from _priced(item, code)
    elif isinstance(value, list):
        for item in value:
            yield from _priced(item, inherited)


def mislabelled_amount(answer: str, results: Iterable[tuple[str, str]]) -> Mislabelled | None:
    """The first amount `answer` writes in a currency that no tool result gives it in, while some result
    gives that same amount in another currency; `results` are (tool, content) of successful calls."""
    known = list(_sources(results))
    for written, value, said in _labelled(answer):
        same = [(tool, code) for tool, amount, code in known if abs(amount - value) <= Decimal("0.005")]
        if same and all(code != said for _, code in same):
            tool, code = same[0]
            return Mislabelled(amount=written, said=said, source=code, tool=tool)
    return None


_NAMED = re.compile(rf"(?:{_SYMBOLS})|\b(?:{_WORDS})\b", re.I)


def named_currencies(text: str) -> set[str]:
    """The ISO codes of the currencies `text` names ("in euros", "Japanese yen", "USD", "£")."""
    return {_NAMES[" ".join(m.group(0).casefold().split())] for m in _NAMED.finditer(text)}
