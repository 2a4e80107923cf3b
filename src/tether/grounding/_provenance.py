"""Argument provenance: every value a tool is called with must come from somewhere the run has seen.

Small models invent arguments: they call `refund(amount=100)` before looking the order up, or copy a
number from an example in their prompt. Before a call runs, each number and identifier in its arguments
is traced to the user's input, the instructions or an earlier tool result. A value that traces to none
of them is not executed; the model is told which value and which tools could supply it.

What counts as the same value:
- numbers compare as numbers: `37.9`, `37.90`, `"$37.90"` and `"1,037.90"` vs `1037.9` match; a
  percentage `15%` also supplies `0.15` and the factors `1.15` and `0.85`; `0` and `1` are always
  allowed;
- identifiers (tokens with a digit, e.g. `1042`, `ORD-77`, `a1b2`) match case-insensitively;
- free text (words without digits) is not checked: names and prose cannot be traced by spelling, and
  a tool can mark more arguments as free text (`@tool(free_text=("body",))`);
- a whole string that appears verbatim in what the run has seen is grounded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["Evidence", "Ungrounded", "find_ungrounded"]

# a number as people write it: optional sign and currency, thousands separators, decimals, percent
_NUMBER = re.compile(r"(?<![\w.])[-+]?[$€£]?\s?(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?\s?(%?)(?![\w])")
_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-./:#@]*\d[A-Za-z0-9_\-./:#@]*|\d+[A-Za-z][A-Za-z0-9_\-]*")
_ALWAYS = frozenset({Decimal(0), Decimal(1)})
# a code made of words, checked whole in an argument that takes a key: capitals joined by `_` or `-`
# (`COP_SAU`, `CER-SET`), lower case joined the same way (`copper-saucepan`), or CamelCase
# (`CopperSaucepan`): what a small model makes of a product's name when it wants its SKU
_CODE = re.compile(r"[A-Z][A-Z0-9]*(?:[_\-][A-Z0-9]+)+|[a-z]+(?:[_\-][a-z0-9]+)+|[A-Z][a-z]+(?:[A-Z][a-z]+)+")
_DIGIT = re.compile(r"\d")  # a code with digits is an `_IDENT`, checked already
_KEY = re.compile(r"(?:^|[._\]])(?:id|sku|code|key|ref)$|_(?:id|code|key|ref)$", re.I)
_MAX_TEXT = 200_000  # chars of one text scanned for facts: bounds the work on huge tool outputs


def _numbers(text: str) -> Iterator[Decimal]:
    for m in _NUMBER.finditer(text):
        whole, frac, pct = m.group(1), m.group(2) or "", m.group(3)
        try:
            value = Decimal(whole.replace(",", "") + frac)
        except InvalidOperation:
            continue
        if m.group(0).lstrip().startswith("-"):
            value = -value
        yield value
        if pct:
            # "a 10% raise" supplies 0.1, and the factors 1.1 and 0.9 a calculation multiplies by
            yield value / 100
            yield 1 + value / 100
            yield 1 - value / 100


def _key(value: Decimal) -> Decimal:
    # 37.9 and 37.90 are the same amount; normalise away trailing zeros and the sign of zero
    return value.normalize() + 0


@dataclass(frozen=True, kw_only=True)
class Ungrounded:
    """One argument value that traces to nothing the run has seen.

    Attributes:
        path: where in the arguments, e.g. `amount` or `items[0].sku`.
        value: the value as it will be shown to the model.
    """

    path: str
    value: str


class Evidence:
    """The facts a run has seen so far: numbers, identifiers and raw text, grown as results arrive."""

    __slots__ = ("_idents", "_numbers", "_text")

    def __init__(self, texts: Iterable[str] = ()) -> None:
        self._numbers: set[Decimal] = set(_ALWAYS)
        self._idents: set[str] = set()
        # one string holding every text seen, separated by a character no value contains, so that a
        # substring check is one scan in C rather than a loop over texts
        self._text = ""
        for text in texts:
            self.add(text)

    def add(self, text: str) -> None:
        """Count `text` (an input, the instructions, a tool result) as a source of values."""
        if not text:
            return
        text = text[:_MAX_TEXT]
        self._text += "\x00" + text.casefold()
        for n in _numbers(text):
            self._numbers.add(_key(n))
        for ident in _IDENT.findall(text):
            self._idents.add(ident.casefold())

    def has_number(self, value: Decimal) -> bool:
        key = _key(value)
        if key in self._numbers:
            return True
        if key == key.to_integral_value() and abs(key) > 1000:
            return False  # a large whole number must match exactly: ids and amounts are not rounded
        # a value rounded to cents (or a whole number) matches its source: 37.899999 vs 37.9
        return any(abs(key - n) <= Decimal("0.005") and n != 0 for n in self._numbers)

    def numbers(self) -> frozenset[Decimal]:
        """Every number seen so far (0 and 1 included)."""
        return frozenset(self._numbers)

    def has_ident(self, ident: str) -> bool:
        folded = ident.casefold()
        return folded in self._idents or folded in self._text

    def has_text(self, text: str) -> bool:
        return text.casefold() in self._text


def _check_string(path: str, value: str, evidence: Evidence) -> Iterator[Ungrounded]:
    stripped = value.strip()
    if not stripped or evidence.has_text(stripped):
        return
    # an identifier with letters (KET-99) is checked whole; the digits inside it are not numbers
    ident_spans: list[tuple[int, int]] = []
    for m in _IDENT.finditer(stripped):
        if _NUMBER.fullmatch(m.group(0)):
            continue
        ident_spans.append(m.span())
        if not evidence.has_ident(m.group(0)):
            yield Ungrounded(path=path, value=m.group(0))
    for m in _NUMBER.finditer(stripped):
        if any(a <= m.start() and m.end() <= b for a, b in ident_spans):
            continue
        for n in _numbers(m.group(0)):
            if not evidence.has_number(n):
                yield Ungrounded(path=path, value=m.group(0).strip())
                break


def leaves(arguments: Mapping[str, Any], *, free_text: Iterable[str] = ()) -> Iterator[tuple[str, Any]]:
    """(path, value) for every scalar in `arguments`, nested mappings and lists included (`items[0].sku`),
    leaving out the top-level arguments named in `free_text`."""
    skip = set(free_text)

    def walk(path: str, value: Any) -> Iterator[tuple[str, Any]]:
        if isinstance(value, Mapping):
            for k, v in value.items():
                yield from walk(f"{path}.{k}", v)
        elif isinstance(value, list | tuple):
            for i, v in enumerate(value):
                yield from walk(f"{path}[{i}]", v)
        else:
            yield path, value

    for name, value in arguments.items():
        if name not in skip:
            yield from walk(name, value)


def find_ungrounded(
    arguments: Mapping[str, Any], evidence: Evidence, *, free_text: Iterable[str] = ()
) -> list[Ungrounded]:
    """The argument values that trace to nothing in `evidence`.

    Args:
        arguments: the call's arguments, as the model gave them.
        free_text: top-level argument names not to check.
    """
    found: list[Ungrounded] = []
    for path, value in leaves(arguments, free_text=free_text):
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            try:
                number = Decimal(str(value))
            except InvalidOperation:
                continue
            if not evidence.has_number(number):
                found.append(Ungrounded(path=path, value=str(value)))
        elif isinstance(value, str):
            found.extend(_check_string(path, value, evidence))
            code = value.strip()
            if (
                _CODE.fullmatch(code)
                and not _DIGIT.search(code)
                and _KEY.search(path)
                and not evidence.has_ident(code)
            ):
                # a code without digits (`COP_SAU` for a SKU) is an identifier too, where one is wanted
                found.append(Ungrounded(path=path, value=code))
    return found
