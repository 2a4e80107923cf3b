"""Look before you act: the records a write is about must have been looked up, and found.

Two facts the loop keeps per run, from what its tools returned:
- which identifiers each tool's successful results mention (`cancel_order` requires `lookup_order`:
  the order number it is called with must be one a `lookup_order` result showed, not merely one the
  user typed);
- which identifiers a lookup reported missing (`LookupError: there is no order '999'`, or a result
  that says `not found`): a write or irreversible call about one of them is refused, because acting on a
  record that does not exist and then saying so is what small models do.

Identifiers are the tokens of a call's string arguments that contain a digit (`1042`, `ORD-77`,
`E-12`), compared case-insensitively; free-text arguments are not read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ._provenance import _IDENT, Evidence, leaves

__all__ = ["identifiers", "json_records", "named_record", "references", "reported_missing", "says_missing"]

# how tools and people say a record is not there
_MISSING = re.compile(
    r"\b(not\s+found|no\s+such|does\s*n[o']t\s+exist|doesn't\s+exist|not\s+exist|there\s+is\s+no|there\s+are\s+no|"
    r"could\s*n[o']t\s+find|cannot\s+find|can't\s+find|unknown|no\s+record|no\s+matching|not\s+on\s+file|"
    r"invalid|not\s+(a\s+)?valid)\b",
    re.I,
)


def identifiers(arguments: Mapping[str, Any], *, free_text: Iterable[str] = ()) -> Iterator[tuple[str, str]]:
    """(argument path, identifier) for every identifier in the string values of `arguments`."""
    for path, value in leaves(arguments, free_text=free_text):
        if isinstance(value, str):
            for m in _IDENT.finditer(value):
                yield path, m.group(0)


# a file or resource named without a digit in it ("project/README.md", "notes.txt")
_PATH_LIKE = re.compile(r"(?<![\w/.-])[\w-]+(?:/[\w.-]+)+|(?<![\w/.-])[\w-]{2,}\.[A-Za-z]{2,5}\b")


def named_record(text: str) -> str | None:
    """The first record `text` names, an identifier (`1042`, `E-12`) or a path (`project/README.md`);
    None when it names none ("Hello, what can you do?")."""
    found = next((m.group(0) for m in _IDENT.finditer(text)), None)
    if found is None and (path := _PATH_LIKE.search(text)) is not None:
        found = path.group(0)
    return found


def references(content: str) -> Iterator[tuple[str, str]]:
    """(field, identifier) for every field of a JSON tool result whose whole value is an identifier:
    `{"customer_id": "C-442"}` gives `("customer_id", "C-442")`. These are the records a result points
    at without describing them; a result that is not JSON gives none."""
    try:
        data = json.loads(content)
    except ValueError:
        return

    def walk(value: Any, field: str) -> Iterator[tuple[str, str]]:
        if isinstance(value, Mapping):
            for k, v in value.items():
                yield from walk(v, str(k))
        elif isinstance(value, list):
            for v in value:
                yield from walk(v, field)
        elif isinstance(value, str) and field and _IDENT.fullmatch(value.strip()):
            yield field, value.strip()

    yield from walk(data, "")


def json_records(value: Any) -> Iterator[Mapping[str, Any]]:
    """Every JSON object in a parsed tool result, nested ones included."""
    if isinstance(value, Mapping):
        yield value
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            yield from json_records(item)


def says_missing(text: str) -> bool:
    """Whether `text` says something is not there (`not found`, `there is no`, `does not exist`...)."""
    return bool(_MISSING.search(text))


def reported_missing(arguments: Mapping[str, Any], text: str, *, free_text: Iterable[str] = ()) -> list[str]:
    """The identifiers of a call's arguments that its result or error `text` says do not exist.

    An identifier counts when the text says something is missing (`not found`, `there is no`,
    `does not exist`...) and names the identifier, or names nothing else the call was about.
    """
    if not says_missing(text):
        return []
    idents = list(dict.fromkeys(ident for _, ident in identifiers(arguments, free_text=free_text)))
    if not idents:
        return []
    seen = Evidence((text,))
    named = [ident for ident in idents if seen.has_ident(ident)]
    return named or (idents if len(idents) == 1 else [])


def singular(word: str) -> str:
    """A lowercase word's singular, for matching a request's words to names: knives, sets, boards."""
    if word.endswith("ves") and len(word) > 4:
        return word[:-3] + "fe"
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word
