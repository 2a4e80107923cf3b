"""A fault-injecting HTTP proxy: a real model server behind it, the failures of a real network in front.

```python
async with FaultProxy("http://127.0.0.1:8080/v1", fault_rate=0.3, seed=7) as proxy:
    model = OpenAICompatModel("qwen2.5-coder-0.5b", base_url=proxy.base_url)
    ...
print(proxy.counts)  # Counter({'forwarded': 70, 'rate_limited': 7, 'hang': 6, ...})
```

Each request either reaches the server unharmed or gets one fault, decided in order of arrival by a
seeded random draw (or by `script` first), so a run of the same requests meets the same faults:

| fault | what the client sees |
|---|---|
| `rate_limited` | HTTP 429 with `Retry-After: <retry_after_s>` and an OpenAI-style error body |
| `server_error` | HTTP 500 |
| `unavailable` | HTTP 503 with `Retry-After` |
| `truncated` | the server's real answer cut off half-way (`Content-Length` says more, then the end) |
| `hang` | nothing: the request is held until the client gives up (or `hang_s`, or the proxy closes) |

One request per connection (`Connection: close`), which is all the OpenAI clients need here.
"""

from __future__ import annotations

import collections
import contextlib
import json
import random
from collections.abc import Sequence
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit

import anyio
import anyio.abc
import httpx

__all__ = ["FAULT_KINDS", "FaultKind", "FaultProxy"]

FaultKind = Literal["rate_limited", "server_error", "unavailable", "truncated", "hang"]
FAULT_KINDS: tuple[FaultKind, ...] = ("rate_limited", "server_error", "unavailable", "truncated", "hang")

_REASONS = {
    200: "OK",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
_MAX_HEAD = 64 * 1024
# headers that describe one hop, not the message: never passed on
_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}
)


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of an OpenAI-compatible server, breaking a share of requests.

    Args:
        upstream: the real server's API root, such as `http://127.0.0.1:8080/v1`.
        fault_rate: the share of requests that get a fault (0 to 1).
        faults: the kinds drawn from, equally likely.
        seed: seeds the draws: the n-th request meets the same fate on every run.
        script: the fates of the first requests, in order (`None`: forwarded), before the draws take over.
        retry_after_s: the `Retry-After` sent with 429 and 503.
        hang_s: the longest a hung request is held when its client does not give up.
        upstream_timeout_s: how long the proxy waits for the server (past it: 502).

    Attributes:
        counts: how many requests met each fate (`forwarded` or a fault kind).
        log: each request's fate, in order of arrival.
    """

    def __init__(
        self,
        upstream: str,
        *,
        fault_rate: float = 0.3,
        faults: Sequence[FaultKind] = FAULT_KINDS,
        seed: int = 0,
        script: Sequence[FaultKind | None] = (),
        retry_after_s: float = 1.0,
        hang_s: float = 300.0,
        upstream_timeout_s: float = 300.0,
    ):
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.netloc:
            raise ValueError(
                f"FaultProxy upstream {upstream!r} is not an http:// URL; pass the server's API root"
            )
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be between 0 and 1; got {fault_rate!r}")
        unknown = sorted(set(faults) - set(FAULT_KINDS))
        if unknown or not faults:
            raise ValueError(f"unknown fault kinds {unknown}; choose from {list(FAULT_KINDS)}")
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._prefix = parts.path.rstrip("/")
        self._fault_rate = fault_rate
        self._faults = tuple(faults)
        self._rng = random.Random(seed)
        self._script = list(script)
        self._retry_after_s = retry_after_s
        self._hang_s = hang_s
        self._upstream_timeout_s = upstream_timeout_s
        self.counts: collections.Counter[str] = collections.Counter()
        self.log: list[FaultKind | Literal["forwarded"]] = []
        self._listener: anyio.abc.SocketListener | None = None
        self._tasks: anyio.abc.TaskGroup | None = None
        self._client: httpx.AsyncClient | None = None

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("the FaultProxy is not started; use `async with FaultProxy(...) as proxy`")
        return int(self._listener.extra(anyio.abc.SocketAttribute.local_port))

    @property
    def base_url(self) -> str:
        """The proxy's API root: the upstream's, on the proxy's port."""
        return f"http://127.0.0.1:{self.port}{self._prefix}"

    async def __aenter__(self) -> FaultProxy:
        self._client = httpx.AsyncClient(timeout=self._upstream_timeout_s)
        self._listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self._tasks = anyio.create_task_group()
        await self._tasks.__aenter__()
        self._tasks.start_soon(self._listener.serve, self._handle)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._tasks is not None and self._listener is not None and self._client is not None
        self._tasks.cancel_scope.cancel()
        try:
            await self._tasks.__aexit__(exc_type, exc, tb)
        finally:
            await self._listener.aclose()
            await self._client.aclose()

    def _fate(self) -> FaultKind | Literal["forwarded"]:
        if self._script:
            fate: FaultKind | Literal["forwarded"] | None = self._script.pop(0)
        elif self._rng.random() < self._fault_rate:
            fate = self._rng.choice(self._faults)
        else:
            fate = None
        fate = fate or "forwarded"
        self.counts[fate] += 1
        self.log.append(fate)
        return fate

    async def _handle(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            try:
                request = await _read_request(stream)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, ValueError):
                return
            fate = self._fate()
            # a client that gave up (a timeout) has nothing more to hear
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError):
                await self._answer(stream, request, fate)

    async def _answer(self, stream: anyio.abc.SocketStream, request: _Request, fate: str) -> None:
        retry_after = {"Retry-After": f"{self._retry_after_s:g}"}
        if fate == "rate_limited":
            await _send(stream, 429, _error("rate limit reached (injected by FaultProxy)"), retry_after)
        elif fate == "server_error":
            await _send(stream, 500, _error("internal error (injected by FaultProxy)"))
        elif fate == "unavailable":
            await _send(
                stream, 503, _error("overloaded, try again later (injected by FaultProxy)"), retry_after
            )
        elif fate == "hang":
            with anyio.move_on_after(self._hang_s):
                # held until the client closes its end (or the proxy closes, cancelling this)
                while True:
                    try:
                        await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        return
        else:
            status, headers, body = await self._forward(request)
            if fate == "truncated":
                await _send(stream, status, body[: len(body) // 2], headers, declared_length=len(body))
            else:
                await _send(stream, status, body, headers)

    async def _forward(self, request: _Request) -> tuple[int, dict[str, str], bytes]:
        assert self._client is not None
        headers = {k: v for k, v in request.headers.items() if k not in _HOP_HEADERS}
        try:
            response = await self._client.request(
                request.method, self._origin + request.target, content=request.body, headers=headers
            )
        except httpx.HTTPError as exc:
            return 502, {}, _error(f"FaultProxy could not reach {self._origin}: {exc!r}")
        kept = {k: v for k, v in response.headers.items() if k.lower() not in _HOP_HEADERS}
        return response.status_code, kept, response.content


class _Request:
    __slots__ = ("body", "headers", "method", "target")

    def __init__(self, method: str, target: str, headers: dict[str, str], body: bytes):
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body


async def _read_request(stream: anyio.abc.SocketStream) -> _Request:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        buffer += await stream.receive()
        if len(buffer) > _MAX_HEAD:
            raise ValueError("request head too large")
    head, _, body = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length") or 0)
    while len(body) < length:
        body += await stream.receive()
    return _Request(method, target, headers, body[:length])


async def _send(
    stream: anyio.abc.SocketStream,
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    declared_length: int | None = None,
) -> None:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    merged = {"content-type": "application/json", **{k.lower(): v for k, v in (headers or {}).items()}}
    lines += [f"{name}: {value}" for name, value in merged.items()]
    lines += [
        f"Content-Length: {declared_length if declared_length is not None else len(body)}",
        "Connection: close",
    ]
    await stream.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


def _error(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "injected_fault"}}).encode()
