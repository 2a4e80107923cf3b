"""An amount taken from the wrong part of a record: the order's total for "the price of the knife".

Provenance can only say a value was seen. A small model asked about one item of an order often takes
a number of the order instead (its total, another item's price): grounded, and wrong. When the request
names one item of a list in a tool result, a number argument that the record gives only outside that
item is not the item's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from ._arithmetic import plain
from ._entities import json_records, singular

__all__ = ["OtherAmount", "other_amount"]

# words that ask for the whole record, not one item of it
_WHOLE = frozenset({"total", "whole", "entire", "full", "everything", "all"})
# the item fields that name it
_NAME_KEYS = ("name", "title", "product", "description")


@dataclass(frozen=True, kw_only=True)
class OtherAmount:
    """A number argument that belongs to another part of the record than the item the request names.

    Attributes:
        param: the argument.
        value: its value.
        item: the item the request names, as the record names it ("Chef's Knife").
        field: where the value is in the record (`total`, or `Bamboo Cutting Board unit_price`).
        own: the item's own numbers, as `key value` ("unit_price 54.0").
        tool: the tool whose result holds the record.
    """

    param: str
    value: str
    item: str
    field: str
    own: tuple[str, ...]
    tool: str

    def describe(self) -> str:
        """ "amount=78.5 is the total in lookup_order's result, but the request is about the Chef's Knife
        (unit_price 54.0)"."""
        return (
            f"{self.param}={self.value} is the {self.field} in {self.tool}'s result, but the request is about "
            f"the {self.item} ({', '.join(self.own)})"
        )


def other_amount(
    request: str,
    results: Iterable[tuple[str, Any]],
    arguments: Mapping[str, Any],
    *,
    free_text: Iterable[str] = (),
) -> OtherAmount | None:
    """The first number argument that the record the request is about gives only outside the item the
    request names, or None.

    Only for a request that names exactly one item of a list in a result (by the last word of its name:
    "knife" for "Chef's Knife", plurals too) and does not ask for the whole ("total", "full", "all",
    "the entire order"...). A value the item itself shows (its price, its quantity) is the item's.

    Args:
        request: what the user asked.
        results: (tool, parsed result) for every successful tool call.
        arguments: the call's arguments.
        free_text: parameters that are free text (never checked).
    """
    words = {singular(w) for w in re.findall(r"[a-z]+", request.casefold())}
    if words & _WHOLE:
        return None
    free = set(free_text)
    numbers = {k: n for k, v in arguments.items() if k not in free and (n := _decimal(v)) is not None}
    if not numbers:
        return None
    for tool, result in results:
        for record in json_records(result):
            for items in (v for v in record.values() if isinstance(v, list)):
                found = _other(record, items, words, numbers, tool)
                if found is not None:
                    return found
    return None


def _other(
    record: Mapping[str, Any],
    items: list[Any],
    words: set[str],
    numbers: dict[str, Decimal],
    tool: str,
) -> OtherAmount | None:
    entries = [i for i in items if isinstance(i, Mapping)]
    named = [i for i in entries if _item_name(i) and singular(_item_name(i).split()[-1].casefold()) in words]
    if len(named) != 1:
        return None
    (item,) = named
    own = dict(_scalars(item))
    # another item's numbers, then the record's own (a field the request names, "shipping", is asked for)
    elsewhere = [(f"{_item_name(i)} {k}", n) for i in entries if i is not item for k, n in _scalars(i)]
    elsewhere += [
        (k, n) for k, n in _scalars(record) if not {singular(w) for w in k.casefold().split("_")} & words
    ]
    for param, value in numbers.items():
        if value in own.values():
            continue
        field = next((k for k, n in elsewhere if n == value), None)
        if field is not None:
            return OtherAmount(
                param=param,
                value=plain(value),
                item=_item_name(item),
                field=field,
                own=tuple(f"{k} {plain(n)}" for k, n in own.items()),
                tool=tool,
            )
    return None


def _item_name(item: Mapping[str, Any]) -> str:
    return next((str(item[k]) for k in _NAME_KEYS if isinstance(item.get(k), str) and item[k].strip()), "")


def _scalars(record: Mapping[str, Any]) -> list[tuple[str, Decimal]]:
    """The numbers a record holds directly (not in nested objects), as (key, value)."""
    return [(str(k), n) for k, v in record.items() if (n := _decimal(v)) is not None]


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None
