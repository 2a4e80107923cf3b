"""A local HTTP server that follows Anthropic's documented Messages API wire format (it is not Anthropic's).

It serves `POST /v1/messages` on 127.0.0.1 with scripted answers and checks each request the way the
documented API does — required headers, the API key, known fields only, roles that alternate starting with
the user, non-empty text, every `tool_use` answered by a `tool_result` in the next message and every
`tool_result` answering a `tool_use` of the message before, tool results first in their turn, tools
defined whenever the conversation holds tool blocks, `tool_choice` naming a defined tool — answering a
request that breaks a rule with the API's error shape (HTTP 400 `invalid_request_error`, 401
`authentication_error`...) instead of the next scripted answer. Where the API is lenient (recent versions
combine consecutive turns of one role rather than reject them), the server keeps the strict rule, so a
client that passes here does not depend on that leniency. A client that passes against it speaks the
documented format; it proves nothing about how a real Claude model answers.

An answer is scripted once and sent in whichever form the request asks for: one JSON message, or
(`"stream": true`) server-sent events `message_start`, `content_block_start`, `ping`,
`content_block_delta` (`text_delta`, `input_json_delta`), `content_block_stop`, `message_delta`,
`message_stop`. Errors, broken streams, raw bodies and hangs can be scripted too.

```python
with AnthropicServer(api_key="test-key") as server:
    server.reply_tool_use("get_weather", {"city": "Paris"})
    server.reply_text("It is sunny in Paris.")
    agent = Agent("weather", tools=[get_weather], model=f"anthropic:claude-test@{server.base_url}")
```
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._http_server import ScriptedHTTPServer, ScriptedReply

__all__ = ["AnthropicServer", "ReceivedRequest"]

_TOP_LEVEL = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "stream",
        "tools",
        "tool_choice",
        "metadata",
        "thinking",
        "service_tier",
    }
)
_TOOL_KEYS = frozenset({"name", "description", "input_schema", "cache_control", "type"})
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_TOOL_USE_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_CHOICES = ("auto", "any", "tool", "none")


@dataclass(frozen=True, kw_only=True)
class ReceivedRequest:
    """One request the server received.

    Attributes:
        method: `POST`, `GET`...
        path: the request path.
        headers: the headers, names lower-cased.
        body: the JSON body (None when it was not JSON).
        rejected: the error the server answered with instead of a scripted reply, or None.
    """

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    rejected: str | None = None


@dataclass(frozen=True, kw_only=True)
class _Answer:
    text: str = ""
    tool_uses: tuple[tuple[str, str, dict[str, Any] | str], ...] = ()
    stop_reason: str | None = None
    usage: Mapping[str, int] | None = None
    cut_stream_after: int | None = None
    stream_error: tuple[str, str] | None = None


_Reply = _Answer | ScriptedReply


class AnthropicServer(ScriptedHTTPServer[_Answer]):
    """A Messages API server on 127.0.0.1 with scripted answers, first in first out.

    Args:
        api_key: the only `x-api-key` it accepts (None: any key, or none).
        models: the model names it serves (None: any); another name gets 404 `not_found_error`.
        context_window: tokens (estimated at 4 characters each) a request's input plus `max_tokens` may
            hold; a larger request gets the API's "prompt is too long" error. None: no limit.

    Attributes:
        requests: every request received, in order, with the reason it was rejected if it was.
    """

    def __init__(
        self,
        *,
        api_key: str | None = "test-key",
        models: Sequence[str] | None = None,
        context_window: int | None = None,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.models = tuple(models) if models is not None else None
        self.context_window = context_window
        self.requests: list[ReceivedRequest] = []
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        """The API root to give a client (`/v1/messages` is under it)."""
        return f"http://127.0.0.1:{self.port}"

    # -- scripting ---------------------------------------------------------------------------------

    def reply_text(
        self, text: str, *, stop_reason: str = "end_turn", usage: Mapping[str, int] | None = None
    ) -> None:
        """Answer the next request with text."""
        self._queue(_Answer(text=text, stop_reason=stop_reason, usage=usage))

    def reply_tool_use(
        self,
        name: str,
        input: Mapping[str, Any] | str,
        *,
        text: str = "",
        call_id: str | None = None,
        usage: Mapping[str, int] | None = None,
    ) -> None:
        """Answer the next request with one tool call (after `text`, if any).

        `input` as a string is sent as is: streamed as `input_json_delta` pieces (JSON the model got
        wrong, when it does not parse) or, unstreamed, as a string where the API sends an object.
        """
        self.reply(text=text, tool_uses=[(name, input, call_id)], usage=usage)

    def reply(
        self,
        *,
        text: str = "",
        tool_uses: Sequence[
            tuple[str, Mapping[str, Any] | str] | tuple[str, Mapping[str, Any] | str, str | None]
        ] = (),
        stop_reason: str | None = None,
        usage: Mapping[str, int] | None = None,
        cut_stream_after: int | None = None,
        stream_error: tuple[str, str] | None = None,
    ) -> None:
        """Answer the next request with text and tool calls.

        Args:
            text: the text block (none when empty).
            tool_uses: `(name, input)` or `(name, input, id)` per call.
            stop_reason: default `tool_use` with calls, else `end_turn`.
            usage: the API's usage fields (`input_tokens`, `output_tokens`, `cache_read_input_tokens`,
                `cache_creation_input_tokens`); default: estimated from the request and the answer.
            cut_stream_after: when streamed, close the connection after this many events (no
                `message_stop`).
            stream_error: when streamed, an `error` event `(type, message)` right after `message_start`.
        """
        uses = []
        for use in tool_uses:
            name, input = use[0], use[1]
            call_id = use[2] if len(use) > 2 else None
            uses.append(
                (
                    call_id or f"toolu_{secrets.token_hex(8)}",
                    name,
                    input if isinstance(input, str) else dict(input),
                )
            )
        self._queue(
            _Answer(
                text=text,
                tool_uses=tuple(uses),
                stop_reason=stop_reason,
                usage=usage,
                cut_stream_after=cut_stream_after,
                stream_error=stream_error,
            )
        )

    def reply_error(
        self, status: int, error_type: str, message: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        """Answer the next request with the API's error shape (`{"type": "error", "error": {...}}`)."""
        body = {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": _request_id(),
        }
        self._queue(
            ScriptedReply(
                status=status,
                headers={"content-type": "application/json", **(headers or {})},
                body=json.dumps(body).encode(),
            )
        )

    def reply_events(self, events: Sequence[Mapping[str, Any] | str]) -> None:
        """Stream `events` as they are: a mapping is sent as `event: <type>` + `data: <json>`, a string as
        the raw text of one event (to send what no valid stream holds)."""
        chunks = [_sse(e) if not isinstance(e, str) else e.encode() + b"\n\n" for e in events]
        self._queue(ScriptedReply(headers={"content-type": "text/event-stream"}, chunks=chunks))

    def _record(self, request: ReceivedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    # -- answering ---------------------------------------------------------------------------------

    def _reply(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> ScriptedReply:
        reply, stream = self._respond(method, path, headers, body)
        if isinstance(reply, _Answer):
            request = json.loads(body)
            if stream:
                events = list(self._events(reply, request))
                if reply.cut_stream_after is not None:
                    events = events[: reply.cut_stream_after]
                reply = ScriptedReply(headers={"content-type": "text/event-stream"}, chunks=events)
            else:
                message = json.dumps(self._message(reply, request)).encode()
                reply = ScriptedReply(headers={"content-type": "application/json"}, body=message)
        return dataclasses.replace(reply, headers={"request-id": _request_id(), **reply.headers})

    def _respond(self, method: str, path: str, headers: Mapping[str, str], raw: bytes) -> tuple[_Reply, bool]:
        """The reply to one request, and whether the request was streamed."""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        problem = self._check(method, path, headers, raw, body)
        self._record(
            ReceivedRequest(
                method=method, path=path, headers=headers, body=body, rejected=problem and problem[2]
            )
        )
        if problem is not None:
            status, kind, message = problem
            return _error(status, kind, message), False
        stream = bool(body.get("stream"))
        reply = self._next()
        if reply is None:
            return _error(500, "api_error", "the test scripted no reply for this request"), False
        return reply, stream

    def _check(
        self, method: str, path: str, headers: Mapping[str, str], raw: bytes, body: Any
    ) -> tuple[int, str, str] | None:
        if path.split("?")[0] != "/v1/messages":
            return 404, "not_found_error", f"Not Found: {path}"
        if method != "POST":
            return 405, "invalid_request_error", f"Method {method} not allowed; use POST"
        if self.api_key is not None and headers.get("x-api-key") != self.api_key:
            if "x-api-key" not in headers:
                return 401, "authentication_error", "x-api-key header is required"
            return 401, "authentication_error", "invalid x-api-key"
        if not headers.get("anthropic-version"):
            return 400, "invalid_request_error", "anthropic-version: header is required"
        if not isinstance(body, dict):
            return 400, "invalid_request_error", "the request body is not a JSON object"
        problem = _check_body(body)
        if problem is not None:
            return 400, "invalid_request_error", problem
        if self.models is not None and body["model"] not in self.models:
            return 404, "not_found_error", f"model: {body['model']}"
        if self.context_window is not None:
            prompt = _estimate(json.dumps([body.get("system"), body["messages"], body.get("tools")]))
            window, wanted = self.context_window, body["max_tokens"]
            if prompt > window:
                return 400, "invalid_request_error", f"prompt is too long: {prompt} tokens > {window} maximum"
            if prompt + wanted > window:
                return (
                    400,
                    "invalid_request_error",
                    f"input length and `max_tokens` exceed context limit: {prompt} + {wanted} > {window}, "
                    "decrease input length or `max_tokens` and try again",
                )
        return None

    def _message(self, answer: _Answer, request: Mapping[str, Any]) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if answer.text:
            content.append({"type": "text", "text": answer.text})
        for call_id, name, input in answer.tool_uses:
            content.append({"type": "tool_use", "id": call_id, "name": name, "input": input})
        stop_reason = answer.stop_reason or ("tool_use" if answer.tool_uses else "end_turn")
        return {
            "id": f"msg_{next(self._ids):04d}{secrets.token_hex(6)}",
            "type": "message",
            "role": "assistant",
            "model": request.get("model"),
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": _usage(answer, request),
        }

    def _events(self, answer: _Answer, request: Mapping[str, Any]) -> Iterator[bytes]:
        message = self._message(answer, request)
        usage = message["usage"]
        start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
        yield _sse({"type": "message_start", "message": start})
        if answer.stream_error is not None:
            kind, text = answer.stream_error
            yield _sse({"type": "error", "error": {"type": kind, "message": text}})
            return
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                yield _sse(
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    }
                )
                if index == 0:
                    yield _sse({"type": "ping"})
                for piece in re.findall(r"\S+\s*|\s+", block["text"]):
                    yield _sse(
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "text_delta", "text": piece},
                        }
                    )
            else:
                opened = {**block, "input": {}}
                yield _sse({"type": "content_block_start", "index": index, "content_block": opened})
                raw = block["input"] if isinstance(block["input"], str) else json.dumps(block["input"])
                for at in range(0, len(raw), 8):
                    delta = {"type": "input_json_delta", "partial_json": raw[at : at + 8]}
                    yield _sse({"type": "content_block_delta", "index": index, "delta": delta})
            yield _sse({"type": "content_block_stop", "index": index})
        delta = {"stop_reason": message["stop_reason"], "stop_sequence": None}
        yield _sse(
            {"type": "message_delta", "delta": delta, "usage": {"output_tokens": usage["output_tokens"]}}
        )
        yield _sse({"type": "message_stop"})


# -- checking a request as the documented API does -------------------------------------------------


def _check_body(body: Mapping[str, Any]) -> str | None:
    for key in body:
        if key not in _TOP_LEVEL:
            return f"{key}: Extra inputs are not permitted"
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if "max_tokens" not in body:
        return "max_tokens: Field required"
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        return f"max_tokens: Input should be a positive integer (got {max_tokens!r})"
    temperature = body.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature <= 1
    ):
        return f"temperature: Input should be a number from 0 to 1 (got {temperature!r})"
    if "stream" in body and not isinstance(body["stream"], bool):
        return "stream: Input should be a valid boolean"
    problem = _check_system(body.get("system"))
    if problem is not None:
        return problem
    tools, problem = _check_tools(body.get("tools"))
    if problem is not None:
        return problem
    problem = _check_tool_choice(body.get("tool_choice"), tools)
    if problem is not None:
        return problem
    return _check_messages(body.get("messages"), tools)


def _check_system(system: Any) -> str | None:
    if system is None or isinstance(system, str):
        return None
    if not isinstance(system, list):
        return "system: Input should be a valid string or a list of text blocks"
    for i, block in enumerate(system):
        if (
            not isinstance(block, dict)
            or block.get("type") != "text"
            or not isinstance(block.get("text"), str)
        ):
            return f"system.{i}: Input should be a text block"
    return None


def _check_tools(tools: Any) -> tuple[set[str] | None, str | None]:
    if tools is None:
        return None, None
    if not isinstance(tools, list):
        return None, "tools: Input should be a valid list"
    names: set[str] = set()
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            return None, f"tools.{i}: Input should be an object"
        extra = sorted(set(tool) - _TOOL_KEYS)
        if extra:
            return None, f"tools.{i}.{extra[0]}: Extra inputs are not permitted"
        name = tool.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            return None, f"tools.{i}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
        if name in names:
            return None, "tools: Tool names must be unique."
        names.add(name)
        if "description" in tool and not isinstance(tool["description"], str):
            return None, f"tools.{i}.description: Input should be a valid string"
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            return None, f"tools.{i}.input_schema: Field required"
        if schema.get("type") != "object":
            return None, f"tools.{i}.input_schema.type: Input should be 'object'"
    return names, None


def _check_tool_choice(choice: Any, tools: set[str] | None) -> str | None:
    if choice is None:
        return None
    if not isinstance(choice, dict) or choice.get("type") not in _CHOICES:
        expected = ", ".join(_CHOICES)
        return f"tool_choice: Input tag {choice!r} does not match any of the expected tags: {expected}"
    if choice["type"] in ("any", "tool") and not tools:
        return "tool_choice: tool_choice may only be specified while providing tools."
    if choice["type"] == "tool":
        name = choice.get("name")
        if not isinstance(name, str):
            return "tool_choice.tool.name: Field required"
        if name not in (tools or set()):
            return f"tool_choice.tool.name: Tool '{name}' not found in provided tools"
    extra = sorted(set(choice) - {"type", "name", "disable_parallel_tool_use"})
    if extra:
        return f"tool_choice.{extra[0]}: Extra inputs are not permitted"
    return None


def _check_messages(messages: Any, tools: set[str] | None) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    seen_ids: set[str] = set()
    previous_uses: list[str] = []
    previous_role: str | None = None
    has_tool_blocks = False
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            return f"{where}: Input should be an object"
        extra = sorted(set(message) - {"role", "content"})
        if extra:
            return f"{where}.{extra[0]}: Extra inputs are not permitted"
        role = message.get("role")
        if role == "system":
            return (
                f'{where}.role: Unexpected role "system". The Messages API accepts a top-level `system` '
                'parameter, not "system" as an input message role.'
            )
        if role not in ("user", "assistant"):
            return f"{where}.role: Input should be 'user' or 'assistant'"
        if i == 0 and role != "user":
            return f'{where}.role: the first message must use the "user" role'
        if role == previous_role:
            return (
                'messages: roles must alternate between "user" and "assistant", but found multiple '
                f'"{role}" roles in a row'
            )
        content = message.get("content")
        last = i == len(messages) - 1
        if isinstance(content, str):
            blocks: list[Any] = [{"type": "text", "text": content}]
        elif isinstance(content, list) and content:
            blocks = content
        else:
            return f"{where}.content: Input should be a non-empty string or list of content blocks"
        uses: list[str] = []
        answered: list[str] = []
        seen_other = False
        for j, block in enumerate(blocks):
            at = f"{where}.content.{j}"
            if not isinstance(block, dict):
                return f"{at}: Input should be an object"
            kind = block.get("type")
            if kind == "text":
                text = block.get("text")
                if not isinstance(text, str):
                    return f"{at}.text: Field required"
                if not text.strip() and not (last and role == "assistant"):
                    return f"{at}: text content blocks must contain non-whitespace text"
                seen_other = True
            elif kind == "tool_use":
                has_tool_blocks = True
                if role != "assistant":
                    return f"{at}: tool_use blocks may only appear in assistant messages"
                call_id, name = block.get("id"), block.get("name")
                if not isinstance(call_id, str) or not _TOOL_USE_ID.match(call_id):
                    return f"{at}.id: String should match pattern '^[a-zA-Z0-9_-]+$'"
                if call_id in seen_ids:
                    return f"{at}: `tool_use` ids must be unique; {call_id} is used twice"
                if not isinstance(name, str) or not name:
                    return f"{at}.name: Field required"
                if not isinstance(block.get("input"), dict):
                    return f"{at}.input: Input should be a valid dictionary"
                seen_ids.add(call_id)
                uses.append(call_id)
            elif kind == "tool_result":
                has_tool_blocks = True
                if role != "user":
                    return f"{at}: tool_result blocks may only appear in user messages"
                if seen_other:
                    return (
                        f"{where}.content: tool_result blocks must come first in a user message, before text"
                    )
                use_id = block.get("tool_use_id")
                if not isinstance(use_id, str):
                    return f"{at}.tool_use_id: Field required"
                if use_id not in previous_uses:
                    return (
                        f"{at}: unexpected `tool_use_id` found in `tool_result` blocks: {use_id}. Each "
                        "`tool_result` block must have a corresponding `tool_use` block in the previous "
                        "message."
                    )
                if use_id in answered:
                    return f"{at}: more than one tool_result for tool_use_id {use_id}"
                answered.append(use_id)
                result = block.get("content")
                if result is not None and not isinstance(result, str | list):
                    return f"{at}.content: Input should be a valid string or list of content blocks"
                if "is_error" in block and not isinstance(block["is_error"], bool):
                    return f"{at}.is_error: Input should be a valid boolean"
            else:
                return f"{at}: Input tag {kind!r} found using 'type' does not match any of the expected tags"
        if previous_uses:
            missing = [u for u in previous_uses if u not in answered]
            if missing:
                return _unanswered(i, missing)
        previous_uses, previous_role = uses, role
    if previous_uses:
        return _unanswered(len(messages) - 1, previous_uses)
    if has_tool_blocks and not tools:
        return "Requests which include `tool_use` or `tool_result` blocks must define tools."
    return None


def _unanswered(index: int, ids: Sequence[str]) -> str:
    return (
        f"messages.{index}: `tool_use` ids were found without `tool_result` blocks immediately after: "
        f"{', '.join(ids)}. Each `tool_use` block must have a corresponding `tool_result` block in the "
        "next message."
    )


# -- wire helpers ----------------------------------------------------------------------------------


def _estimate(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _usage(answer: _Answer, request: Mapping[str, Any]) -> dict[str, int]:
    if answer.usage is not None:
        usage = {
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        usage.update(answer.usage)
        return usage
    prompt = json.dumps([request.get("system"), request.get("messages"), request.get("tools")])
    output = answer.text + "".join(i if isinstance(i, str) else json.dumps(i) for _, _, i in answer.tool_uses)
    return {
        "input_tokens": _estimate(prompt),
        "output_tokens": _estimate(output) if output else 1,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _sse(event: Mapping[str, Any]) -> bytes:
    return f"event: {event.get('type', 'message')}\ndata: {json.dumps(event)}\n\n".encode()


def _request_id() -> str:
    return f"req_{secrets.token_hex(12)}"


def _error(status: int, kind: str, message: str) -> ScriptedReply:
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": _request_id()}
    return ScriptedReply(
        status=status, headers={"content-type": "application/json"}, body=json.dumps(body).encode()
    )
