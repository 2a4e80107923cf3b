"""OpenAICompatModel against a real HTTP server on 127.0.0.1 that plays back canned answers."""

from __future__ import annotations

import email.utils
import json
import pickle
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tether.exceptions import (
    ConfigError,
    ModelAuthError,
    ModelError,
    ModelNotFoundError,
    ModelRateLimited,
    ModelResponseError,
    ModelServerError,
    ModelTimeout,
    ModelUnreachable,
)
from tether.models import (
    AssistantMessage,
    Message,
    ModelSettings,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from tether.models.openai_compat import OpenAICompatModel

if TYPE_CHECKING:
    from conftest import FakeOpenAIServer

pytestmark = pytest.mark.anyio

WEATHER = ToolDefinition(
    name="get_weather",
    description="The current weather in a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
ASK = [UserMessage(content="What is the weather in Paris?")]
SECRET_KEY = "sk-test-0123456789abcdef"


def completion(
    *,
    content: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str = "stop",
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "qwen",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": usage or {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
    }


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


@pytest.fixture
async def model(openai_server: FakeOpenAIServer) -> AsyncIterator[OpenAICompatModel]:
    model = OpenAICompatModel("qwen", base_url=openai_server.base_url, api_key=SECRET_KEY)
    yield model
    await model.aclose()


# -- answers ---------------------------------------------------------------------------------------


async def test_native_tool_calls_are_parsed_with_usage(
    openai_server: FakeOpenAIServer, model: OpenAICompatModel
) -> None:
    openai_server.reply_json(
        completion(
            tool_calls=[
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
            finish_reason="tool_calls",
            usage={
                "prompt_tokens": 120,
                "completion_tokens": 14,
                "total_tokens": 134,
                "prompt_tokens_details": {"cached_tokens": 96},
            },
        )
    )

    response = await model.request(ASK, tools=[WEATHER])

    assert response.tool_calls == (
        ToolCall(call_id="call_abc", name="get_weather", arguments={"city": "Paris"}),
    )
    assert response.text == ""
    assert response.usage == Usage(input_tokens=120, output_tokens=14, cached_tokens=96)
    assert response.finish_reason == "tool_calls"
    assert response.model == f"openai:qwen@{openai_server.base_url}"
    assert response.duration_s > 0
    assert response.repairs == ()


async def test_request_body_follows_the_openai_wire_format(
    openai_server: FakeOpenAIServer, model: OpenAICompatModel
) -> None:
    openai_server.reply_json(completion(content="It is sunny."))
    conversation: list[Message] = [
        SystemMessage(content="You are a weather bot."),
        UserMessage(content="Weather in Paris?"),
        AssistantMessage(
            tool_calls=(ToolCall(call_id="call_1", name="get_weather", arguments={"city": "Paris"}),)
        ),
        ToolResultMessage(call_id="call_1", name="get_weather", content='{"sky": "sunny"}'),
    ]

    response = await model.request(
        conversation,
        tools=[WEATHER],
        settings=ModelSettings(max_tokens=64, temperature=0.2, seed=7, tool_choice="required"),
    )

    assert response.text == "It is sunny."
    [sent] = openai_server.requests
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {SECRET_KEY}"
    body = sent.json()
    assert body["model"] == "qwen"
    assert (body["max_tokens"], body["temperature"], body["seed"]) == (64, 0.2, 7)
    assert body["tool_choice"] == "required"
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The current weather in a city.",
                "parameters": WEATHER.parameters,
            },
        }
    ]
    assert "stream" not in body
    system, user, assistant, tool = body["messages"]
    assert system == {"role": "system", "content": "You are a weather bot."}
    assert user == {"role": "user", "content": "Weather in Paris?"}
    # llama_cpp.server rejects "content": null, so an assistant turn that only calls tools sends ""
    assert assistant["content"] == ""
    assert assistant["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        }
    ]
    assert tool == {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "sunny"}'}
    assert all(message["content"] is not None for message in body["messages"])


async def test_without_tools_there_is_no_tool_choice_and_no_seed_when_unset(
    openai_server: FakeOpenAIServer, model: OpenAICompatModel
) -> None:
    openai_server.reply_json(completion(content="Hello!"))

    response = await model.request([UserMessage(content="Hi")], settings=ModelSettings(seed=None))

    assert response.text == "Hello!"
    assert response.usage == Usage(input_tokens=20, output_tokens=5)
    body = openai_server.requests[0].json()
    assert not {"tools", "tool_choice", "seed"} & body.keys()


async def test_arguments_that_are_not_json_are_kept_as_text(
    openai_server: FakeOpenAIServer, model: OpenAICompatModel
) -> None:
    openai_server.reply_json(
        completion(
            tool_calls=[
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{city: Paris"},
                }
            ],
            finish_reason="tool_calls",
        )
    )

    response = await model.request(ASK, tools=[WEATHER])

    assert response.tool_calls == (ToolCall(call_id="c1", name="get_weather", arguments="{city: Paris"),)


async def test_tool_call_written_as_text_is_parsed(
    openai_server: FakeOpenAIServer, model: OpenAICompatModel
) -> None:
    # what llama_cpp.server answers with a Qwen model: the call is text in `content`
    openai_server.reply_json(
        completion(
            content='<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
        )
    )

    response = await model.request(ASK, tools=[WEATHER])

    [call] = response.tool_calls
    assert (call.name, call.arguments) == ("get_weather", {"city": "Paris"})
    assert call.call_id
    assert response.text == ""
    assert response.finish_reason == "tool_calls"
    # the model wrote its native format faithfully: nothing needed repair
    assert response.repairs == ()


async def test_repairs_made_to_read_a_text_call_are_recorded(
    openai_server: FakeOpenAIServer, model: OpenAICompatModel
) -> None:
    openai_server.reply_json(
        completion(content='Sure.\n<tool_call>\n{"name": "get_weather", "parameters": {"city": "Paris"}}')
    )

    response = await model.request(ASK, tools=[WEATHER])

    [call] = response.tool_calls
    assert (call.name, call.arguments) == ("get_weather", {"city": "Paris"})
    assert response.text == "Sure."
    assert response.repairs == ("unterminated_tool_call", "parameters_key")


async def test_text_is_not_read_as_a_call_when_tool_choice_is_none(
    openai_server: FakeOpenAIServer, model: OpenAICompatModel
) -> None:
    text = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    openai_server.reply_json(completion(content=text))

    response = await model.request(ASK, tools=[WEATHER], settings=ModelSettings(tool_choice="none"))

    assert (response.text, response.tool_calls) == (text, ())


# -- streaming -------------------------------------------------------------------------------------


async def test_streaming_assembles_text_tool_call_deltas_and_usage(
    openai_server: FakeOpenAIServer, model: OpenAICompatModel
) -> None:
    openai_server.reply_sse(
        [
            chunk({"role": "assistant", "content": "Let me "}),
            chunk({"content": "check."}),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_9",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ""},
                        }
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]}),
            chunk({}, finish_reason="tool_calls"),
            {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "choices": [],
                "usage": {
                    "prompt_tokens": 50,
                    "completion_tokens": 12,
                    "total_tokens": 62,
                    "prompt_tokens_details": {"cached_tokens": 32},
                },
            },
        ]
    )
    tokens: list[str] = []

    response = await model.request(ASK, tools=[WEATHER], on_token=tokens.append)

    assert tokens == ["Let me ", "check."]
    assert response.text == "Let me check."
    assert response.tool_calls == (
        ToolCall(call_id="call_9", name="get_weather", arguments={"city": "Paris"}),
    )
    assert response.usage == Usage(input_tokens=50, output_tokens=12, cached_tokens=32)
    assert response.finish_reason == "tool_calls"
    body = openai_server.requests[0].json()
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_streamed_text_call_is_parsed_and_kept_from_on_token(
    openai_server: FakeOpenAIServer, model: OpenAICompatModel
) -> None:
    pieces = [
        "Checking.",
        " <tool",
        '_call>\n{"name": "get_weather", ',
        '"arguments": {"city": "Paris"}}\n</tool_call>',
    ]
    openai_server.reply_sse([chunk({"content": p}) for p in pieces] + [chunk({}, finish_reason="stop")])
    tokens: list[str] = []

    response = await model.request(ASK, tools=[WEATHER], on_token=tokens.append)

    assert "".join(tokens) == "Checking. "
    [call] = response.tool_calls
    assert (call.name, call.arguments) == ("get_weather", {"city": "Paris"})
    assert response.text == "Checking."
    assert response.finish_reason == "tool_calls"


async def test_streamed_json_call_is_parsed_and_kept_from_on_token(
    openai_server: FakeOpenAIServer, model: OpenAICompatModel
) -> None:
    # what llama_cpp.server streams with Qwen2.5-Coder-0.5B: the call as bare JSON, token by token
    pieces = ['{"', "name", '": "get_weather", ', '"arguments": {"city": ', '"Paris"}}']
    openai_server.reply_sse([chunk({"content": p}) for p in pieces] + [chunk({}, finish_reason="stop")])
    tokens: list[str] = []

    response = await model.request(ASK, tools=[WEATHER], on_token=tokens.append)

    assert tokens == []
    assert response.tool_calls == (
        ToolCall(call_id="call_0", name="get_weather", arguments={"city": "Paris"}),
    )
    assert response.repairs == ("bare_json_call",)


async def test_streamed_code_that_is_not_a_call_still_reaches_on_token(
    openai_server: FakeOpenAIServer, model: OpenAICompatModel
) -> None:
    pieces = ["```python\n", "print('hi')\n", "```"]
    openai_server.reply_sse([chunk({"content": p}) for p in pieces] + [chunk({}, finish_reason="stop")])
    tokens: list[str] = []

    response = await model.request(ASK, tools=[WEATHER], on_token=tokens.append)

    assert "".join(tokens) == response.text == "```python\nprint('hi')\n```"
    assert response.tool_calls == ()


async def test_streamed_text_flows_live_without_tools(
    openai_server: FakeOpenAIServer, model: OpenAICompatModel
) -> None:
    pieces = ["{", "not a call", "}"]
    openai_server.reply_sse([chunk({"content": p}) for p in pieces] + [chunk({}, finish_reason="stop")])
    tokens: list[str] = []

    await model.request(ASK, on_token=tokens.append)

    assert tokens == pieces


async def test_stream_cut_off_before_the_end_is_a_retryable_response_error(
    openai_server: FakeOpenAIServer, model: OpenAICompatModel
) -> None:
    openai_server.reply_sse([chunk({"content": "Half an ans"})], done=False)

    with pytest.raises(ModelResponseError, match="before the answer was complete") as caught:
        await model.request(ASK, on_token=lambda _: None)

    assert caught.value.retryable


async def test_stream_event_that_is_not_json_is_a_response_error(
    openai_server: FakeOpenAIServer, model: OpenAICompatModel
) -> None:
    openai_server.reply_sse([chunk({"content": "ok"}), '{"choices": [{"delta": {"content": "tr'])

    with pytest.raises(ModelResponseError, match="not valid JSON"):
        await model.request(ASK, on_token=lambda _: None)


async def test_error_event_in_mid_stream_is_a_retryable_server_error(
    openai_server: FakeOpenAIServer, model: OpenAICompatModel
) -> None:
    openai_server.reply_sse([chunk({"content": "Par"}), {"error": {"message": "llama_decode returned -3"}}])

    with pytest.raises(ModelServerError, match="mid-answer: llama_decode returned -3") as caught:
        await model.request(ASK, on_token=lambda _: None)

    assert caught.value.retryable


# -- errors ----------------------------------------------------------------------------------------


def _reply_error(
    server: FakeOpenAIServer, status: int, message: str, headers: dict[str, str] | None = None
) -> None:
    server.reply_json({"error": {"message": message, "type": "error"}}, status=status, headers=headers)


async def test_401_is_an_auth_error_that_does_not_leak_the_key(
    openai_server: FakeOpenAIServer, model: OpenAICompatModel
) -> None:
    _reply_error(openai_server, 401, f"Incorrect API key provided: {SECRET_KEY}")

    with pytest.raises(ModelAuthError) as caught:
        await model.request(ASK)

    message = str(caught.value)
    assert openai_server.base_url in message
    assert "OPENAI_API_KEY" in message
    assert "Incorrect API key provided" in message
    assert SECRET_KEY not in message
    assert SECRET_KEY not in repr(model)
    assert not caught.value.retryable


async def test_403_is_an_auth_error(openai_server: FakeOpenAIServer, model: OpenAICompatModel) -> None:
    _reply_error(openai_server, 403, "forbidden")

    with pytest.raises(ModelAuthError, match="forbidden"):
        await model.request(ASK)


async def test_404_is_model_not_found_with_the_hint_about_v1(
    openai_server: FakeOpenAIServer, model: OpenAICompatModel
) -> None:
    _reply_error(openai_server, 404, "The model `qwen` does not exist")

    with pytest.raises(ModelNotFoundError) as caught:
        await model.request(ASK)

    message = str(caught.value)
    assert "'qwen'" in message and "/v1" in message and "does not exist" in message
    assert not caught.value.retryable


async def test_429_is_rate_limited_with_retry_after_seconds(
    openai_server: FakeOpenAIServer, model: OpenAICompatModel
) -> None:
    _reply_error(openai_server, 429, "Rate limit reached", headers={"Retry-After": "7"})

    with pytest.raises(ModelRateLimited, match="retry after 7s") as caught:
        await model.request(ASK)

    assert caught.value.retry_after == 7.0
    assert caught.value.retryable


async def test_429_retry_after_as_an_http_date(
    openai_server: FakeOpenAIServer, model: OpenAICompatModel
) -> None:
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    _reply_error(openai_server, 429, "slow down", headers={"Retry-After": when})

    with pytest.raises(ModelRateLimited) as caught:
        await model.request(ASK)

    assert caught.value.retry_after is not None
    assert 25 <= caught.value.retry_after <= 30


async def test_500_is_a_retryable_server_error_with_the_servers_message(
    openai_server: FakeOpenAIServer, model: OpenAICompatModel
) -> None:
    _reply_error(openai_server, 500, "llama_decode returned -1")

    with pytest.raises(ModelServerError, match="llama_decode returned -1") as caught:
        await model.request(ASK)

    assert caught.value.retryable
    assert caught.value.retry_after is None


async def test_503_is_a_retryable_server_error(
    openai_server: FakeOpenAIServer, model: OpenAICompatModel
) -> None:
    page = "<html><body>" + "Service Unavailable " * 40 + "</body></html>"
    openai_server.reply_raw(page.encode(), status=503, content_type="text/html", headers={"Retry-After": "2"})

    with pytest.raises(ModelServerError, match="HTTP 503") as caught:
        await model.request(ASK)

    assert caught.value.retryable
    assert caught.value.retry_after == 2.0
    # a whole HTML page is cut to a bounded excerpt on one line
    assert len(str(caught.value)) < 400
    assert "\n" not in str(caught.value)


async def test_other_4xx_is_a_model_error_with_the_servers_detail(
    openai_server: FakeOpenAIServer, model: OpenAICompatModel
) -> None:
    openai_server.reply_json({"detail": "Requested tokens (5000) exceed context window of 4096"}, status=400)

    with pytest.raises(ModelError, match="exceed context window") as caught:
        await model.request(ASK)

    assert not caught.value.retryable


async def test_closed_port_is_unreachable_and_says_how_to_start_a_server(closed_port: int) -> None:
    model = OpenAICompatModel("qwen", base_url=f"http://127.0.0.1:{closed_port}/v1")
    try:
        with pytest.raises(ModelUnreachable, match="is the server running") as caught:
            await model.request(ASK)
    finally:
        await model.aclose()

    assert f"127.0.0.1:{closed_port}" in str(caught.value)
    assert "llama_cpp.server" in str(caught.value)
    assert caught.value.retryable


async def test_server_that_hangs_times_out_at_settings_timeout(
    openai_server: FakeOpenAIServer, model: OpenAICompatModel
) -> None:
    openai_server.reply_hang()

    with pytest.raises(ModelTimeout, match=r"within 0\.3s") as caught:
        await model.request(ASK, settings=ModelSettings(timeout_s=0.3))

    assert caught.value.retryable


async def test_server_that_goes_silent_times_out_at_the_models_timeout(
    openai_server: FakeOpenAIServer,
) -> None:
    openai_server.reply_hang()
    model = OpenAICompatModel("qwen", base_url=openai_server.base_url, timeout_s=0.3)
    try:
        with pytest.raises(ModelTimeout, match=r"silent for 0\.3s"):
            await model.request(ASK, settings=ModelSettings(timeout_s=30))
    finally:
        await model.aclose()


async def test_json_cut_short_is_a_response_error(
    openai_server: FakeOpenAIServer, model: OpenAICompatModel
) -> None:
    whole = json.dumps(completion(content="Hello"))
    openai_server.reply_raw(whole[: len(whole) // 2].encode())

    with pytest.raises(ModelResponseError, match="not valid JSON") as caught:
        await model.request(ASK)

    assert openai_server.base_url in str(caught.value)


async def test_body_cut_off_by_a_closed_connection_is_a_retryable_response_error(
    openai_server: FakeOpenAIServer, model: OpenAICompatModel
) -> None:
    whole = json.dumps(completion(content="Hello")).encode()
    openai_server.reply_raw(whole[:40], declared_length=len(whole))

    with pytest.raises(ModelResponseError, match="closed the connection") as caught:
        await model.request(ASK)

    assert caught.value.retryable


async def test_html_body_is_a_response_error(
    openai_server: FakeOpenAIServer, model: OpenAICompatModel
) -> None:
    openai_server.reply_raw(b"<html>proxy login</html>", content_type="text/html")

    with pytest.raises(ModelResponseError, match="not valid JSON"):
        await model.request(ASK)


async def test_json_of_an_unexpected_shape_is_a_response_error(
    openai_server: FakeOpenAIServer, model: OpenAICompatModel
) -> None:
    openai_server.reply_json({"object": "list", "data": []})

    with pytest.raises(ModelResponseError, match="unexpected shape: no choices"):
        await model.request(ASK)


async def test_errors_survive_pickling(openai_server: FakeOpenAIServer, model: OpenAICompatModel) -> None:
    _reply_error(openai_server, 429, "slow down", headers={"Retry-After": "3"})

    with pytest.raises(ModelRateLimited) as caught:
        await model.request(ASK)

    copy = pickle.loads(pickle.dumps(caught.value))
    assert (type(copy), str(copy), copy.retry_after) == (ModelRateLimited, str(caught.value), 3.0)


# -- configuration and lifecycle -------------------------------------------------------------------


async def test_api_key_falls_back_to_the_environment(
    openai_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    openai_server.reply_json(completion(content="a"))
    openai_server.reply_json(completion(content="b"))
    with_env = OpenAICompatModel("qwen", base_url=openai_server.base_url, headers={"X-Team": "core"})
    monkeypatch.delenv("OPENAI_API_KEY")
    without = OpenAICompatModel("qwen", base_url=openai_server.base_url)
    try:
        await with_env.request(ASK)
        await without.request(ASK)
    finally:
        await with_env.aclose()
        await without.aclose()

    first, second = openai_server.requests
    assert first.headers["authorization"] == "Bearer sk-from-env"
    assert first.headers["x-team"] == "core"
    assert "authorization" not in second.headers


async def test_a_client_passed_in_is_used_and_left_open(openai_server: FakeOpenAIServer) -> None:
    openai_server.reply_json(completion(content="hi"))
    async with httpx.AsyncClient(headers={"X-Via": "shared"}) as client:
        model = OpenAICompatModel("qwen", base_url=openai_server.base_url + "/", http_client=client)
        await model.request(ASK)
        await model.aclose()
        assert not client.is_closed

    assert openai_server.requests[0].headers["x-via"] == "shared"
    assert model.name == f"openai:qwen@{openai_server.base_url}"


async def test_aclose_closes_the_models_own_client(openai_server: FakeOpenAIServer) -> None:
    openai_server.reply_json(completion(content="hi"))
    model = OpenAICompatModel("qwen", base_url=openai_server.base_url)
    await model.request(ASK)
    client = model._http.client()

    await model.aclose()

    assert client.is_closed


@pytest.mark.parametrize("base_url", ["127.0.0.1:8080/v1", "ftp://host/v1", "http://"])
def test_base_url_must_be_http(base_url: str) -> None:
    with pytest.raises(ConfigError, match="not an http"):
        OpenAICompatModel("qwen", base_url=base_url)
