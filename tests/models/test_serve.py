"""`tether models serve`: an OpenAI-compatible server over a tether model, spoken to over real HTTP.

The request/response mapping and the errors are checked over a scripted model (fast); what the issue is
about — real `tool_calls` from the embedded model, `content: null`, tool results reaching the model,
streaming, and tether's own `OpenAICompatModel` driving a run — with Qwen2.5-Coder-0.5B (`model`).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest

pytest.importorskip("starlette", reason="tether models serve needs tether[serve]")
pytest.importorskip("uvicorn", reason="tether models serve needs tether[serve]")

import uvicorn

from tether.models import (
    AssistantMessage,
    Message,
    Model,
    ModelResponse,
    ModelSettings,
    TokenCallback,
    ToolDefinition,
    ToolResultMessage,
)
from tether.models.serve import create_app
from tether.testing import ScriptedModel, call

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
WEATHER_RESULT = "Paris: 18 degrees Celsius, sunny."


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Served:
    """`create_app(model)` served by uvicorn on 127.0.0.1 in a thread, for the duration of a `with`."""

    def __init__(self, model: Model, **options: Any) -> None:
        self.port = _free_port()
        config = uvicorn.Config(
            create_app(model, **options), host="127.0.0.1", port=self.port, log_level="warning", ws="none"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> _Served:
        self._thread.start()
        deadline = time.monotonic() + 120
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def post(self, body: Any, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.base_url}/chat/completions", json=body, timeout=120, **kwargs)


def _events(response: httpx.Response) -> list[Any]:
    """The `data:` payloads of an event stream, JSON-decoded except the final `[DONE]`."""
    payloads = [line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data: ")]
    return [p if p == "[DONE]" else json.loads(p) for p in payloads]


class _Recording(Model):
    """Answers with the next scripted response and records the settings each request carried."""

    def __init__(self, responses: Sequence[ModelResponse]) -> None:
        self._responses = list(responses)
        self.calls: list[tuple[tuple[Message, ...], tuple[ToolDefinition, ...], ModelSettings]] = []

    @property
    def name(self) -> str:
        return "test:recording"

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        settings: ModelSettings = ModelSettings(),  # noqa: B008 - frozen dataclass
        on_token: TokenCallback | None = None,
    ) -> ModelResponse:
        self.calls.append((tuple(messages), tuple(tools), settings))
        return self._responses.pop(0)


# -- over a scripted model ---------------------------------------------------------------------------


def test_a_call_comes_back_as_an_openai_tool_call_and_its_result_reaches_the_model() -> None:
    model = ScriptedModel([call("get_weather", city="Paris"), "It is 18 degrees and sunny in Paris."])
    with _Served(model, model_id="scripted") as server:
        first = server.post(
            {
                "model": "scripted",
                "messages": [{"role": "user", "content": "Weather in Paris?"}],
                "tools": [WEATHER_TOOL],
            }
        )
        assert first.status_code == 200
        choice = first.json()["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        message = choice["message"]
        assert message["content"] is None
        [wire_call] = message["tool_calls"]
        assert wire_call["type"] == "function" and wire_call["id"].startswith("call_")
        assert wire_call["function"]["name"] == "get_weather"
        assert json.loads(wire_call["function"]["arguments"]) == {"city": "Paris"}

        second = server.post(
            {
                "messages": [
                    {"role": "user", "content": "Weather in Paris?"},
                    message,  # sent back as received: content null
                    {"role": "tool", "tool_call_id": wire_call["id"], "content": WEATHER_RESULT},
                ],
                "tools": [WEATHER_TOOL],
            }
        )
    assert second.status_code == 200
    assert second.json()["choices"][0]["message"] == {
        "role": "assistant",
        "content": "It is 18 degrees and sunny in Paris.",
    }
    seen = model.requests[1]
    assert isinstance(seen[1], AssistantMessage) and seen[1].content == ""
    assert seen[1].tool_calls[0].arguments == {"city": "Paris"}
    assert seen[2] == ToolResultMessage(call_id=wire_call["id"], name="get_weather", content=WEATHER_RESULT)


def test_each_call_gets_an_id_of_its_own() -> None:
    model = ScriptedModel([[call("get_weather", city="Paris"), call("get_weather", city="Rome")]] * 2)
    with _Served(model) as server:
        body = {"messages": [{"role": "user", "content": "Paris and Rome?"}], "tools": [WEATHER_TOOL]}
        ids = [
            c["id"] for _ in range(2) for c in server.post(body).json()["choices"][0]["message"]["tool_calls"]
        ]
    assert len(set(ids)) == 4


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ("auto", ("auto", None)),
        ("none", ("none", None)),
        ("required", ("required", None)),
        ({"type": "function", "function": {"name": "get_weather"}}, ("required", ("get_weather",))),
    ],
)
def test_tool_choice_and_sampling_reach_the_model(tool_choice: Any, expected: tuple[str, Any]) -> None:
    model = _Recording([ModelResponse(text="ok")])
    with _Served(model) as server:
        response = server.post(
            {
                "messages": [
                    {"role": "developer", "content": "Be brief."},
                    {"role": "user", "content": "hi"},
                ],
                "tools": [WEATHER_TOOL],
                "tool_choice": tool_choice,
                "max_tokens": 17,
                "temperature": 0.5,
                "seed": 7,
            }
        )
    assert response.status_code == 200
    [(messages, tools, settings)] = model.calls
    assert (settings.tool_choice, settings.allowed_tools) == expected
    assert (settings.max_tokens, settings.temperature, settings.seed) == (17, 0.5, 7)
    assert [t.name for t in tools] == ["get_weather"]
    assert messages[0].role == "system" and messages[0].content == "Be brief."


def test_parallel_tool_calls_false_keeps_the_first_call() -> None:
    model = ScriptedModel([[call("get_weather", city="Paris"), call("get_weather", city="Rome")]])
    with _Served(model) as server:
        body = {
            "messages": [{"role": "user", "content": "Paris and Rome?"}],
            "tools": [WEATHER_TOOL],
            "parallel_tool_calls": False,
        }
        calls = server.post(body).json()["choices"][0]["message"]["tool_calls"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"city": "Paris"}]


def test_stream_sends_text_deltas_then_the_finish_and_usage() -> None:
    with _Served(ScriptedModel(["Hello there."])) as server:
        response = server.post(
            {
                "messages": [{"role": "user", "content": "hi"}],
                "stream": True,
                "stream_options": {"include_usage": True},
            }
        )
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello there."
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 30
    assert len({c["id"] for c in chunks}) == 1


def test_stream_sends_tool_call_deltas() -> None:
    with _Served(ScriptedModel([call("get_weather", city="Paris")])) as server:
        response = server.post(
            {"messages": [{"role": "user", "content": "Weather?"}], "tools": [WEATHER_TOOL], "stream": True}
        )
    chunks = [e for e in _events(response) if e != "[DONE]"]
    deltas = [d for c in chunks for d in c["choices"][0]["delta"].get("tool_calls", [])]
    assert [(d["index"], d["function"]["name"], json.loads(d["function"]["arguments"])) for d in deltas] == [
        (0, "get_weather", {"city": "Paris"})
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_models_lists_the_served_model() -> None:
    with _Served(ScriptedModel([]), model_id="qwen-test") as server:
        listed = httpx.get(f"{server.base_url}/models").json()
        one = httpx.get(f"{server.base_url}/models/qwen-test")
        missing = httpx.get(f"{server.base_url}/models/gpt-4")
    assert [m["id"] for m in listed["data"]] == ["qwen-test"] and listed["object"] == "list"
    assert one.status_code == 200 and one.json()["id"] == "qwen-test"
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


USER = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"messages": []}, "messages", "non-empty list"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "use system, developer"),
        ({"messages": [{"role": "user"}]}, "messages[0].content", "content is missing"),
        (
            {"messages": [USER, {"role": "tool", "tool_call_id": "call_x", "content": "18"}]},
            "messages[1].tool_call_id",
            "answers no tool call",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages[0].content",
            "text parts only",
        ),
        (
            {"messages": [USER], "tools": [{"type": "function", "function": {"name": "bad name"}}]},
            "tools[0].function.name",
            "letters, digits",
        ),
        (
            {
                "messages": [USER],
                "tools": [WEATHER_TOOL],
                "tool_choice": {"type": "function", "function": {"name": "x"}},
            },
            "tool_choice",
            "not in tools",
        ),
        ({"messages": [USER], "tool_choice": "required"}, "tool_choice", "needs tools"),
        ({"messages": [USER], "tool_choice": "sometimes"}, "tool_choice", "must be 'auto'"),
        ({"messages": [USER], "max_tokens": 0}, "max_tokens", "positive integer"),
        ({"messages": [USER], "temperature": 3}, "temperature", "from 0 to 2"),
        ({"messages": [USER], "n": 2}, "n", "one choice"),
        ({"messages": [USER], "stop": ["\n"]}, "stop", "not supported"),
        (
            {"messages": [USER], "response_format": {"type": "json_object"}},
            "response_format",
            "not supported",
        ),
    ],
)
def test_bad_requests_get_400_with_openais_error_shape(body: dict[str, Any], param: str, says: str) -> None:
    model = ScriptedModel([])
    with _Served(model) as server:
        response = server.post(body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert says in error["message"]
    assert model.request_count == 0


def test_a_body_that_is_not_json_and_a_wrong_path_get_openai_errors() -> None:
    with _Served(ScriptedModel([])) as server:
        garbage = httpx.post(f"{server.base_url}/chat/completions", content=b"{not json", timeout=30)
        wrong_path = httpx.get(f"http://127.0.0.1:{server.port}/v2/chat")
        wrong_method = httpx.get(f"{server.base_url}/chat/completions")
        other_model = server.post({"model": "gpt-4o", "messages": [USER]})
    assert garbage.status_code == 400 and "not valid JSON" in garbage.json()["error"]["message"]
    assert wrong_path.status_code == 404 and "/v1/chat/completions" in wrong_path.json()["error"]["message"]
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()
    assert (
        other_model.status_code == 404
        and "'gpt-4o' is not served here" in other_model.json()["error"]["message"]
    )


def test_a_failing_model_becomes_an_error_body() -> None:
    from tether.exceptions import ModelError, ModelTimeout

    with _Served(ScriptedModel([ModelTimeout("too slow"), ModelError("the prompt is too long")])) as server:
        timed_out = server.post({"messages": [USER]})
        too_long = server.post({"messages": [USER]})
    assert timed_out.status_code == 504 and timed_out.json()["error"]["message"] == "too slow"
    assert too_long.status_code == 400 and too_long.json()["error"]["message"] == "the prompt is too long"


def test_cli_refuses_a_model_that_is_not_embedded() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tether.cli", "models", "serve", "--model", "openai:gpt-4o@http://x/v1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "is not an embedded model" in out.stderr and "local:qwen2.5-coder-1.5b" in out.stderr


# -- over the embedded model -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen() -> Iterator[_Served]:
    pytest.importorskip("llama_cpp", reason="the embedded model needs tether[local]")
    from tether.models.llamacpp import LlamaCppModel

    with _Served(LlamaCppModel("qwen2.5-coder-0.5b", n_ctx=4096)) as server:
        yield server


WEATHER_SYSTEM = {
    "role": "system",
    "content": "You are a weather assistant. When a tool result is available, answer the user in one sentence.",
}


@pytest.mark.model
def test_embedded_model_returns_real_tool_calls_then_answers_from_the_result(qwen: _Served) -> None:
    question = {"role": "user", "content": "What is the weather in Paris? Use the get_weather tool."}
    first = qwen.post(
        {
            "model": "qwen2.5-coder-0.5b",
            "messages": [WEATHER_SYSTEM, question],
            "tools": [WEATHER_TOOL],
            "max_tokens": 48,
        }
    )
    assert first.status_code == 200, first.text
    choice = first.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None
    [wire_call] = message["tool_calls"]
    assert wire_call["function"]["name"] == "get_weather"
    assert json.loads(wire_call["function"]["arguments"]) == {"city": "Paris"}

    # the assistant turn goes back with "content": null (the stock llama_cpp.server rejects it), and the
    # tool result reaches the model (chatml-function-calling drops it): the answer quotes it. No tools this
    # time: the 0.5B model, offered the tool again, asks for the same call again.
    second = qwen.post(
        {
            "messages": [
                WEATHER_SYSTEM,
                question,
                message,
                {"role": "tool", "tool_call_id": wire_call["id"], "content": WEATHER_RESULT},
            ],
            "max_tokens": 48,
        }
    )
    assert second.status_code == 200, second.text
    answer = second.json()["choices"][0]
    assert answer["finish_reason"] == "stop"
    assert "tool_calls" not in answer["message"]
    assert "18" in answer["message"]["content"]


@pytest.mark.model
def test_a_conversation_sent_again_is_served_from_the_kv_cache(qwen: _Served) -> None:
    body = {"messages": [WEATHER_SYSTEM, {"role": "user", "content": "Is it cold in Oslo?"}], "max_tokens": 1}
    qwen.post(body)
    again = qwen.post(body).json()["usage"]
    # llama.cpp evaluates the last prompt token again for fresh logits; everything before it is reused
    assert again["prompt_tokens_details"]["cached_tokens"] == again["prompt_tokens"] - 1


@pytest.mark.model
def test_embedded_model_streams_text_and_tool_calls(qwen: _Served) -> None:
    text_stream = qwen.post(
        {
            "messages": [{"role": "user", "content": "Say hello in three words."}],
            "max_tokens": 16,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    chunks = [e for e in _events(text_stream) if e != "[DONE]"]
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert len([p for p in pieces if p]) >= 2, "the text arrived in one piece, not streamed"
    assert chunks[-1]["usage"]["completion_tokens"] > 0

    call_stream = qwen.post(
        {
            "messages": [{"role": "user", "content": "What is the weather in Rome?"}],
            "tools": [WEATHER_TOOL],
            "tool_choice": "required",
            "max_tokens": 48,
            "stream": True,
        }
    )
    chunks = [e for e in _events(call_stream) if e != "[DONE]"]
    deltas = [d for c in chunks for d in c["choices"][0]["delta"].get("tool_calls", [])]
    assert [d["function"]["name"] for d in deltas] == ["get_weather"]
    assert json.loads(deltas[0]["function"]["arguments"]) == {"city": "Rome"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.fixture(scope="module")
def qwen_standard() -> Iterator[_Served]:
    pytest.importorskip("llama_cpp", reason="the embedded model needs tether[local]")
    from tether.models.llamacpp import LlamaCppModel

    with _Served(LlamaCppModel("qwen2.5-coder-1.5b", n_ctx=4096)) as server:
        yield server


# The 1.5B model here: told to answer after its call, the 0.5B one writes the call again as text (with
# tool_choice "none" too), so a run on it ends in loop detection whichever way it is served.
@pytest.mark.model
@pytest.mark.anyio
async def test_tethers_openai_model_drives_a_run_with_a_tool_against_it(qwen_standard: _Served) -> None:
    from tether import Agent, Limits, Runner, tool
    from tether.journal import MemoryStore, ToolCompleted
    from tether.models.openai_compat import OpenAICompatModel

    asked: list[str] = []

    @tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city.

        Args:
            city: the city's name.
        """
        asked.append(city)
        return WEATHER_RESULT

    model = OpenAICompatModel("qwen2.5-coder-1.5b", base_url=qwen_standard.base_url)
    agent = Agent(
        "weather",
        instructions="Answer questions about the weather. Call get_weather, then answer in one sentence.",
        tools=[get_weather],
        model=model,
        limits=Limits(max_steps=5, max_output_tokens=64),
    )
    store = MemoryStore()
    try:
        result = await Runner(store).run(agent, "What is the weather in Paris?")
    finally:
        await model.aclose()
    assert result.status == "completed", result.reason
    assert asked and asked[0] == "Paris"
    assert "18" in (result.output or "")
    events = [s.event for s in await store.load(result.run_id)]
    assert any(isinstance(e, ToolCompleted) and e.tool == "get_weather" for e in events)


@pytest.mark.model
def test_cli_serves_the_embedded_model(tmp_path: Any) -> None:
    port = _free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tether.cli",
                "models",
                "serve",
                "--model",
                "local:qwen2.5-coder-0.5b",
                "--port",
                str(port),
                "--n-ctx",
                "2048",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()
            try:
                models = httpx.get(f"{base}/models", timeout=2).json()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        assert models["data"][0]["id"] == "qwen2.5-coder-0.5b"
        answer = httpx.post(
            f"{base}/chat/completions",
            json={
                "model": "qwen2.5-coder-0.5b",
                "messages": [{"role": "user", "content": "Say hi."}],
                "max_tokens": 8,
            },
            timeout=120,
        )
        assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"]
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "serving local:qwen2.5-coder-0.5b at http://127.0.0.1:" in log.read_text()
