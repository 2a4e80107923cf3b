"""Tool calls out of a small model's text.

Small Qwen models are told to answer `<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>`, and
mostly do; when they do not, the call is still there in a handful of recognisable shapes: the closing
tag missing at the end of the text, the JSON bare or in a ```json fence, wrapped in `{{...}}`, with
`"parameters"` for `"arguments"`, with the arguments as a JSON string, or in Python literal syntax.
Some models carry on and write the tool's answer themselves (`<tool_response>...`); that fake
transcript is cut off.

`parse_tool_calls` recovers the calls and names each fix in `repairs`, so that a run records how much
help the model needed. It is shared by every backend that reads calls out of text (the embedded
llama.cpp model, OpenAI-compatible servers that return calls as text).
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any, Final

from ._messages import ToolCall

__all__ = [
    "ARGUMENTS_AS_STRING",
    "BARE_JSON_CALL",
    "CALL_LIST",
    "DOUBLE_BRACES",
    "FAKE_TOOL_RESPONSE",
    "FENCED_JSON_CALL",
    "FUNCTION_WRAPPER",
    "MISSING_ARGUMENTS",
    "PARAMETERS_KEY",
    "PYTHON_LITERAL",
    "TRAILING_COMMA",
    "UNPARSED_ARGUMENTS",
    "UNTERMINATED_TOOL_CALL",
    "ParsedText",
    "parse_tool_calls",
]

# The names recorded in `ParsedText.repairs` (and from there in `ModelResponse.repairs`).
UNTERMINATED_TOOL_CALL: Final = "unterminated_tool_call"
"""A `<tool_call>` block had no `</tool_call>`."""
BARE_JSON_CALL: Final = "bare_json_call"
"""A call was written as plain JSON, without `<tool_call>` tags."""
FENCED_JSON_CALL: Final = "fenced_json_call"
"""A call was written in a Markdown code fence."""
DOUBLE_BRACES: Final = "double_braces"
"""A call was wrapped in `{{...}}`, as in a template that escaped its braces."""
PARAMETERS_KEY: Final = "parameters_key"
"""`"parameters"` was used instead of `"arguments"`."""
ARGUMENTS_AS_STRING: Final = "arguments_as_string"
"""The arguments were a JSON object encoded as a string."""
FUNCTION_WRAPPER: Final = "function_wrapper"
"""The call was wrapped OpenAI-style: `{"type": "function", "function": {...}}`."""
CALL_LIST: Final = "call_list"
"""Several calls were written as one JSON list."""
MISSING_ARGUMENTS: Final = "missing_arguments"
"""The call had no arguments at all; `{}` was assumed."""
PYTHON_LITERAL: Final = "python_literal"
"""The call was written in Python literal syntax (single quotes, `True`, `None`)."""
TRAILING_COMMA: Final = "trailing_comma"
"""The JSON had a trailing comma before `}` or `]`."""
UNPARSED_ARGUMENTS: Final = "unparsed_arguments"
"""The arguments could not be read; they are kept as text so the error can be shown to the model."""
FAKE_TOOL_RESPONSE: Final = "fake_tool_response"
"""The model wrote a `<tool_response>` itself; the text from there on was dropped."""

_OPEN = "<tool_call>"
_CLOSE = "</tool_call>"
_TOOL_RESPONSE = "<tool_response>"
_TAGGED = re.compile(r"<tool_call>(.*?)(</tool_call>|(?=<tool_call>)|\Z)", re.DOTALL)
_FENCE = re.compile(r"```[ \t]*(?:json|JSON|tool_call)?[ \t]*\n?(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
_JSON_WORDS = re.compile(r"\b(?:true|false|null)\b")
_PYTHON_WORDS: Final = {"true": "True", "false": "False", "null": "None"}
_NAME = re.compile(r"""["']name["']\s*:\s*["']([^"']+)["']""")
_NAME_KEY = re.compile(r"""["']name["']\s*:""")
_NAME_WINDOW = 80
_ARGUMENTS = re.compile(r"""["'](?:arguments|parameters)["']\s*:\s*""")


@dataclass(frozen=True, kw_only=True)
class ParsedText:
    """A model's text split into prose and tool calls.

    Attributes:
        text: the text with the calls (and any fake transcript) removed, stripped.
        calls: the calls, in order; ids are `call_0`, `call_1`... within one text.
        repairs: what had to be fixed to read the calls, in the order met (names from this module).
    """

    text: str
    calls: tuple[ToolCall, ...] = ()
    repairs: tuple[str, ...] = ()


def parse_tool_calls(text: str) -> ParsedText:
    """Read the tool calls out of a model's text.

    Tagged calls (`<tool_call>...</tool_call>`) are preferred; only when there are none are fenced and
    then bare JSON objects considered, and only objects shaped like a call (a string `name` and
    `arguments` or `parameters`) count, so prose that happens to contain JSON stays prose.

    Args:
        text: what the model wrote.

    Returns:
        The prose, the calls, and the repairs that were needed.
    """
    repairs: list[str] = []
    cut = text.find(_TOOL_RESPONSE)
    if cut != -1:
        text = text[:cut]
        repairs.append(FAKE_TOOL_RESPONSE)

    payloads: list[dict[str, Any]] = []
    if _OPEN in text:
        text = _take_tagged(text, payloads, repairs)
    if not payloads:
        text = _take_fenced(text, payloads, repairs)
    if not payloads:
        text = _take_bare(text, payloads, repairs)

    calls = tuple(_to_call(p, f"call_{n}", repairs) for n, p in enumerate(payloads))
    return ParsedText(text=text.strip(), calls=calls, repairs=_unique(repairs))


def _take_tagged(text: str, payloads: list[dict[str, Any]], repairs: list[str]) -> str:
    kept: list[str] = []
    pos = 0
    for match in _TAGGED.finditer(text):
        local: list[str] = []
        if match.group(2) != _CLOSE:
            local.append(UNTERMINATED_TOOL_CALL)
        found = _payloads_in(_unfence(match.group(1), local), local, tagged=True)
        if found is None:
            # a tag around something that is not a call: leave it for the reader to see
            continue
        repairs.extend(local)
        kept.append(text[pos : match.start()])
        pos = match.end()
        payloads.extend(found)
    kept.append(text[pos:])
    return "".join(kept)


def _take_fenced(text: str, payloads: list[dict[str, Any]], repairs: list[str]) -> str:
    kept: list[str] = []
    pos = 0
    for match in _FENCE.finditer(text):
        local: list[str] = [FENCED_JSON_CALL]
        found = _payloads_in(match.group(1), local, tagged=False)
        if found is None:
            continue
        repairs.extend(local)
        kept.append(text[pos : match.start()])
        pos = match.end()
        payloads.extend(found)
    kept.append(text[pos:])
    return "".join(kept)


def _take_bare(text: str, payloads: list[dict[str, Any]], repairs: list[str]) -> str:
    kept: list[str] = []
    pos = 0
    start = _next_open(text, 0)
    while start != -1:
        local: list[str] = [BARE_JSON_CALL]
        end, found = _value_at(text, start, local)
        if found is None:
            start = _next_open(text, start + 1)
            continue
        repairs.extend(local)
        kept.append(text[pos:start])
        pos = end
        payloads.extend(found)
        start = _next_open(text, end)
    kept.append(text[pos:])
    return "".join(kept)


def _next_open(text: str, start: int) -> int:
    """The next `{` or `[` that a `"name":` key follows closely: where a written call could start.

    Looking only there keeps the scan linear in practice on long answers full of code.
    """
    while True:
        positions = [p for p in (text.find("{", start), text.find("[", start)) if p != -1]
        if not positions:
            return -1
        start = min(positions)
        if _NAME_KEY.search(text, start, start + _NAME_WINDOW):
            return start
        start += 1


def _value_at(text: str, start: int, repairs: list[str]) -> tuple[int, list[dict[str, Any]] | None]:
    """Read a call, `{{call}}` or list of calls at `text[start]`; return its end and the calls."""
    if text.startswith("{{", start):
        inner_end = _balanced_end(text, start + 1)
        if inner_end is not None and text.startswith("}", inner_end):
            local = [*repairs, DOUBLE_BRACES]
            found = _payloads_in(text[start + 1 : inner_end], local, tagged=False)
            if found is not None:
                repairs[:] = local
                return inner_end + 1, found
    end = _balanced_end(text, start)
    if end is None:
        return start, None
    return end, _payloads_in(text[start:end], repairs, tagged=False)


def _balanced_end(text: str, start: int) -> int | None:
    """The index after the bracket that closes the one at `start`, skipping those inside strings."""
    depth = 0
    quote: str | None = None
    escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if quote is not None:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch == '"' or (ch == "'" and text[i - 1] in "{[,: \n\t"):
            # an apostrophe in prose is not a string; ' opens one only right after a delimiter
            quote = ch
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _unfence(body: str, repairs: list[str]) -> str:
    match = _FENCE.search(body)
    if match is None:
        return body
    repairs.append(FENCED_JSON_CALL)
    return match.group(1)


def _payloads_in(body: str, repairs: list[str], *, tagged: bool) -> list[dict[str, Any]] | None:
    """The call objects in `body` (one object or a list), or None if `body` is not a call.

    Inside `<tool_call>` tags (`tagged`) the model evidently meant a call, so a call without arguments
    or with unreadable JSON still counts; outside them only a well-formed call does.
    """
    body = body.strip()
    if not body:
        return None
    local: list[str] = []
    value = _loads_lenient(body, local)
    if value is None and body.startswith("{{") and body.endswith("}}"):
        value = _loads_lenient(body[1:-1], local)
        if value is not None:
            local.append(DOUBLE_BRACES)
    if value is None:
        name = _NAME.search(body) if tagged else None
        if name is None:
            return None
        args = _ARGUMENTS.search(body, name.end()) or _ARGUMENTS.search(body)
        raw = body[args.end() :].rstrip().removesuffix("}").rstrip() if args else ""
        repairs.append(UNPARSED_ARGUMENTS)
        return [{"name": name.group(1), "arguments": raw}]
    found = _calls_in_value(value, local, tagged=tagged)
    if found is not None:
        repairs.extend(local)
    return found


def _calls_in_value(value: Any, repairs: list[str], *, tagged: bool) -> list[dict[str, Any]] | None:
    items = value if isinstance(value, list) else [value]
    if not items or not all(_is_call(item, tagged=tagged) for item in items):
        return None
    if isinstance(value, list):
        repairs.append(CALL_LIST)
    return items


def _is_call(value: Any, *, tagged: bool) -> bool:
    if not isinstance(value, dict):
        return False
    if isinstance(value.get("function"), dict):
        value = value["function"]
    has_arguments = "arguments" in value or "parameters" in value
    return isinstance(value.get("name"), str) and (has_arguments or (tagged and len(value) == 1))


def _loads_lenient(body: str, repairs: list[str]) -> Any:
    """JSON, else JSON without trailing commas, else a Python literal; None if none of them."""
    try:
        return json.loads(body)
    except ValueError:
        pass
    fixed = _TRAILING_COMMA.sub(r"\1", body)
    if fixed != body:
        try:
            value = json.loads(fixed)
        except ValueError:
            pass
        else:
            repairs.append(TRAILING_COMMA)
            return value
    value = _literal(fixed)
    if value is None:
        # single quotes with JSON's true/false/null; only now, as this also rewrites words in strings
        value = _literal(_JSON_WORDS.sub(lambda m: _PYTHON_WORDS[m.group(0)], fixed))
    if value is None:
        return None
    repairs.append(PYTHON_LITERAL)
    return value


def _literal(body: str) -> dict[str, Any] | list[Any] | None:
    try:
        value = ast.literal_eval(body)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, dict | list) else None


def _to_call(payload: dict[str, Any], call_id: str, repairs: list[str]) -> ToolCall:
    if isinstance(payload.get("function"), dict):
        payload = payload["function"]
        repairs.append(FUNCTION_WRAPPER)
    if "arguments" in payload:
        arguments = payload["arguments"]
    elif "parameters" in payload:
        arguments = payload["parameters"]
        repairs.append(PARAMETERS_KEY)
    else:
        arguments = {}
        repairs.append(MISSING_ARGUMENTS)
    if arguments is None:
        arguments = {}
        repairs.append(MISSING_ARGUMENTS)
    if isinstance(arguments, str):
        stripped = arguments.strip()
        try:
            decoded = json.loads(stripped) if stripped else {}
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            arguments = decoded
            repairs.append(ARGUMENTS_AS_STRING if stripped else MISSING_ARGUMENTS)
        else:
            repairs.append(UNPARSED_ARGUMENTS)
    elif not isinstance(arguments, dict):
        arguments = json.dumps(arguments, ensure_ascii=False)
        repairs.append(UNPARSED_ARGUMENTS)
    return ToolCall(call_id=call_id, name=payload["name"], arguments=arguments)


def _unique(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
