"""Fixtures for the model tests: real HTTP servers on 127.0.0.1.

- `openai_server`: a small threaded HTTP server that answers each request with the next canned reply
  and records what it received. Fast; the client under test talks to it over real sockets.
- `llama_cpp_server`: the stock `python -m llama_cpp.server` serving the embedded GGUF, started once
  per session (for `@pytest.mark.provider` tests).
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tether.testing._http_server import ScriptedHTTPServer, ScriptedReply

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


class FakeOpenAIServer(ScriptedHTTPServer[ScriptedReply]):
    """A real HTTP server on 127.0.0.1 that plays back canned replies, first in first out."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[RecordedRequest] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reply(self, reply: ScriptedReply) -> None:
        self._queue(reply)

    def reply_json(self, data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self.reply(
            ScriptedReply(
                status=status,
                headers={"Content-Type": "application/json", **(headers or {})},
                body=json.dumps(data).encode(),
            )
        )

    def reply_sse(self, events: Sequence[Any], *, done: bool = True) -> None:
        """Stream `events` (JSON-encoded unless already `str`) as server-sent events."""
        chunks = [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode() for e in events]
        if done:
            chunks.append(b"data: [DONE]\n\n")
        self.reply(ScriptedReply(headers={"Content-Type": "text/event-stream"}, chunks=chunks))

    def _reply(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> ScriptedReply:
        with self._lock:
            self.requests.append(RecordedRequest(method=method, path=path, headers=headers, body=body))
        reply = self._next()
        if reply is not None:
            return reply
        error = json.dumps({"error": {"message": "the test queued no reply for this request"}})
        return ScriptedReply(status=599, body=error.encode())


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    """A fake OpenAI-compatible server on a free port; queue replies, then read `requests`."""
    with FakeOpenAIServer() as server:
        yield server


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
