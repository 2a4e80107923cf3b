"""What the backends that reach a model over HTTP share (`openai_compat`, `anthropic`).

`HTTPEndpoint` owns the client for one URL and turns every way an exchange can fail into one
`ModelError` whose message names the endpoint and what to do: no connection, silence, an answer cut
off, the whole call over its deadline, and the statuses that mean the same on every API (429, 408,
5xx). A backend keeps what is its own: the request body and headers, reading the answer, what the other
statuses mean to its API, and the words its messages use (`Wording`). The functions below read the
pieces every API answers with: server-sent events, `Retry-After`, token counts, tool-call arguments,
and the server's error text, bounded and with the key taken out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import json
import math
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn
from urllib.parse import urlsplit

import anyio
import httpx

from ..exceptions import (
    ConfigError,
    ModelError,
    ModelRateLimited,
    ModelResponseError,
    ModelServerError,
    ModelTimeout,
    ModelUnreachable,
)
from ._messages import ModelResponse, ToolCall, Usage

__all__ = [
    "Answer",
    "HTTPEndpoint",
    "Reply",
    "Wording",
    "bounded",
    "checked_base_url",
    "count",
    "load_json",
    "parse_retry_after",
    "redact",
    "shape_error",
    "tool_call",
]

# Server error messages are quoted in ours so the user sees the real cause, but bounded: some servers
# (or a proxy in between) answer an error with a whole HTML page or a stack trace.
_DETAIL_CHARS = 200

# Only for a server on this machine is "start it" the likely fix; a remote one is more often a typo,
# a network or a proxy problem.
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Wording:
    """The words a backend's messages use where its peer differs from another's.

    Attributes:
        peer: what answers, as in "<peer> may be overloaded" (`the server`, `the API`).
        faster: what to move to when calls take too long (`a faster model or server`).
        lost: what to check when the connection drops (`check the server`).
        failed: what to do about a 5xx that may pass (`retry later or check the server's logs`).
        local_connect: what to do when a server on this machine refuses connections; `{host}` and
            `{port}` are filled in.
        remote_connect: the same for a server elsewhere.
    """

    peer: str
    faster: str
    lost: str
    failed: str
    local_connect: str
    remote_connect: str


def checked_base_url(base_url: str, *, advice: str) -> str:
    """`base_url` without its trailing slash.

    Raises:
        ConfigError: when it is not an `http://` or `https://` URL; the message ends with `advice`.
    """
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"base_url {base_url!r} is not an http(s) URL; {advice}")
    return base_url.rstrip("/")


class HTTPEndpoint:
    """The URL a backend POSTs to, its `httpx.AsyncClient`, and the failures of talking to it.

    The client is created on first use (so constructing a model does no I/O) and closed by `aclose()`;
    one passed in `http_client` belongs to the caller and is not closed.

    Args:
        url: where requests go.
        wording: the backend's words for its messages.
        secret: the API key, kept out of every message.
        timeout_s: the longest the server may stay silent; None: only the call's deadline bounds it.
        http_client: a client to use instead of creating one.

    Raises:
        ConfigError: when `timeout_s` is not positive.
    """

    def __init__(
        self,
        url: str,
        *,
        wording: Wording,
        secret: str | None,
        timeout_s: float | None,
        http_client: httpx.AsyncClient | None,
    ) -> None:
        if timeout_s is not None and timeout_s <= 0:
            raise ConfigError(f"timeout_s must be positive, got {timeout_s!r}")
        self.url = url
        self._wording = wording
        self._secret = secret
        self._timeout_s = timeout_s
        self._client = http_client
        self._owns_client = http_client is None

    def client(self) -> httpx.AsyncClient:
        """The client, created now if this is its first use."""
        if self._client is None:
            # created on first use: constructing a model must not need a running event loop
            self._client = httpx.AsyncClient()
        return self._client

    async def aclose(self) -> None:
        """Close the client this endpoint created (not one passed in `http_client`)."""
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    @contextlib.contextmanager
    def deadline(self, timeout_s: float) -> Iterator[None]:
        """Bound a whole call by `ModelSettings.timeout_s`: `ModelTimeout` when it runs past it."""
        try:
            with anyio.fail_after(timeout_s):
                yield
        except TimeoutError:
            raise ModelTimeout(
                f"{self.url} did not answer within {timeout_s:g}s (settings.timeout_s); "
                f"raise it, ask for fewer tokens, or use {self._wording.faster}"
            ) from None

    @contextlib.asynccontextmanager
    async def post(
        self, body: dict[str, Any], *, headers: Mapping[str, str], timeout_s: float
    ) -> AsyncIterator[Reply]:
        """POST `body` as JSON; the reply's status and headers are in, its body is read in the block.

        `timeout_s` is the call's deadline, the silence allowed when the endpoint sets none of its own.
        """
        client = self.client()
        # httpx's own timeouts bound each operation; the whole call is bounded by `deadline`
        silence_s = self._timeout_s if self._timeout_s is not None else timeout_s
        request = client.build_request(
            "POST", self.url, json=body, headers=headers, timeout=httpx.Timeout(silence_s)
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, silence_s=silence_s, answered=False) from exc
        try:
            yield Reply(self, response, silence_s)
        finally:
            await response.aclose()

    def status_error(self, response: httpx.Response, said: str) -> ModelError | None:
        """The error for a status that means the same on every API (429, 408, 5xx); None for another.

        `said` is the status and the server's own words, as the backend read them from the body.
        """
        status = response.status_code
        url = self.url
        if status == 429:
            retry_after = parse_retry_after(response.headers)
            wait = f"retry after {retry_after:g}s" if retry_after is not None else "slow down and retry"
            return ModelRateLimited(f"{url} is rate limiting ({said}); {wait}", retry_after=retry_after)
        if status == 408:
            return ModelTimeout(f"{url} timed out the request ({said}); retry")
        if status >= 500:
            # 501/505: the server cannot do this at all, so trying again is pointless (Anthropic's 529,
            # overloaded, is retryable like a 503)
            retryable = status not in (501, 505)
            hint = self._wording.failed if retryable else "this server cannot serve it"
            return ModelServerError(
                f"{url} failed ({said}); {hint}",
                retryable=retryable,
                retry_after=parse_retry_after(response.headers),
            )
        return None

    def _transport_error(self, exc: httpx.HTTPError, *, silence_s: float, answered: bool) -> ModelError:
        url = self.url
        reason = redact(str(exc) or type(exc).__name__, self._secret)
        if isinstance(exc, httpx.ConnectTimeout):
            return ModelUnreachable(
                f"cannot connect to {url}: no answer to connect within {silence_s:g}s; "
                "check that the host is up and reachable from here"
            )
        if isinstance(exc, httpx.TimeoutException):
            return ModelTimeout(
                f"{url} went silent for {silence_s:g}s ({type(exc).__name__}); "
                f"{self._wording.peer} may be overloaded: retry, or raise the model's timeout_s"
            )
        if isinstance(exc, httpx.ConnectError):
            parts = urlsplit(url)
            if parts.hostname in _LOOPBACK_HOSTS:
                hint = self._wording.local_connect.format(host=parts.hostname, port=parts.port or 80)
            else:
                hint = self._wording.remote_connect
            return ModelUnreachable(f"cannot connect to {url} ({reason}); {hint}")
        if isinstance(exc, httpx.DecodingError):
            return ModelResponseError(f"{url} sent a body that cannot be decoded ({reason})")
        if answered and isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
            # the answer was cut off; trying again will most likely get a whole one
            return ModelResponseError(
                f"{url} closed the connection before the answer was complete ({reason}); retry",
                retryable=True,
            )
        return ModelUnreachable(f"lost the connection to {url} ({reason}); retry, or {self._wording.lost}")


class Reply:
    """A response whose status and headers are in and whose body is yet to be read."""

    def __init__(self, endpoint: HTTPEndpoint, response: httpx.Response, silence_s: float) -> None:
        self.response = response
        self._endpoint = endpoint
        self._silence_s = silence_s

    @property
    def is_event_stream(self) -> bool:
        """Whether the body is server-sent events (a server may answer whole though asked to stream)."""
        content_type: str = self.response.headers.get("content-type", "")
        return content_type.split(";")[0].strip() == "text/event-stream"

    async def read(self) -> bytes:
        """The whole body."""
        try:
            return await self.response.aread()
        except httpx.HTTPError as exc:
            raise self._broken(exc) from exc

    async def read_events(self, handle: Callable[[str], None]) -> None:
        """Pass each server-sent event's data to `handle`, in order, as it arrives."""
        events = _EventParser()
        try:
            async for line in self.response.aiter_lines():
                for data in events.feed(line):
                    handle(data)
        except httpx.HTTPError as exc:
            raise self._broken(exc) from exc
        for data in events.close():
            handle(data)

    def _broken(self, exc: httpx.HTTPError) -> ModelError:
        return self._endpoint._transport_error(exc, silence_s=self._silence_s, answered=True)


class _EventParser:
    """Server-sent events: joins `data:` lines into one payload per event."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> Iterator[str]:
        if not line:
            yield from self.close()
        elif line.startswith("data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(" ") else value)
        # comments (`: keep-alive`), `event:`, `id:` and `retry:` lines carry nothing we use

    def close(self) -> Iterator[str]:
        if self._data:
            data, self._data = "\n".join(self._data), []
            yield data


@dataclasses.dataclass(frozen=True, kw_only=True)
class Answer:
    """What the server said, read off the wire."""

    text: str
    tool_calls: tuple[ToolCall, ...]
    usage: Usage
    finish_reason: str
    repairs: tuple[str, ...] = ()

    def response(self, *, model: str, duration_s: float) -> ModelResponse:
        """The answer as the `ModelResponse` of `model`, which took `duration_s`."""
        return ModelResponse(
            text=self.text,
            tool_calls=self.tool_calls,
            usage=self.usage,
            model=model,
            finish_reason=self.finish_reason,
            duration_s=duration_s,
            repairs=self.repairs,
        )


# -- reading what servers say ----------------------------------------------------------------------


def load_json(raw: bytes, url: str, *, api: str, streamed: bool = False) -> Any:
    """`raw` parsed; `ModelResponseError` saying base_url should point at `api` when it is not JSON."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        what = "an event that is not valid JSON" if streamed else "a body that is not valid JSON"
        start = raw.decode("utf-8", "replace")[:60]
        raise ModelResponseError(
            f"{url} sent {what} ({exc}; starts {start!r}); check that base_url points at {api}"
        ) from None


def shape_error(url: str, what: str, *, api: str) -> NoReturn:
    """Raise the `ModelResponseError` for an answer that is JSON but not the shape `api` answers in."""
    raise ModelResponseError(
        f"{url} answered in an unexpected shape: {what}; check that base_url points at {api}"
    )


def count(value: Any) -> int:
    """A token count from the wire: a positive integer, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def tool_call(call_id: Any, name: str, arguments: Any, *, id_prefix: str) -> ToolCall:
    """One tool call from the wire, its arguments parsed when they are a JSON object.

    Arguments that are not a JSON object are kept as the text the model wrote, so that the runtime can
    show the model what was wrong with it; a call without an id gets one starting `id_prefix`.
    """
    if not isinstance(call_id, str) or not call_id:
        call_id = f"{id_prefix}{uuid.uuid4().hex[:24]}"
    if isinstance(arguments, dict):
        # some servers send the object itself rather than the JSON string the OpenAI spec asks for
        return ToolCall(call_id=call_id, name=name, arguments=arguments)
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        # a call without arguments; OpenAI sends "{}", other servers "" or nothing
        return ToolCall(call_id=call_id, name=name, arguments={})
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        return ToolCall(call_id=call_id, name=name, arguments=parsed)
    return ToolCall(call_id=call_id, name=name, arguments=raw)


def redact(text: str, secret: str | None) -> str:
    """`text` with `secret` replaced by `***`."""
    # some servers quote the key they rejected; it must not reach logs or the journal (a key of a
    # character or two is no secret, and replacing it would garble every message)
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return text


def bounded(text: str) -> str:
    """A server's words on one line, cut to a length that fits in a message."""
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 1] + "…"


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait from `retry-after-ms` (OpenAI) or `Retry-After` (seconds or an HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return value if math.isfinite(value) and value >= 0 else None
