"""`tether models serve`: a tether model behind an OpenAI-compatible chat-completions API.

```python
from tether.models.llamacpp import LlamaCppModel
from tether.models.serve import create_app, serve

serve(LlamaCppModel("qwen2.5-coder-1.5b"), host="127.0.0.1", port=8080)
```

Any OpenAI client then talks to the embedded model at `http://127.0.0.1:8080/v1`, tether's own
`OpenAICompatModel` included (`openai:qwen2.5-coder-1.5b@http://127.0.0.1:8080/v1`).

The stock `python -m llama_cpp.server` gives these models no usable tool calls: with
`chatml-function-calling` the model can never answer in words and tool results are dropped; without it
calls come back as text and an assistant message with `"content": null` is rejected. Here the model
is tether's `LlamaCppModel`, so a response carries real `tool_calls`, constrained by the tools' JSON
schemas, and the conversation (`content: null`, tool results) is rendered with Qwen's own template,
prefix-stable, so that llama.cpp's KV cache serves the turns a client sends again.

Supported: `POST /v1/chat/completions` (roles system/developer, user, assistant with `tool_calls`,
tool; `tools`; `tool_choice` auto, none, required or one function; `parallel_tool_calls`;
`max_tokens`/`max_completion_tokens`; `temperature`; `seed`; `stream` with `stream_options`), and
`GET /v1/models`. Sampling knobs this server does not implement (`top_p`, penalties...) are ignored, as
by most compatible servers; options that would change what the answer means (`n` > 1, `stop`,
`logprobs`, a `response_format` other than text) are refused with 400. Errors use OpenAI's shape,
`{"error": {"message", "type", "param", "code"}}`. One answer is generated at a time: llama.cpp is not
reentrant, and requests wait their turn in arrival order.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, NoReturn

import anyio
import anyio.from_thread

from ..exceptions import ConfigError, ModelError, ModelTimeout
from ._base import Model, ModelSettings
from ._messages import (
    AssistantMessage,
    Message,
    ModelResponse,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolResultMessage,
    UserMessage,
)

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import Receive, Scope, Send

__all__ = ["DEFAULT_MAX_TOKENS", "create_app", "serve"]

_INSTALL_HINT: Final = "install 'tether[serve]' to use tether models serve"
DEFAULT_MAX_TOKENS: Final = 1024
"""Tokens an answer may have when the request sets no `max_tokens` (the context window bounds it too)."""
_TOOL_NAME: Final = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_FINISH_REASONS: Final = frozenset({"stop", "length", "tool_calls"})
_MAX_BODY_BYTES: Final = 8 * 1024 * 1024


class _BadRequest(Exception):
    """A request this server will not take; becomes an OpenAI error body."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int = 400,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status
        self.kind = kind


def _fail(message: str, param: str | None = None, *, code: str | None = None) -> NoReturn:
    raise _BadRequest(message, param=param, code=code)


@dataclass(frozen=True, kw_only=True)
class _Completion:
    """A chat-completions request, read and checked."""

    messages: tuple[Message, ...]
    tools: tuple[ToolDefinition, ...]
    settings: ModelSettings
    stream: bool
    include_usage: bool
    single_call: bool


def create_app(
    model: Model,
    *,
    model_id: str | None = None,
    timeout_s: float = 300.0,
    load_on_startup: bool = True,
) -> Starlette:
    """An ASGI app serving `model` with OpenAI's chat-completions API.

    Args:
        model: any tether model; `LlamaCppModel` is what `tether models serve` uses.
        model_id: the id clients send as `model` and `GET /v1/models` lists; default the model's name
            without its `local:` prefix (`qwen2.5-coder-1.5b`). Requests may also use the full name.
        timeout_s: the longest one answer may take to generate (504 after it).
        load_on_startup: load the weights when the server starts (when the model has `load()`), so
            that the first request does not wait for them.

    Raises:
        ImportError: starlette is not installed.
    """
    try:
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.responses import JSONResponse
        from starlette.routing import Route
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e

    served = model_id or model.name.removeprefix("local:")
    names = {served, model.name}
    created = int(time.time())
    lock = anyio.Lock()

    def error(exc: _BadRequest) -> Response:
        body = {"error": {"message": exc.message, "type": exc.kind, "param": exc.param, "code": exc.code}}
        return JSONResponse(body, status_code=exc.status)

    def model_card() -> dict[str, Any]:
        return {"id": served, "object": "model", "created": created, "owned_by": "tether"}

    async def list_models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [model_card()]})

    async def get_model(request: Request) -> Response:
        name = request.path_params["model"]
        if name not in names:
            return error(_not_found(name, served))
        return JSONResponse(model_card())

    async def chat_completions(request: Request) -> Response:
        try:
            body = await _read_json(request)
            name = body.get("model")
            if name is not None and name not in names:
                raise _not_found(name, served)
            completion = _read_completion(body, timeout_s=timeout_s)
        except _BadRequest as exc:
            return error(exc)
        ident = f"chatcmpl-{secrets.token_hex(12)}"
        if completion.stream:
            return _EventStream(
                lambda emit: _stream_answer(model, lock, completion, emit, ident=ident, served=served)
            )
        try:
            async with lock:
                response = await model.request(
                    completion.messages, tools=completion.tools, settings=completion.settings
                )
        except (ModelError, ConfigError) as exc:
            return error(_model_failure(exc))
        response = _trimmed(response, completion)
        return JSONResponse(_completion_body(response, ident=ident, served=served))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            message = (
                f"no route {request.method} {request.url.path}; "
                "this server has /v1/chat/completions and /v1/models"
            )
        elif exc.status_code == 405:
            message = f"{request.url.path} does not take {request.method}"
        else:
            message = str(exc.detail)
        return error(_BadRequest(message, status=exc.status_code, code=str(exc.status_code)))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        load = getattr(model, "load", None)
        if load_on_startup and callable(load):
            await load()
        try:
            yield
        finally:
            await model.aclose()

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", get_model, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )


def serve(
    model: Model,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    model_id: str | None = None,
    timeout_s: float = 300.0,
    log_level: str = "info",
) -> None:
    """Serve `model` over HTTP until interrupted (Ctrl-C), loading it first.

    Raises:
        ImportError: starlette or uvicorn is not installed.
    """
    try:
        import uvicorn
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e
    app = create_app(model, model_id=model_id, timeout_s=timeout_s)
    uvicorn.run(app, host=host, port=port, log_level=log_level, lifespan="on")


# -- reading a request ------------------------------------------------------------------------------


async def _read_json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > _MAX_BODY_BYTES:
        raise _BadRequest(f"the request body is {len(raw)} bytes; the limit is {_MAX_BODY_BYTES}", status=413)
    try:
        body = json.loads(raw)
    except ValueError as exc:
        _fail(f"the request body is not valid JSON ({exc}); send a chat-completions JSON object")
    if not isinstance(body, dict):
        _fail(f"the request body is a JSON {type(body).__name__}; send a chat-completions JSON object")
    return body


def _not_found(name: Any, served: str) -> _BadRequest:
    return _BadRequest(
        f"model {name!r} is not served here; this server serves {served!r}",
        param="model",
        code="model_not_found",
        status=404,
    )


def _read_completion(body: Mapping[str, Any], *, timeout_s: float) -> _Completion:
    for key, why in (
        ("functions", "use tools"),
        ("function_call", "use tool_choice"),
        ("audio", "this model reads and writes text only"),
    ):
        if body.get(key) is not None:
            _fail(f"{key} is not supported: {why}", key)
    if body.get("n") not in (None, 1):
        _fail(f"n={body['n']!r} is not supported; this server generates one choice per request", "n")
    if body.get("stop") not in (None, [], ""):
        _fail("stop is not supported by this server; remove it and cut the text on the client", "stop")
    if body.get("logprobs") not in (None, False):
        _fail("logprobs are not supported by this server", "logprobs")
    response_format = body.get("response_format")
    if response_format is not None and (
        not isinstance(response_format, dict) or response_format.get("type") != "text"
    ):
        _fail(
            "response_format is not supported (only {'type': 'text'}); "
            "describe the output with tools instead",
            "response_format",
        )

    tools = _read_tools(body.get("tools"))
    choice, allowed = _read_tool_choice(body.get("tool_choice"), tools)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    elif not _is_int(max_tokens) or max_tokens < 1:
        _fail(f"max_tokens must be a positive integer; got {max_tokens!r}", "max_tokens")
    temperature = body.get("temperature", 0.0)
    if temperature is None:
        temperature = 0.0
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
        _fail(f"temperature must be a number from 0 to 2; got {temperature!r}", "temperature")
    seed = body.get("seed", 0)
    if seed is not None and not _is_int(seed):
        _fail(f"seed must be an integer or null; got {seed!r}", "seed")
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        _fail(f"stream must be true or false; got {stream!r}", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        _fail("stream_options must be an object such as {'include_usage': true}", "stream_options")
    parallel = body.get("parallel_tool_calls", True)
    if not isinstance(parallel, bool) and parallel is not None:
        _fail(f"parallel_tool_calls must be true or false; got {parallel!r}", "parallel_tool_calls")

    return _Completion(
        messages=_read_messages(body.get("messages")),
        tools=tools,
        settings=ModelSettings(
            max_tokens=int(max_tokens),
            temperature=float(temperature),
            timeout_s=timeout_s,
            tool_choice=choice,
            seed=None if seed is None else int(seed),
            allowed_tools=allowed,
        ),
        stream=bool(stream),
        include_usage=bool(options.get("include_usage")),
        single_call=parallel is False,
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_tools(raw: Any) -> tuple[ToolDefinition, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        _fail("tools must be a list of {'type': 'function', 'function': {...}} objects", "tools")
    tools: list[ToolDefinition] = []
    for index, item in enumerate(raw):
        where = f"tools[{index}]"
        if not isinstance(item, dict) or item.get("type", "function") != "function":
            _fail(
                f"{where} must be {{'type': 'function', 'function': {{...}}}}; "
                "only function tools exist here",
                where,
            )
        function = item.get("function")
        if not isinstance(function, dict):
            _fail(f"{where}.function must be an object with a name and parameters", f"{where}.function")
        name = function.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
            _fail(
                f"{where}.function.name must be 1-64 letters, digits, '_' or '-'; got {name!r}",
                f"{where}.function.name",
            )
        if any(t.name == name for t in tools):
            _fail(
                f"{where}: two tools are named {name!r}; give each tool its own name",
                f"{where}.function.name",
            )
        parameters = function.get("parameters")
        if parameters is None:
            parameters = {"type": "object", "properties": {}}
        if not isinstance(parameters, dict):
            _fail(f"{where}.function.parameters must be a JSON schema object", f"{where}.function.parameters")
        description = function.get("description") or ""
        if not isinstance(description, str):
            _fail(f"{where}.function.description must be a string", f"{where}.function.description")
        tools.append(ToolDefinition(name=name, description=description, parameters=parameters))
    return tuple(tools)


def _read_tool_choice(raw: Any, tools: Sequence[ToolDefinition]) -> tuple[Any, tuple[str, ...] | None]:
    if raw is None:
        return "auto", None
    if raw in ("auto", "none"):
        return raw, None
    if raw == "required":
        if not tools:
            _fail("tool_choice 'required' needs tools; send tools or use tool_choice 'auto'", "tool_choice")
        return "required", None
    if isinstance(raw, dict) and raw.get("type") == "function" and isinstance(raw.get("function"), dict):
        name = raw["function"].get("name")
        known = [t.name for t in tools]
        if name not in known:
            _fail(f"tool_choice names the function {name!r}, which is not in tools {known}", "tool_choice")
        return "required", (name,)
    _fail(
        "tool_choice must be 'auto', 'none', 'required' or {'type': 'function', 'function': {'name': ...}}; "
        f"got {raw!r}",
        "tool_choice",
    )


def _read_messages(raw: Any) -> tuple[Message, ...]:
    if not isinstance(raw, list) or not raw:
        _fail("messages must be a non-empty list of {'role': ..., 'content': ...} objects", "messages")
    messages: list[Message] = []
    open_calls: dict[str, str] = {}  # the calls of the last assistant turn, which tool messages answer
    for index, item in enumerate(raw):
        where = f"messages[{index}]"
        if not isinstance(item, dict):
            _fail(f"{where} must be an object with a role and content", where)
        role = item.get("role")
        if role in ("system", "developer"):
            messages.append(SystemMessage(content=_text(item.get("content"), where, required=True)))
        elif role == "user":
            messages.append(UserMessage(content=_text(item.get("content"), where, required=True)))
        elif role == "assistant":
            if item.get("function_call") is not None:
                _fail(f"{where}.function_call is not supported; send tool_calls", f"{where}.function_call")
            calls = _read_calls(item.get("tool_calls"), where)
            messages.append(AssistantMessage(content=_text(item.get("content"), where), tool_calls=calls))
            open_calls = {c.call_id: c.name for c in calls}
            continue
        elif role == "tool":
            call_id = item.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                _fail(f"{where} is a tool message without a tool_call_id; say which call it answers", where)
            if call_id not in open_calls:
                expected = sorted(open_calls) or "none"
                _fail(
                    f"{where}: tool_call_id {call_id!r} answers no tool call of the assistant message "
                    f"before it (its calls: {expected}); a tool message must follow the assistant "
                    "message that made the call",
                    f"{where}.tool_call_id",
                )
            content = _text(item.get("content"), where, required=True)
            messages.append(ToolResultMessage(call_id=call_id, name=open_calls[call_id], content=content))
            continue
        else:
            _fail(
                f"{where}.role is {role!r}; use system, developer, user, assistant or tool", f"{where}.role"
            )
        open_calls = {}
    return tuple(messages)


def _text(content: Any, where: str, *, required: bool = False) -> str:
    if content is None:
        if required:
            _fail(f"{where}.content is missing; this role needs text", f"{where}.content")
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for n, part in enumerate(content):
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                _fail(
                    f"{where}.content[{n}] is a {kind!r} part; this model reads text parts only",
                    f"{where}.content",
                )
            parts.append(part["text"])
        return "".join(parts)
    _fail(f"{where}.content must be a string, a list of text parts or null", f"{where}.content")


def _read_calls(raw: Any, where: str) -> tuple[ToolCall, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        _fail(f"{where}.tool_calls must be a list", f"{where}.tool_calls")
    calls: list[ToolCall] = []
    for n, item in enumerate(raw):
        at = f"{where}.tool_calls[{n}]"
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            _fail(
                f"{at} must be {{'id': ..., 'type': 'function', "
                "'function': {'name': ..., 'arguments': ...}}",
                at,
            )
        call_id = item.get("id")
        if not isinstance(call_id, str) or not call_id:
            _fail(f"{at} has no id; tool messages refer to calls by id", f"{at}.id")
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                decoded = json.loads(arguments) if arguments.strip() else {}
            except ValueError:
                decoded = None
            # arguments that are not a JSON object are kept as text, as the model wrote them
            arguments = decoded if isinstance(decoded, dict) else arguments
        elif arguments is None:
            arguments = {}
        elif not isinstance(arguments, dict):
            _fail(f"{at}.function.arguments must be a JSON string", f"{at}.function.arguments")
        calls.append(ToolCall(call_id=call_id, name=function["name"], arguments=arguments))
    return tuple(calls)


# -- answering ---------------------------------------------------------------------------------------


def _model_failure(exc: ModelError | ConfigError) -> _BadRequest:
    if isinstance(exc, ModelTimeout):
        return _BadRequest(str(exc), status=504, kind="timeout", code="timeout")
    if isinstance(exc, ModelError) and not exc.retryable:
        # a prompt over the context window, a schema the grammar cannot express: the request must change
        return _BadRequest(str(exc), code="model_error")
    return _BadRequest(str(exc), status=500 if isinstance(exc, ConfigError) else 503, kind="server_error")


def _trimmed(response: ModelResponse, completion: _Completion) -> ModelResponse:
    if completion.single_call and len(response.tool_calls) > 1:
        return response.model_copy(update={"tool_calls": response.tool_calls[:1]})
    return response


def _wire_calls(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    # ids are unique per answer and across a conversation, as clients expect; the model's own are
    # call_0, call_1... in every answer
    return [
        {
            "id": f"call_{secrets.token_hex(12)}",
            "type": "function",
            "function": {
                "name": call.name,
                "arguments": call.arguments
                if isinstance(call.arguments, str)
                else json.dumps(call.arguments, ensure_ascii=False),
            },
        }
        for call in calls
    ]


def _finish_reason(response: ModelResponse) -> str:
    if response.tool_calls and response.finish_reason != "length":
        return "tool_calls"
    return response.finish_reason if response.finish_reason in _FINISH_REASONS else "stop"


def _usage(response: ModelResponse) -> dict[str, Any]:
    usage = response.usage
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def _completion_body(response: ModelResponse, *, ident: str, served: str) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": response.text if response.text or not response.tool_calls else None,
    }
    if response.tool_calls:
        message["tool_calls"] = _wire_calls(response.tool_calls)
    return {
        "id": ident,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": served,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": _finish_reason(response)}
        ],
        "usage": _usage(response),
    }


Emit = Callable[[Any], Awaitable[None]]


async def _stream_answer(
    model: Model, lock: anyio.Lock, completion: _Completion, emit: Emit, *, ident: str, served: str
) -> None:
    """Generate one answer, emitting `chat.completion.chunk` events as its text arrives."""
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": served,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    await emit(chunk({"role": "assistant", "content": ""}))
    send, receive = anyio.create_memory_object_stream[str](math.inf)
    loop_thread = threading.get_ident()

    def on_token(piece: str) -> None:
        # LlamaCppModel calls this from its worker thread, other models from the event loop
        if threading.get_ident() == loop_thread:
            send.send_nowait(piece)
            return
        # a client that went away takes the stream with it; the generation is being stopped then
        with contextlib.suppress(RuntimeError, anyio.ClosedResourceError, anyio.BrokenResourceError):
            anyio.from_thread.run_sync(send.send_nowait, piece)

    async def relay() -> None:
        async with receive:
            async for piece in receive:
                await emit(chunk({"content": piece}))

    failure: _BadRequest | None = None
    response: ModelResponse | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(relay)
        async with send:
            try:
                async with lock:
                    response = await model.request(
                        completion.messages,
                        tools=completion.tools,
                        settings=completion.settings,
                        on_token=on_token,
                    )
            except (ModelError, ConfigError) as exc:
                failure = _model_failure(exc)
    if failure is not None or response is None:
        assert failure is not None
        await emit(
            {"error": {"message": failure.message, "type": failure.kind, "param": None, "code": failure.code}}
        )
        return
    response = _trimmed(response, completion)
    for index, call in enumerate(_wire_calls(response.tool_calls)):
        await emit(chunk({"tool_calls": [{"index": index, **call}]}))
    await emit(chunk({}, _finish_reason(response)))
    if completion.include_usage:
        await emit(
            {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": served,
                "choices": [],
                "usage": _usage(response),
            }
        )


class _EventStream:
    """A `text/event-stream` response whose events a coroutine emits; stops it if the client leaves.

    Written against ASGI directly so that the generation runs in a task group of its own (an async
    generator cannot safely yield from inside one), and a client that disconnects cancels it, which
    stops llama.cpp within a token.
    """

    def __init__(self, produce: Callable[[Emit], Awaitable[None]]) -> None:
        self._produce = produce

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )

        async def emit(data: Any) -> None:
            payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
            await send(
                {"type": "http.response.body", "body": f"data: {payload}\n\n".encode(), "more_body": True}
            )

        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            await self._produce(emit)
            await emit("[DONE]")
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            tg.cancel_scope.cancel()
