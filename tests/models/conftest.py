"""Fixtures for the model tests: real HTTP servers on 127.0.0.1.

- `openai_server`: a small threaded HTTP server that answers each request with the next canned reply
  and records what it received. Fast; the client under test talks to it over real sockets.
- `llama_cpp_server`: the stock `python -m llama_cpp.server` serving the embedded GGUF, started once
  per session (for `@pytest.mark.provider` tests).
"""

from __future__ import annotations

import collections
import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

# -- a canned OpenAI-compatible server -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RecordedRequest:
    """One request the fake server received."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True, kw_only=True)
class CannedReply:
    """How the fake server answers one request.

    Attributes:
        status: the HTTP status.
        headers: extra response headers.
        body: sent in one piece, with a `Content-Length` of `declared_length` when given (a larger one
            makes a truncated body).
        chunks: sent one by one without a length, the connection closing after the last (SSE).
        hang: answer nothing until the fixture ends.
    """

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    declared_length: int | None = None
    chunks: Sequence[bytes] | None = None
    hang: bool = False


class FakeOpenAIServer:
    """A real HTTP server on 127.0.0.1 that plays back canned replies, first in first out."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._replies: collections.deque[CannedReply] = collections.deque()
        self._lock = threading.Lock()
        # set when the fixture ends, so that a hanging handler returns and its thread can be joined
        self.released = threading.Event()
        self._httpd = _QuietThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reply(self, reply: CannedReply) -> None:
        with self._lock:
            self._replies.append(reply)

    def reply_json(self, data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self.reply(
            CannedReply(
                status=status,
                headers={"Content-Type": "application/json", **(headers or {})},
                body=json.dumps(data).encode(),
            )
        )

    def reply_raw(
        self,
        body: bytes,
        *,
        status: int = 200,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
        declared_length: int | None = None,
    ) -> None:
        """Answer with `body` as is; a `declared_length` beyond it makes a body cut off mid-way."""
        self.reply(
            CannedReply(
                status=status,
                headers={"Content-Type": content_type, **(headers or {})},
                body=body,
                declared_length=declared_length,
            )
        )

    def reply_sse(self, events: Sequence[Any], *, done: bool = True) -> None:
        """Stream `events` (JSON-encoded unless already `str`) as server-sent events."""
        chunks = [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode() for e in events]
        if done:
            chunks.append(b"data: [DONE]\n\n")
        self.reply(CannedReply(headers={"Content-Type": "text/event-stream"}, chunks=chunks))

    def reply_hang(self) -> None:
        self.reply(CannedReply(hang=True))

    def _next_reply(self) -> CannedReply:
        with self._lock:
            if self._replies:
                return self._replies.popleft()
        body = json.dumps({"error": {"message": "the test queued no reply for this request"}})
        return CannedReply(status=599, body=body.encode())

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.released.set()
        self._httpd.shutdown()
        # joins the handler threads (block_on_close), so none outlives the test
        self._httpd.server_close()
        self._thread.join(timeout=10)


class _QuietThreadingHTTPServer(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that gave up (timeout tests) leaves a broken pipe behind: expected, not news
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler_for(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
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
            server._record(
                RecordedRequest(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
            )
            reply = server._next_reply()
            if reply.hang:
                server.released.wait(timeout=60)
                return
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if reply.chunks is not None:
                # HTTP/1.0 without a length: the body ends when the connection closes
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


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    """A fake OpenAI-compatible server on a free port; queue replies, then read `requests`."""
    server = FakeOpenAIServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (connections are refused)."""
    return _free_port()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the stock llama.cpp server --------------------------------------------------------------------

LLAMA_CPP_MODEL_ALIAS = "qwen2.5-coder-0.5b"
_LLAMA_CPP_START_DEADLINE_S = 180.0


@pytest.fixture(scope="session")
def llama_cpp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m llama_cpp.server` serving Qwen2.5-Coder-0.5B on a free port; yields its base URL.

    Started once per session and stopped at its end (terminate, then kill), so no process outlives
    the tests. Its output goes to a log file whose tail is shown if it fails to start.
    """
    # imported here: the fast tests must not need the embedded model or llama.cpp
    from tether.models._gguf import ensure_model_file

    gguf = ensure_model_file("qwen2.5-coder-0.5b")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llama_cpp_server") / "server.log"
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        LLAMA_CPP_MODEL_ALIAS,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "4096",
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            base_url = f"http://127.0.0.1:{port}/v1"
            _wait_until_serving(process, f"{base_url}/models", log_path)
            yield base_url
        finally:
            _stop(process)


def _wait_until_serving(process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + _LLAMA_CPP_START_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"llama_cpp.server exited with {process.returncode}:\n{_tail(log_path)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        time.sleep(0.25)
    pytest.fail(
        f"llama_cpp.server did not serve {url} within {_LLAMA_CPP_START_DEADLINE_S:g}s:\n{_tail(log_path)}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"
