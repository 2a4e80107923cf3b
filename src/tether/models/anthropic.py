"""Anthropic's Messages API (`POST /v1/messages`): Claude models, or any server that speaks that API.

```python
from tether.models.anthropic import AnthropicModel

model = AnthropicModel("claude-haiku-4-5")  # ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL
response = await model.request([UserMessage(content="Hello")])
await model.aclose()
```

tether's conversation is translated to the API's shape here: system messages become the top-level
`system` field; an assistant turn is its text and `tool_use` blocks; tool results become `tool_result`
blocks of the next user turn, several results (and any text that follows them) merged into one turn,
because the API requires roles to alternate and every `tool_use` to be answered in the very next
message. Answers come back as text and `tool_use` blocks, streamed (server-sent events) when `on_token`
is given. Every failure becomes one `ModelError` subclass whose message names the endpoint and what to
do, with the retry intent (`retryable`, `retry_after`) as data.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

import httpx

from ..exceptions import (
    ConfigError,
    ModelAuthError,
    ModelError,
    ModelNotFoundError,
    ModelRateLimited,
    ModelResponseError,
    ModelServerError,
)
from ._base import Model, ModelSettings, TokenCallback
from ._http import (
    Answer,
    HTTPEndpoint,
    Reply,
    Wording,
    bounded,
    checked_base_url,
    count,
    load_json,
    redact,
    shape_error,
    tool_call,
)
from ._messages import (
    AssistantMessage,
    Message,
    ModelResponse,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from ._parse import UNPARSED_ARGUMENTS

__all__ = ["API_VERSION", "DEFAULT_BASE_URL", "AnthropicModel"]

DEFAULT_BASE_URL = "https://api.anthropic.com"
"""Where `AnthropicModel` sends requests when neither `base_url` nor `ANTHROPIC_BASE_URL` says otherwise."""

API_VERSION = "2023-06-01"
"""The `anthropic-version` header: the version of the Messages API this module speaks."""

_API = "the Messages API"

_WORDING = Wording(
    peer="the API",
    faster="a faster model",
    lost="check the network",
    failed="retry later",
    local_connect="is the server running on this machine? start it, or fix base_url (ANTHROPIC_BASE_URL)",
    remote_connect="check base_url (ANTHROPIC_BASE_URL), DNS, the network and proxy settings",
)

_INPUT_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")

# How the API words a request that does not fit the model's context window (HTTP 400,
# invalid_request_error): "prompt is too long: N tokens > M maximum", "input length and `max_tokens`
# exceed context limit: ...".
_CONTEXT_PHRASES = ("prompt is too long", "exceed context limit", "context window", "context length")

# A tool_use block's input must be an object. Arguments the model wrote that were not a JSON object are
# sent back under this key, so that the model sees what it wrote next to the error its tool result holds.
_UNPARSED_KEY = "unparsed_arguments"

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}


class AnthropicModel(Model):
    """A model behind Anthropic's Messages API.

    One `httpx.AsyncClient` per instance, created on first use (so constructing a model does no I/O) and
    closed by `aclose()`. A client passed in `http_client` belongs to the caller and is not closed.

    Args:
        model: the model name the API knows (`claude-haiku-4-5`, `claude-sonnet-4-5`...).
        base_url: the API root (`https://api.anthropic.com`); `/v1/messages` is appended (only
            `/messages` when it already ends in `/v1`). Defaults to `ANTHROPIC_BASE_URL`, else
            `DEFAULT_BASE_URL`.
        api_key: sent as `x-api-key`; defaults to the `ANTHROPIC_API_KEY` environment variable, and no
            header is sent when neither is set.
        api_version: the `anthropic-version` header.
        timeout_s: the longest the server may stay silent (connecting, or between two events of a
            streamed answer) before `ModelTimeout`; `None` bounds only the whole call, by
            `ModelSettings.timeout_s`.
        headers: extra HTTP headers sent with every request (`anthropic-beta`, gateway routing...).
        http_client: an `httpx.AsyncClient` to use instead of creating one.

    Raises:
        ConfigError: when `base_url` is not an `http://` or `https://` URL, or `timeout_s` is not positive.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_version: str = API_VERSION,
        timeout_s: float | None = None,
        headers: Mapping[str, str] | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        if not model:
            raise ConfigError("AnthropicModel needs a model name, such as 'claude-haiku-4-5'")
        if base_url is None:
            base_url = os.environ.get("ANTHROPIC_BASE_URL") or DEFAULT_BASE_URL
        self._model = model
        self._base_url = checked_base_url(base_url, advice=f"pass the API root, such as {DEFAULT_BASE_URL!r}")
        self._url = self._base_url + ("/messages" if self._base_url.endswith("/v1") else "/v1/messages")
        self._api_key = api_key if api_key is not None else os.environ.get("ANTHROPIC_API_KEY") or None
        self._api_version = api_version
        self._headers = dict(headers or {})
        self._http = HTTPEndpoint(
            self._url, wording=_WORDING, secret=self._api_key, timeout_s=timeout_s, http_client=http_client
        )

    def __repr__(self) -> str:
        # the key stays out of reprs, which end up in logs and tracebacks
        return f"AnthropicModel({self._model!r}, base_url={self._base_url!r})"

    @property
    def name(self) -> str:
        """`anthropic:<model>@<base_url>`, recorded in the journal with every response."""
        return f"anthropic:{self._model}@{self._base_url}"

    @property
    def model(self) -> str:
        """The model name sent to the API."""
        return self._model

    @property
    def base_url(self) -> str:
        """The API root, without a trailing slash."""
        return self._base_url

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        settings: ModelSettings = ModelSettings(),  # noqa: B008 - frozen dataclass, safe as a default
        on_token: TokenCallback | None = None,
    ) -> ModelResponse:
        """Send the conversation to `/v1/messages` and return the answer.

        Streams (server-sent events) when `on_token` is given, so text reaches it as it is generated.

        Args:
            messages: the conversation so far.
            tools: the tools the model may call (`settings.tool_choice` says whether it must).
            settings: length, temperature (0 to 1 for this API) and the whole call's deadline. The API
                has no sampling seed, so `settings.seed` is not sent.
            on_token: called with each piece of text as it arrives.

        Returns:
            The answer, with tool-call arguments as parsed JSON (a string when a streamed call's JSON did
            not parse, with `unparsed_arguments` in `repairs`), the tokens used (`input_tokens` includes
            prompt-cache reads and writes; `cached_tokens` is the reads), and `finish_reason`
            `stop`, `tool_calls`, `length` or what the API said.

        Raises:
            ConfigError: `settings.temperature` is outside 0 to 1.
            ModelUnreachable: no connection, or it dropped (retryable).
            ModelTimeout: no answer within `settings.timeout_s`, or silence past `timeout_s` (retryable).
            ModelAuthError: 401/403.
            ModelNotFoundError: 404.
            ModelRateLimited: 429, with `retry_after` when the API said.
            ModelServerError: 5xx, including 529 overloaded (retryable, except 501 and 505).
            ModelResponseError: the answer was not valid JSON, was cut off, or had an unexpected shape.
            ModelError: any other 4xx: a request the API will not take, such as one over the model's
                context window (the message then says "does not fit the context window").
        """
        if not 0.0 <= settings.temperature <= 1.0:
            raise ConfigError(
                f"the Messages API takes a temperature from 0 to 1; got {settings.temperature!r} "
                "(set ModelSettings.temperature within that range)"
            )
        body = self._request_body(messages, tools, settings, stream=on_token is not None)
        started = time.perf_counter()
        with self._http.deadline(settings.timeout_s):
            answer = await self._exchange(body, settings, on_token)
        return answer.response(model=self.name, duration_s=time.perf_counter() - started)

    async def aclose(self) -> None:
        """Close the HTTP client this model created (not one passed in `http_client`)."""
        await self._http.aclose()

    # -- the exchange ------------------------------------------------------------------------------

    async def _exchange(
        self, body: dict[str, Any], settings: ModelSettings, on_token: TokenCallback | None
    ) -> Answer:
        async with self._http.post(
            body, headers=self._request_headers(), timeout_s=settings.timeout_s
        ) as reply:
            if reply.response.status_code >= 400:
                self._raise_for_status(reply.response, await reply.read())
            if on_token is not None and reply.is_event_stream:
                return await self._read_stream(reply, on_token)
            answer = self._parse_message(load_json(await reply.read(), self._url, api=_API))
            if on_token is not None and answer.text:
                # the server ignored `stream`: the caller still gets the text, all at once
                on_token(answer.text)
            return answer

    async def _read_stream(self, reply: Reply, on_token: TokenCallback) -> Answer:
        stream = _StreamAssembler(self._url, self._error_from_event)
        await reply.read_events(lambda data: _emit(on_token, stream.add_event(data)))
        return stream.answer()

    # -- building the request ----------------------------------------------------------------------

    def _request_headers(self) -> dict[str, str]:
        headers = {"accept": "application/json", "anthropic-version": self._api_version, **self._headers}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        return headers

    def _request_body(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        settings: ModelSettings,
        *,
        stream: bool,
    ) -> dict[str, Any]:
        system, turns = _wire_messages(messages)
        body: dict[str, Any] = {
            "model": self._model,
            "max_tokens": settings.max_tokens,
            "messages": turns,
            "temperature": settings.temperature,
        }
        if system:
            body["system"] = system
        if tools:
            body["tools"] = [_wire_tool(t) for t in tools]
            # `none` keeps the tools in the prompt (the provider's prompt cache still matches) but lets
            # the model only answer in text; tool_choice is sent only with tools, as the API requires
            body["tool_choice"] = _tool_choice(settings)
        if stream:
            body["stream"] = True
        return body

    # -- reading the answer ------------------------------------------------------------------------

    def _parse_message(self, data: Any) -> Answer:
        if not isinstance(data, dict):
            _shape_error(self._url, f"the body is a JSON {type(data).__name__}, not an object")
        if data.get("type") == "error":
            raise self._error_from_event(data.get("error"))
        content = data.get("content")
        if not isinstance(content, list):
            _shape_error(self._url, "content is not a list of blocks")
        text: list[str] = []
        calls: list[ToolCall] = []
        repairs: list[str] = []
        for position, block in enumerate(content):
            if not isinstance(block, dict):
                _shape_error(self._url, f"content[{position}] is not an object")
            kind = block.get("type")
            if kind == "text":
                if not isinstance(block.get("text"), str):
                    _shape_error(self._url, f"content[{position}] is a text block without text")
                text.append(block["text"])
            elif kind == "tool_use":
                if not isinstance(block.get("name"), str) or not block["name"]:
                    _shape_error(self._url, f"content[{position}] is a tool_use block without a name")
                call, repaired = _tool_call(block.get("id"), block["name"], block.get("input"))
                calls.append(call)
                repairs += repaired
            # other blocks (thinking, redacted_thinking, server tool results) carry nothing tether uses
        return Answer(
            text="".join(text),
            tool_calls=tuple(calls),
            usage=_usage(data.get("usage")),
            finish_reason=_finish_reason(data.get("stop_reason"), bool(calls)),
            repairs=tuple(dict.fromkeys(repairs)),
        )

    # -- errors ------------------------------------------------------------------------------------

    def _raise_for_status(self, response: httpx.Response, raw: bytes) -> NoReturn:
        status = response.status_code
        kind, detail = _error_fields(raw, secret=self._api_key)
        said = f"HTTP {status}" + (f" {kind}" if kind else "") + (f": {detail}" if detail else "")
        url = self._url
        if status == 401:
            raise ModelAuthError(
                f"{url} rejected the API key ({said}); set ANTHROPIC_API_KEY or pass api_key= "
                "to AnthropicModel"
            )
        if status == 403:
            raise ModelAuthError(
                f"{url} refused this key access to model {self._model!r} ({said}); check the key's "
                "workspace and permissions"
            )
        if status == 404:
            raise ModelNotFoundError(
                f"{url} has no model {self._model!r} or no such path ({said}); check the model name, and "
                "that base_url is the API root (without /v1/messages)"
            )
        if status in (400, 413) and any(phrase in detail.lower() for phrase in _CONTEXT_PHRASES):
            # the class OpenAICompatModel raises for the same refusal; the words "context window" and
            # the API's own "prompt is too long" let fallback chains tell it from other refusals
            raise ModelError(
                f"the conversation does not fit the context window of {self._model!r} ({said}); prune "
                "old turns, ask for fewer max_tokens, or use a model with a longer context"
            )
        error = self._http.status_error(response, said)
        if error is not None:
            raise error
        if status == 413:
            raise ModelError(f"{url} refused a request this large ({said}); send less (shorter tool results)")
        raise ModelError(f"{url} refused the request ({said}); fix the request or the model's settings")

    def _error_from_event(self, error: Any) -> ModelError:
        """The error the API reports in a 200 answer (an `error` event in mid-stream)."""
        kind = error.get("type") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        detail = bounded(redact(str(message or kind or "no detail"), self._api_key))
        said = f"{kind}: {detail}" if kind else detail
        if kind == "rate_limit_error":
            return ModelRateLimited(f"{self._url} is rate limiting ({said}); slow down and retry")
        if kind == "invalid_request_error":
            return ModelError(f"{self._url} refused the request in mid-answer ({said}); fix the request")
        return ModelServerError(f"{self._url} failed in mid-answer ({said}); retry")


# -- wire format -----------------------------------------------------------------------------------


def _wire_messages(messages: Sequence[Message]) -> tuple[str, list[dict[str, Any]]]:
    """tether's conversation in the Messages API's shape: the system text and the alternating turns.

    System messages are joined into the top-level system text. Consecutive messages of one role are
    merged into one turn (tool results first, as the API requires, then any text). Blank text is
    left out, since the API rejects empty text blocks; a turn with nothing left in it is dropped, and
    the turns around it merge.
    """
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            if message.content.strip():
                system.append(message.content)
            continue
        if isinstance(message, UserMessage):
            role, blocks = "user", _text_blocks(message.content)
        elif isinstance(message, AssistantMessage):
            role = "assistant"
            blocks = _text_blocks(message.content) + [_wire_tool_use(c) for c in message.tool_calls]
        elif isinstance(message, ToolResultMessage):
            role = "user"
            blocks = [
                {
                    "type": "tool_result",
                    "tool_use_id": message.call_id,
                    "content": message.content,
                    **({"is_error": True} if message.is_error else {}),
                }
            ]
        else:
            raise TypeError(f"cannot send a {type(message).__name__} to the Messages API")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        if turn["role"] == "user":
            # tool results must open a user turn; the sort is stable, so each kind keeps its order
            turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    return "\n\n".join(system), turns


def _text_blocks(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text}] if text.strip() else []


def _wire_tool_use(call: ToolCall) -> dict[str, Any]:
    arguments = call.arguments
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            parsed = None
        arguments = parsed if isinstance(parsed, dict) else {_UNPARSED_KEY: arguments}
    return {"type": "tool_use", "id": call.call_id, "name": call.name, "input": arguments}


def _wire_tool(tool: ToolDefinition) -> dict[str, Any]:
    wire: dict[str, Any] = {"name": tool.name, "input_schema": tool.parameters}
    if tool.description:
        wire["description"] = tool.description
    return wire


def _tool_choice(settings: ModelSettings) -> dict[str, Any]:
    if settings.tool_choice == "none":
        return {"type": "none"}
    if settings.tool_choice == "required":
        allowed = settings.allowed_tools
        if allowed and len(allowed) == 1:
            return {"type": "tool", "name": allowed[0]}
        # the API cannot narrow `any` to a subset; the loop checks the call it gets
        return {"type": "any"}
    return {"type": "auto"}


def _tool_call(call_id: Any, name: str, arguments: Any) -> tuple[ToolCall, list[str]]:
    """One call from a tool_use block, and the repair to record when its arguments are kept as text."""
    call = tool_call(call_id, name, arguments, id_prefix="toolu_")
    return call, [UNPARSED_ARGUMENTS] if isinstance(call.arguments, str) else []


def _usage(raw: Any, base: Usage | None = None) -> Usage:
    """Usage from the API's fields, over `base` (a stream reports it in two parts).

    The API's `input_tokens` leaves out prompt-cache reads and writes; tether's includes them, with the
    reads also in `cached_tokens`, so that a price table charges each at its rate.
    """
    base = base or Usage()
    if not isinstance(raw, dict):
        return base
    fresh = count(raw.get("input_tokens"))
    written = count(raw.get("cache_creation_input_tokens"))
    read = count(raw.get("cache_read_input_tokens"))
    has_input = any(k in raw for k in _INPUT_FIELDS)
    return Usage(
        input_tokens=fresh + written + read if has_input else base.input_tokens,
        output_tokens=count(raw["output_tokens"]) if "output_tokens" in raw else base.output_tokens,
        cached_tokens=read if has_input else base.cached_tokens,
    )


def _finish_reason(raw: Any, has_calls: bool) -> str:
    if isinstance(raw, str) and raw:
        return _FINISH_REASONS.get(raw, raw)
    return "tool_calls" if has_calls else "stop"


def _shape_error(url: str, what: str) -> NoReturn:
    shape_error(url, what, api=_API)


def _error_fields(raw: bytes, *, secret: str | None) -> tuple[str, str]:
    """The API's error type and message (`{"type": "error", "error": {"type", "message"}}`), bounded."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    kind = ""
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            kind = str(error.get("type") or "")
            text = str(error.get("message") or "")
        elif isinstance(error, str):
            text = error
    return kind, bounded(redact(text, secret))


def _emit(on_token: TokenCallback, text: str) -> None:
    if text:
        on_token(text)


# -- streaming -------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Block:
    kind: str
    call_id: str = ""
    name: str = ""
    parts: list[str] = dataclasses.field(default_factory=list)


class _StreamAssembler:
    """Builds one answer from the stream's events: message_start, content_block_start/delta/stop (one
    block at a time, by index), message_delta (the stop reason and final usage), message_stop."""

    def __init__(self, url: str, error_from_event: Callable[[Any], ModelError]) -> None:
        self._url = url
        self._error_from_event = error_from_event
        self._blocks: dict[int, _Block] = {}
        self._usage = Usage()
        self._stop_reason: str | None = None
        self._stopped = False

    def add_event(self, data: str) -> str:
        """Take one event's data in; return the text it adds."""
        event = load_json(data.encode(), self._url, api=_API, streamed=True)
        if not isinstance(event, dict):
            _shape_error(self._url, f"a stream event is a JSON {type(event).__name__}, not an object")
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message")
            if not isinstance(message, dict):
                _shape_error(self._url, "message_start has no message")
            self._usage = _usage(message.get("usage"), self._usage)
        elif kind == "content_block_start":
            return self._start_block(event)
        elif kind == "content_block_delta":
            return self._add_delta(event)
        elif kind == "message_delta":
            delta = event.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                self._stop_reason = delta["stop_reason"]
            # output_tokens here is the running total, not an increment
            self._usage = _usage(event.get("usage"), self._usage)
        elif kind == "message_stop":
            self._stopped = True
        elif kind == "error":
            raise self._error_from_event(event.get("error"))
        # ping, content_block_stop, and event types added to the API later carry nothing needed here
        return ""

    def _start_block(self, event: dict[str, Any]) -> str:
        index, block = event.get("index"), event.get("content_block")
        if not isinstance(index, int) or not isinstance(block, dict):
            _shape_error(self._url, "content_block_start has no index or content_block")
        kind = str(block.get("type"))
        if kind == "tool_use":
            if not isinstance(block.get("name"), str) or not block["name"]:
                _shape_error(self._url, f"streamed tool_use block {index} has no name")
            started = _Block(kind, call_id=str(block.get("id") or ""), name=block["name"])
            if isinstance(block.get("input"), dict) and block["input"]:
                started.parts.append(json.dumps(block["input"]))
            self._blocks[index] = started
            return ""
        self._blocks[index] = _Block(kind)
        if kind == "text" and isinstance(block.get("text"), str):
            self._blocks[index].parts.append(block["text"])
            return block["text"]
        return ""

    def _add_delta(self, event: dict[str, Any]) -> str:
        index, delta = event.get("index"), event.get("delta")
        block = self._blocks.get(index) if isinstance(index, int) else None
        if block is None or not isinstance(delta, dict):
            _shape_error(self._url, f"content_block_delta for block {index!r}, which never started")
        kind = delta.get("type")
        if kind == "text_delta":
            if block.kind != "text" or not isinstance(delta.get("text"), str):
                _shape_error(self._url, f"a text_delta for {block.kind} block {index}")
            block.parts.append(delta["text"])
            return str(delta["text"])
        if kind == "input_json_delta":
            if block.kind != "tool_use" or not isinstance(delta.get("partial_json"), str):
                _shape_error(self._url, f"an input_json_delta for {block.kind} block {index}")
            block.parts.append(delta["partial_json"])
        # thinking, signature and citation deltas carry nothing tether uses
        return ""

    def answer(self) -> Answer:
        if not self._stopped:
            raise ModelResponseError(
                f"{self._url} ended the stream before message_stop; the answer is incomplete; retry",
                retryable=True,
            )
        text: list[str] = []
        calls: list[ToolCall] = []
        repairs: list[str] = []
        for index in sorted(self._blocks):
            block = self._blocks[index]
            if block.kind == "text":
                text.append("".join(block.parts))
            elif block.kind == "tool_use":
                call, repaired = _tool_call(block.call_id, block.name, "".join(block.parts))
                calls.append(call)
                repairs += repaired
        return Answer(
            text="".join(text),
            tool_calls=tuple(calls),
            usage=self._usage,
            finish_reason=_finish_reason(self._stop_reason, bool(calls)),
            repairs=tuple(dict.fromkeys(repairs)),
        )
