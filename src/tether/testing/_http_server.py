"""The scaffold of the fake servers tests talk to over real sockets: a threaded HTTP server on 127.0.0.1.

Replies are scripted first in first out; a subclass decides how each request is answered (`_reply`,
usually with the next scripted reply) and this module serves it from a free port, sends it as scripted
(in one piece, streamed in chunks, cut short, or not at all) and joins every thread it started on
`stop()`, so no handler outlives the test.
"""

from __future__ import annotations

import abc
import collections
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, Self, TypeVar

__all__ = ["ScriptedHTTPServer", "ScriptedReply"]


@dataclass(frozen=True, kw_only=True)
class ScriptedReply:
    """How the server answers one request.

    Attributes:
        status: the HTTP status.
        headers: the response headers.
        body: sent in one piece, with a `Content-Length` of `declared_length` when given (a larger one
            makes a truncated body).
        chunks: sent one by one without a length, the connection closing after the last (SSE).
        hang: answer nothing until the server stops.
    """

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    declared_length: int | None = None
    chunks: Sequence[bytes] | None = None
    hang: bool = False


_Scripted = TypeVar("_Scripted")


class ScriptedHTTPServer(abc.ABC, Generic[_Scripted]):
    """A real HTTP server on 127.0.0.1, on a free port, each request answered by `_reply`.

    Use it as a context manager, or `start()` then `stop()`. Replies are queued as `ScriptedReply`, or
    as `_Scripted`, what a subclass turns into one once it sees the request.
    """

    def __init__(self) -> None:
        self._replies: collections.deque[_Scripted | ScriptedReply] = collections.deque()
        # requests are handled on threads of their own
        self._lock = threading.Lock()
        # set on stop, so that a handler scripted to hang returns and its thread can be joined
        self._released = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._started = False

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> Self:
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and join every handler thread (hanging ones are released first)."""
        self._released.set()
        if self._started:
            self._httpd.shutdown()
            self._thread.join(timeout=10)
        # joins the handler threads (block_on_close)
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reply_raw(
        self,
        body: bytes,
        *,
        status: int = 200,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
        declared_length: int | None = None,
    ) -> None:
        """Answer the next request with `body` as is; a `declared_length` beyond it cuts it off mid-way."""
        self._queue(
            ScriptedReply(
                status=status,
                headers={"content-type": content_type, **(headers or {})},
                body=body,
                declared_length=declared_length,
            )
        )

    def reply_hang(self) -> None:
        """Send nothing back to the next request until the server stops."""
        self._queue(ScriptedReply(hang=True))

    @property
    def pending(self) -> int:
        """Scripted replies not yet sent."""
        with self._lock:
            return len(self._replies)

    def _queue(self, reply: _Scripted | ScriptedReply) -> None:
        with self._lock:
            self._replies.append(reply)

    def _next(self) -> _Scripted | ScriptedReply | None:
        with self._lock:
            return self._replies.popleft() if self._replies else None

    @abc.abstractmethod
    def _reply(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> ScriptedReply:
        """The reply to one request (called on the request's own thread); `headers` names are lower-case."""


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that gave up (timeout tests) leaves a broken pipe behind: expected, not news
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler_for(server: ScriptedHTTPServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = server._reply(self.command, self.path, headers, body)
            if reply.hang:
                server._released.wait(timeout=60)
                return
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if reply.chunks is not None:
                # no length: the body ends when the connection closes
                self.send_header("Connection", "close")
                self.end_headers()
                for chunk in reply.chunks:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                return
            declared = reply.declared_length if reply.declared_length is not None else len(reply.body)
            self.send_header("Content-Length", str(declared))
            self.end_headers()
            self.wfile.write(reply.body)
            self.wfile.flush()

    return Handler
