"""Any OpenAI-compatible chat-completions endpoint: OpenAI, vLLM, llama.cpp servers, Ollama, LiteLLM...

```python
from tether.models.openai_compat import OpenAICompatModel

model = OpenAICompatModel("qwen2.5-coder-0.5b", base_url="http://127.0.0.1:8080/v1")
response = await model.request([UserMessage(content="Hello")])
await model.aclose()
```

The wire format is the OpenAI one; what differs between servers is tolerated here rather than
configured: a server that returns a tool call as text (`<tool_call>{...}</tool_call>` or bare JSON, as
the stock `llama_cpp.server` does with Qwen models) has it parsed by `tether.models._parse`, and what
had to be fixed to read it is recorded in `ModelResponse.repairs`. Every failure becomes one `ModelError`
subclass whose message names the endpoint and what to do, with the retry intent (`retryable`,
`retry_after`) as data.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NoReturn

import httpx

from ..exceptions import ModelAuthError, ModelError, ModelNotFoundError, ModelResponseError, ModelServerError
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
from ._parse import parse_tool_calls

__all__ = ["OpenAICompatModel"]

_DEFAULT_BASE_URL = "http://127.0.0.1:8080/v1"

_API = "an OpenAI-compatible chat-completions API"

_WORDING = Wording(
    peer="the server",
    faster="a faster model or server",
    lost="check the server",
    failed="retry later or check the server's logs",
    local_connect=(
        "is the server running? start it with `python -m llama_cpp.server --model <file.gguf> "
        "--host {host} --port {port}`, or fix base_url"
    ),
    remote_connect="is the server running? check base_url, DNS, the network and proxy settings",
)

# The tag Qwen (and Hermes-style) chat templates use for a tool call written as text.
_TEXT_CALL_TAG = "<tool_call>"


class OpenAICompatModel(Model):
    """A model behind an OpenAI-compatible `/chat/completions` endpoint.

    One `httpx.AsyncClient` per instance, created on first use (so constructing a model does no I/O)
    and closed by `aclose()`. A client passed in `http_client` belongs to the caller and is not closed.

    Args:
        model: the model name the server knows (`gpt-4o-mini`, `qwen2.5-coder-0.5b`...).
        base_url: the API root, including its version prefix (`/v1`); `/chat/completions` is appended.
        api_key: sent as `Authorization: Bearer <key>`; defaults to the `OPENAI_API_KEY` environment
            variable, and no header is sent when neither is set (local servers need none).
        timeout_s: the longest the server may stay silent (connecting, or between two pieces of an
            answer) before `ModelTimeout`; `None` bounds only the whole call, by
            `ModelSettings.timeout_s`. Useful with streaming, where a long answer is fine but a stalled
            one is not.
        headers: extra HTTP headers sent with every request (organisation ids, gateway routing...).
        http_client: an `httpx.AsyncClient` to use instead of creating one (shared connection pools,
            proxies, custom TLS).

    Raises:
        ConfigError: when `base_url` is not an `http://` or `https://` URL.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str = _DEFAULT_BASE_URL,
        api_key: str | None = None,
        timeout_s: float | None = None,
        headers: Mapping[str, str] | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._model = model
        self._base_url = checked_base_url(base_url, advice=f"pass one such as {_DEFAULT_BASE_URL!r}")
        self._url = f"{self._base_url}/chat/completions"
        self._api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY") or None
        self._headers = dict(headers or {})
        self._http = HTTPEndpoint(
            self._url, wording=_WORDING, secret=self._api_key, timeout_s=timeout_s, http_client=http_client
        )

    def __repr__(self) -> str:
        # the key stays out of reprs, which end up in logs and tracebacks
        return f"OpenAICompatModel({self._model!r}, base_url={self._base_url!r})"

    @property
    def name(self) -> str:
        """`openai:<model>@<base_url>`, recorded in the journal with every response."""
        return f"openai:{self._model}@{self._base_url}"

    @property
    def model(self) -> str:
        """The model name sent to the server."""
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
        """Send the conversation to `/chat/completions` and return the answer.

        Streams (server-sent events) when `on_token` is given, so text reaches it as it is generated;
        a tool call the model writes as text is not passed to `on_token`.

        Args:
            messages: the conversation so far.
            tools: the tools the model may call; `settings.tool_choice` is sent only with tools.
            settings: sampling, length and the whole call's deadline (`timeout_s`).
            on_token: called with each piece of text as it arrives.

        Returns:
            The answer, with tool-call arguments parsed from JSON (a string when they were not valid
            JSON), the tokens used, and what had to be repaired to read it.

        Raises:
            ModelUnreachable: no connection, or it dropped (retryable).
            ModelTimeout: no answer within `settings.timeout_s`, or silence past `timeout_s` (retryable).
            ModelAuthError: 401/403.
            ModelNotFoundError: 404.
            ModelRateLimited: 429, with `retry_after` when the server said.
            ModelServerError: 5xx (retryable, except 501 and 505).
            ModelResponseError: the answer was not valid JSON, was cut off, or had an unexpected shape.
            ModelError: any other 4xx (a request the server will not take, such as one over its context).
        """
        body = self._request_body(messages, tools, settings, stream=on_token is not None)
        offered_tools = bool(tools) and settings.tool_choice != "none"
        started = time.perf_counter()
        with self._http.deadline(settings.timeout_s):
            answer = await self._exchange(body, settings, on_token, offered_tools)
        return answer.response(model=self.name, duration_s=time.perf_counter() - started)

    async def aclose(self) -> None:
        """Close the HTTP client this model created (not one passed in `http_client`)."""
        await self._http.aclose()

    # -- the exchange ------------------------------------------------------------------------------

    async def _exchange(
        self,
        body: dict[str, Any],
        settings: ModelSettings,
        on_token: TokenCallback | None,
        offered_tools: bool,
    ) -> Answer:
        async with self._http.post(
            body, headers=self._request_headers(), timeout_s=settings.timeout_s
        ) as reply:
            if reply.response.status_code >= 400:
                self._raise_for_status(reply.response, await reply.read())
            relay = _TokenRelay(on_token, watch_for_calls=offered_tools) if on_token is not None else None
            if relay is not None and reply.is_event_stream:
                answer = await self._read_stream(reply, relay)
            else:
                answer = self._parse_completion(load_json(await reply.read(), self._url, api=_API))
                if relay is not None:
                    # the server ignored `stream`: the caller still gets the text, all at once
                    relay.feed(answer.text)
            if offered_tools and not answer.tool_calls:
                answer = _with_text_calls(answer)
            if relay is not None:
                relay.finish(answer.text)
            return answer

    async def _read_stream(self, reply: Reply, relay: _TokenRelay) -> Answer:
        stream = _StreamAssembler(self._url, secret=self._api_key)
        await reply.read_events(lambda data: relay.feed(stream.add_event(data)))
        return stream.answer()

    # -- building the request ----------------------------------------------------------------------

    def _request_headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", **self._headers}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _request_body(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        settings: ModelSettings,
        *,
        stream: bool,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [_wire_message(m) for m in messages],
            "max_tokens": settings.max_tokens,
            "temperature": settings.temperature,
        }
        if settings.seed is not None:
            body["seed"] = settings.seed
        if tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in tools
            ]
            # sent only with tools: several servers reject a tool_choice that has nothing to choose
            allowed = settings.allowed_tools
            if settings.tool_choice == "required" and allowed and len(allowed) == 1:
                body["tool_choice"] = {"type": "function", "function": {"name": allowed[0]}}
            else:
                body["tool_choice"] = settings.tool_choice
        if stream:
            body["stream"] = True
            # without this, OpenAI and vLLM send no usage at all when streaming
            body["stream_options"] = {"include_usage": True}
        return body

    # -- reading the answer ------------------------------------------------------------------------

    def _parse_completion(self, data: Any) -> Answer:
        choice = _first_choice(data, self._url, secret=self._api_key)
        message = choice.get("message")
        if not isinstance(message, dict):
            _shape_error(self._url, "choices[0].message is missing")
        text = _text_content(message.get("content"), self._url)
        raw_calls = message.get("tool_calls") or []
        if not isinstance(raw_calls, list):
            _shape_error(self._url, "choices[0].message.tool_calls is not a list")
        calls: list[ToolCall] = []
        for position, raw in enumerate(raw_calls):
            function = raw.get("function") if isinstance(raw, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                _shape_error(self._url, f"tool_calls[{position}] has no function name")
            calls.append(
                tool_call(raw.get("id"), function["name"], function.get("arguments"), id_prefix="call_")
            )
        return Answer(
            text=text,
            tool_calls=tuple(calls),
            usage=_usage(data.get("usage")),
            finish_reason=_finish_reason(choice.get("finish_reason"), bool(calls)),
        )

    # -- errors ------------------------------------------------------------------------------------

    def _raise_for_status(self, response: httpx.Response, raw: bytes) -> NoReturn:
        status = response.status_code
        detail = _error_detail(raw, secret=self._api_key)
        said = f"HTTP {status}" + (f": {detail}" if detail else "")
        url = self._url
        if status in (401, 403):
            raise ModelAuthError(
                f"{url} rejected the credentials ({said}); set OPENAI_API_KEY or pass api_key= "
                "to OpenAICompatModel"
            )
        if status == 404:
            raise ModelNotFoundError(
                f"{url} has no model {self._model!r} or no such path ({said}); check the model name "
                "and that base_url includes the API prefix such as /v1"
            )
        error = self._http.status_error(response, said)
        if error is not None:
            raise error
        raise ModelError(f"{url} refused the request ({said}); fix the request or the server's settings")


# -- wire format -----------------------------------------------------------------------------------


def _wire_message(message: Message) -> dict[str, Any]:
    # `content` is never null: llama_cpp.server's chat templates fail on it (HTTP 500)
    if isinstance(message, SystemMessage | UserMessage):
        return {"role": message.role, "content": message.content}
    if isinstance(message, AssistantMessage):
        wire: dict[str, Any] = {"role": "assistant", "content": message.content}
        if message.tool_calls:
            wire["tool_calls"] = [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {
                        "name": call.name,
                        # a string here is arguments that were not valid JSON; send them back as given
                        "arguments": call.arguments
                        if isinstance(call.arguments, str)
                        else json.dumps(call.arguments, ensure_ascii=False),
                    },
                }
                for call in message.tool_calls
            ]
        return wire
    if isinstance(message, ToolResultMessage):
        return {"role": "tool", "tool_call_id": message.call_id, "content": message.content}
    raise TypeError(f"cannot send a {type(message).__name__} to an OpenAI-compatible endpoint")


def _with_text_calls(answer: Answer) -> Answer:
    """The answer with the tool calls the model wrote as text taken out of its text."""
    parsed = parse_tool_calls(answer.text)
    if not parsed.calls:
        return answer
    return dataclasses.replace(
        answer,
        text=parsed.text,
        tool_calls=parsed.calls,
        repairs=parsed.repairs,
        # the server saw only text and says `stop`; say what the answer is, as a server with native
        # tool calls would, so that callers need not care which kind answered
        finish_reason="tool_calls" if answer.finish_reason == "stop" else answer.finish_reason,
    )


def _shape_error(url: str, what: str) -> NoReturn:
    shape_error(url, what, api=_API)


def _first_choice(data: Any, url: str, *, secret: str | None) -> dict[str, Any]:
    if not isinstance(data, dict):
        _shape_error(url, f"the body is a JSON {type(data).__name__}, not an object")
    if "error" in data and "choices" not in data:
        detail = _error_detail(json.dumps(data).encode(), secret=secret)
        raise ModelServerError(f"{url} answered with an error: {detail}; retry, or check the server's logs")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        _shape_error(url, "no choices")
    return choices[0]


def _text_content(content: Any, url: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        # the content-parts form some gateways use: keep the text parts, in order
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    _shape_error(url, f"message content is a JSON {type(content).__name__}")


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    details = raw.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(
        input_tokens=count(raw.get("prompt_tokens")),
        output_tokens=count(raw.get("completion_tokens")),
        cached_tokens=count(cached),
    )


def _finish_reason(raw: Any, has_calls: bool) -> str:
    if isinstance(raw, str) and raw:
        return raw
    return "tool_calls" if has_calls else "stop"


def _error_detail(raw: bytes, *, secret: str | None) -> str:
    """The server's own error message, on one line and bounded, or "" when it said nothing."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        # OpenAI: {"error": {"message": ...}}; FastAPI (llama_cpp.server): {"detail": ...}
        error = data.get("error")
        found = (
            (error.get("message") if isinstance(error, dict) else error)
            or data.get("detail")
            or (data.get("message"))
        )
        if found:
            text = found if isinstance(found, str) else json.dumps(found)
    return bounded(redact(text, secret))


# -- streaming -------------------------------------------------------------------------------------


@dataclasses.dataclass
class _PartialCall:
    call_id: str = ""
    name: str = ""
    arguments: list[str] = dataclasses.field(default_factory=list)


class _StreamAssembler:
    """Builds one answer from `chat.completion.chunk` events."""

    def __init__(self, url: str, *, secret: str | None) -> None:
        self._secret = secret
        self._done = False
        self._url = url
        self._text: list[str] = []
        self._calls: dict[int, _PartialCall] = {}
        self._usage = Usage()
        self._finish_reason: str | None = None

    def add_event(self, data: str) -> str:
        """Take one event's data in; return the text it adds."""
        if data.strip() == "[DONE]":
            self._done = True
            return ""
        chunk = load_json(data.encode(), self._url, api=_API, streamed=True)
        if not isinstance(chunk, dict):
            _shape_error(self._url, f"a stream event is a JSON {type(chunk).__name__}, not an object")
        if "error" in chunk and not chunk.get("choices"):
            detail = _error_detail(json.dumps(chunk).encode(), secret=self._secret)
            raise ModelServerError(f"{self._url} failed in mid-answer: {detail}; retry")
        if isinstance(chunk.get("usage"), dict):
            # with include_usage the totals come in a last chunk that has no choices
            self._usage = _usage(chunk["usage"])
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            _shape_error(self._url, "a stream event's choices is not a list")
        added = ""
        for choice in choices[:1]:
            if not isinstance(choice, dict):
                _shape_error(self._url, "a stream event's choice is not an object")
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                _shape_error(self._url, "a stream event's delta is not an object")
            added = _text_content(delta.get("content"), self._url)
            self._text.append(added)
            for position, raw in enumerate(delta.get("tool_calls") or []):
                self._add_call_delta(position, raw)
            if choice.get("finish_reason"):
                self._finish_reason = str(choice["finish_reason"])
        return added

    def _add_call_delta(self, position: int, raw: Any) -> None:
        if not isinstance(raw, dict):
            _shape_error(self._url, "a tool-call delta is not an object")
        index = raw.get("index")
        # a server that omits `index` sends each call whole, in order
        partial = self._calls.setdefault(index if isinstance(index, int) else position, _PartialCall())
        if isinstance(raw.get("id"), str) and not partial.call_id:
            partial.call_id = raw["id"]
        function = raw.get("function") or {}
        if isinstance(function.get("name"), str) and not partial.name:
            partial.name = function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            partial.arguments.append(arguments)
        elif isinstance(arguments, dict):
            partial.arguments.append(json.dumps(arguments))

    def answer(self) -> Answer:
        if not self._done and self._finish_reason is None:
            raise ModelResponseError(
                f"{self._url} ended the stream before the answer was complete (no finish_reason, "
                "no [DONE]); retry",
                retryable=True,
            )
        calls: list[ToolCall] = []
        for index in sorted(self._calls):
            partial = self._calls[index]
            if not partial.name:
                _shape_error(self._url, f"streamed tool call {index} has no function name")
            calls.append(
                tool_call(partial.call_id, partial.name, "".join(partial.arguments), id_prefix="call_")
            )
        return Answer(
            text="".join(self._text),
            tool_calls=tuple(calls),
            usage=self._usage,
            finish_reason=_finish_reason(self._finish_reason, bool(calls)),
        )


class _TokenRelay:
    """Passes streamed text to `on_token`, except tool calls the model writes as text.

    Raw call markup is not for the user's eyes; the call is shown as one once parsed. When tools are
    offered, an answer that opens with `{`, `[` or a code fence may be a call written as JSON: it is held
    back whole and only its prose is passed on at the end (an answer that is really a code block then
    arrives at once rather than live). Otherwise text flows live up to a `<tool_call>` tag, and a tail
    that might begin that tag waits for the next piece.
    """

    def __init__(self, on_token: TokenCallback, *, watch_for_calls: bool) -> None:
        self._on_token = on_token
        self._state: Literal["opening", "live", "holding", "stopped"] = (
            "opening" if watch_for_calls else "live"
        )
        self._watch = watch_for_calls
        self._pending = ""

    def feed(self, piece: str) -> None:
        """Take the next piece of the answer's text."""
        if not piece or self._state in ("holding", "stopped"):
            return
        if not self._watch:
            self._on_token(piece)
            return
        text = self._pending + piece
        if self._state == "opening":
            start = text.lstrip()[:1]
            if not start:
                self._pending = text
                return
            self._state = "holding" if start in "{[`" else "live"
            if self._state == "holding":
                self._pending = ""
                return
        at = text.find(_TEXT_CALL_TAG)
        if at >= 0:
            self._state = "stopped"
            self._pending = ""
            self._emit(text[:at])
            return
        keep = _partial_tag_suffix(text)
        self._pending = text[len(text) - keep :]
        self._emit(text[: len(text) - keep])

    def finish(self, prose: str) -> None:
        """End the answer; `prose` is its text once the calls were taken out."""
        if self._state == "holding":
            self._emit(prose)
        elif self._state != "stopped":
            self._emit(self._pending)
        self._pending = ""
        self._state = "stopped"

    def _emit(self, text: str) -> None:
        if text:
            self._on_token(text)


def _partial_tag_suffix(text: str) -> int:
    """The length of the longest end of `text` that begins `<tool_call>`."""
    for size in range(min(len(text), len(_TEXT_CALL_TAG) - 1), 0, -1):
        if _TEXT_CALL_TAG.startswith(text[-size:]):
            return size
    return 0
