"""AnthropicModel against `tether.testing.AnthropicServer`.

That server is a local server on 127.0.0.1 that follows Anthropic's documented Messages API wire format
(headers, content blocks, tool_use / tool_result pairing, alternating roles, the streaming events, the
error shapes) and rejects requests that break it, as the documented API does. It is not Anthropic's API:
these tests prove the client speaks the documented format and handles every documented failure, not how
a Claude model answers.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tether import Agent, Runner, tool
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
from tether.grounding import TOOL_GUIDE
from tether.journal import MemoryStore, ModelResponded, ToolCompleted, ToolFailed
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
    falls_back,
    model_from_spec,
)
from tether.models._parse import UNPARSED_ARGUMENTS
from tether.models.anthropic import DEFAULT_BASE_URL, AnthropicModel
from tether.testing import AnthropicServer

pytestmark = pytest.mark.anyio

KEY = "sk-ant-test-0123456789abcdef"
WEATHER = ToolDefinition(
    name="get_weather",
    description="The current weather in a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
ASK = [UserMessage(content="What is the weather in Paris?")]


@pytest.fixture
def server() -> Iterator[AnthropicServer]:
    with AnthropicServer(api_key=KEY) as server:
        yield server


@pytest.fixture
async def model(server: AnthropicServer) -> AsyncIterator[AnthropicModel]:
    model = AnthropicModel("claude-test", base_url=server.base_url, api_key=KEY)
    yield model
    await model.aclose()


def last_body(server: AnthropicServer) -> dict[str, Any]:
    request = server.requests[-1]
    assert request.rejected is None, request.rejected
    return request.body


# -- the request -----------------------------------------------------------------------------------


async def test_conversation_goes_out_in_the_documented_shape(
    server: AnthropicServer, model: AnthropicModel
) -> None:
    server.reply_text("Sunny, 18 degrees.")
    conversation: list[Message] = [
        SystemMessage(content="You answer weather questions."),
        UserMessage(content="Weather in Paris and Rome?"),
        AssistantMessage(
            content="Looking both up.",
            tool_calls=(
                ToolCall(call_id="toolu_1", name="get_weather", arguments={"city": "Paris"}),
                ToolCall(call_id="toolu_2", name="get_weather", arguments={"city": "Rome"}),
            ),
        ),
        ToolResultMessage(call_id="toolu_1", name="get_weather", content='{"temp": 18}'),
        ToolResultMessage(call_id="toolu_2", name="get_weather", content="no station", is_error=True),
        UserMessage(content="Only Paris then."),
    ]

    response = await model.request(conversation, tools=[WEATHER], settings=ModelSettings(max_tokens=64))

    assert response.text == "Sunny, 18 degrees."
    request = server.requests[-1]
    assert request.rejected is None
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    body = request.body
    assert body["system"] == "You answer weather questions."
    assert body["max_tokens"] == 64
    assert "seed" not in body  # the API has none and rejects unknown fields
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Looking both up."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
            ],
        },
        # both results and the text after them are one user turn, results first
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": '{"temp": 18}'},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "no station", "is_error": True},
                {"type": "text", "text": "Only Paris then."},
            ],
        },
    ]
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "input_schema": WEATHER.parameters,
        }
    ]
    assert body["tool_choice"] == {"type": "auto"}


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (ModelSettings(tool_choice="auto"), {"type": "auto"}),
        (ModelSettings(tool_choice="required"), {"type": "any"}),
        (
            ModelSettings(tool_choice="required", allowed_tools=("get_weather",)),
            {"type": "tool", "name": "get_weather"},
        ),
        (ModelSettings(tool_choice="none"), {"type": "none"}),
    ],
)
async def test_tool_choice_maps_to_the_apis_forms(
    server: AnthropicServer, model: AnthropicModel, settings: ModelSettings, expected: dict[str, str]
) -> None:
    server.reply_text("ok")
    await model.request(ASK, tools=[WEATHER], settings=settings)
    body = last_body(server)
    assert body["tool_choice"] == expected
    # tools stay in the prompt even when the model may not call them
    assert [t["name"] for t in body["tools"]] == ["get_weather"]


async def test_without_tools_neither_tools_nor_tool_choice_is_sent(
    server: AnthropicServer, model: AnthropicModel
) -> None:
    server.reply_text("Hello.")
    await model.request([UserMessage(content="Hi")], settings=ModelSettings(tool_choice="required"))
    body = last_body(server)
    assert "tools" not in body and "tool_choice" not in body and "system" not in body


async def test_empty_assistant_turns_are_dropped_so_roles_still_alternate(
    server: AnthropicServer, model: AnthropicModel
) -> None:
    # the loop records an empty answer, then tells the model it was empty: the API rejects empty text
    server.reply_text("It is sunny.")
    await model.request(
        [
            UserMessage(content="Weather?"),
            AssistantMessage(content="  "),
            UserMessage(content="Your answer was empty; answer the question."),
        ]
    )
    assert last_body(server)["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather?"},
                {"type": "text", "text": "Your answer was empty; answer the question."},
            ],
        }
    ]


async def test_arguments_that_were_not_json_go_back_as_an_object(
    server: AnthropicServer, model: AnthropicModel
) -> None:
    server.reply_text("Sorry.")
    await model.request(
        [
            UserMessage(content="Weather?"),
            AssistantMessage(
                tool_calls=(ToolCall(call_id="toolu_9", name="get_weather", arguments='{"city": "Par'),)
            ),
            ToolResultMessage(call_id="toolu_9", name="get_weather", content="not valid JSON", is_error=True),
        ],
        tools=[WEATHER],
    )
    use = last_body(server)["messages"][1]["content"][0]
    assert use["input"] == {"unparsed_arguments": '{"city": "Par'}


async def test_temperature_outside_the_apis_range_is_a_config_error(model: AnthropicModel) -> None:
    with pytest.raises(ConfigError, match="temperature from 0 to 1"):
        await model.request(ASK, settings=ModelSettings(temperature=1.5))


# -- the answer ------------------------------------------------------------------------------------


async def test_tool_use_answer_with_usage_and_cache_reads(
    server: AnthropicServer, model: AnthropicModel
) -> None:
    server.reply_tool_use(
        "get_weather",
        {"city": "Paris"},
        text="Let me check.",
        call_id="toolu_abc",
        usage={
            "input_tokens": 20,
            "cache_read_input_tokens": 96,
            "cache_creation_input_tokens": 4,
            "output_tokens": 14,
        },
    )

    response = await model.request(ASK, tools=[WEATHER])

    assert response.text == "Let me check."
    assert response.tool_calls == (
        ToolCall(call_id="toolu_abc", name="get_weather", arguments={"city": "Paris"}),
    )
    assert response.finish_reason == "tool_calls"
    # tether's input_tokens counts every prompt token; the cache reads are also in cached_tokens
    assert response.usage == Usage(input_tokens=120, output_tokens=14, cached_tokens=96)
    assert response.model == f"anthropic:claude-test@{server.base_url}"


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("refusal", "refusal")],
)
async def test_stop_reasons_map_to_finish_reasons(
    server: AnthropicServer, model: AnthropicModel, stop_reason: str, finish_reason: str
) -> None:
    server.reply_text("Some text", stop_reason=stop_reason)
    assert (await model.request(ASK)).finish_reason == finish_reason


async def test_streaming_passes_text_to_on_token_and_assembles_the_call(
    server: AnthropicServer, model: AnthropicModel
) -> None:
    server.reply_tool_use(
        "get_weather",
        {"city": "Paris", "units": "metric"},
        text="Let me look that up for you.",
        usage={"input_tokens": 33, "output_tokens": 21},
    )
    pieces: list[str] = []

    response = await model.request(ASK, tools=[WEATHER], on_token=pieces.append)

    assert last_body(server)["stream"] is True
    assert len(pieces) > 3 and "".join(pieces) == "Let me look that up for you."
    assert response.text == "Let me look that up for you."
    assert response.tool_calls[0].arguments == {"city": "Paris", "units": "metric"}
    assert response.finish_reason == "tool_calls"
    # input from message_start, the final output count from message_delta
    assert response.usage == Usage(input_tokens=33, output_tokens=21)


async def test_streamed_tool_input_that_is_not_json_is_kept_as_text_and_recorded(
    server: AnthropicServer, model: AnthropicModel
) -> None:
    server.reply_tool_use("get_weather", '{"city": "Par')

    response = await model.request(ASK, tools=[WEATHER], on_token=lambda _: None)

    assert response.tool_calls[0].arguments == '{"city": "Par'
    assert response.repairs == (UNPARSED_ARGUMENTS,)


async def test_a_server_that_ignores_stream_still_feeds_on_token(
    server: AnthropicServer, model: AnthropicModel
) -> None:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": "All at once."}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 5, "output_tokens": 3},
    }
    server.reply_raw(json.dumps(message).encode())
    pieces: list[str] = []
    response = await model.request(ASK, on_token=pieces.append)
    assert pieces == ["All at once."] and response.text == "All at once."


async def test_unknown_blocks_and_events_are_ignored(server: AnthropicServer, model: AnthropicModel) -> None:
    # the API documents that new event and block types may appear; a client must not fail on them
    server.reply_events(
        [
            {
                "type": "message_start",
                "message": {
                    "id": "m",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "usage": {"input_tokens": 7, "output_tokens": 1},
                },
            },
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": ""},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "hmm"},
            },
            {"type": "content_block_stop", "index": 0},
            {"type": "future_event", "detail": 1},
            {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Done."}},
            {"type": "content_block_stop", "index": 1},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}},
            {"type": "message_stop"},
        ]
    )
    pieces: list[str] = []
    response = await model.request(ASK, on_token=pieces.append)
    assert (response.text, pieces, response.usage) == (
        "Done.",
        ["Done."],
        Usage(input_tokens=7, output_tokens=4),
    )


# -- through the runner ----------------------------------------------------------------------------

FORECASTS = {"Paris": {"city": "Paris", "temp_c": 18, "sky": "sunny"}}


@tool(idempotent=True)
def get_weather(city: str) -> dict[str, Any]:
    """The current weather in a city.

    Args:
        city: the city's name, e.g. "Paris".
    """
    return FORECASTS[city]


async def test_tool_call_round_trip_through_the_runner(
    server: AnthropicServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    server.reply_tool_use("get_weather", {"city": "Paris"}, call_id="toolu_paris", text="Checking.")
    server.reply_text("It is 18°C and sunny in Paris.")
    agent = Agent(
        "weather",
        instructions="Answer with the weather tool.",
        tools=[get_weather],
        model=f"anthropic:claude-test@{server.base_url}",
    )
    store = MemoryStore()
    try:
        result = await Runner(store).run(agent, "What is the weather in Paris?")
        events = [s.event for s in await store.load(result.run_id)]
    finally:
        await agent.model.aclose()
        await store.aclose()

    assert result.status == "completed", result.reason
    assert result.output == "It is 18°C and sunny in Paris."
    assert [r.rejected for r in server.requests] == [None, None]
    second = server.requests[1].body
    assert second["system"] == f"Answer with the weather tool.\n\n{TOOL_GUIDE}"  # the agent's, then the guide
    assert second["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_paris", "content": json.dumps(FORECASTS["Paris"])}
        ],
    }
    completed = [e for e in events if isinstance(e, ToolCompleted)]
    assert [(e.call_id, e.output) for e in completed] == [("toolu_paris", FORECASTS["Paris"])]
    responded = [e for e in events if isinstance(e, ModelResponded)]
    assert responded[0].response.model == f"anthropic:claude-test@{server.base_url}"
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0


async def test_invalid_tool_json_takes_the_loops_invalid_arguments_path(
    server: AnthropicServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    server.reply_tool_use("get_weather", '{"city": "Paris"', call_id="toolu_bad")  # cut short
    server.reply_tool_use("get_weather", {"city": "Paris"}, call_id="toolu_good")
    server.reply_text("Sunny, 18°C.")
    agent = Agent("weather", tools=[get_weather], model=f"anthropic:claude-test@{server.base_url}")
    store = MemoryStore()
    tokens: list[str] = []

    class Watch:
        def event(self, run_id: str, event: Any) -> None:
            pass

        def token(self, run_id: str, text: str) -> None:
            tokens.append(text)

    try:
        result = await Runner(store, observer=Watch()).run(agent, "Weather in Paris?")
        events = [s.event for s in await store.load(result.run_id)]
    finally:
        await agent.model.aclose()
        await store.aclose()

    assert result.status == "completed", result.reason
    assert "".join(tokens).endswith("Sunny, 18°C.")
    failed = [e for e in events if isinstance(e, ToolFailed)]
    assert [(e.call_id, e.kind) for e in failed] == [("toolu_bad", "invalid_arguments")]
    assert "not valid JSON" in failed[0].message
    assert [r.rejected for r in server.requests] == [None, None, None]
    # the model was shown its own bad call and the error, in a shape the API accepts
    retry = server.requests[1].body["messages"]
    assert retry[1]["content"][0]["input"] == {"unparsed_arguments": '{"city": "Paris"'}
    assert retry[2]["content"][0]["is_error"] is True


# -- errors ----------------------------------------------------------------------------------------


async def test_401_is_an_auth_error_that_does_not_leak_the_key(server: AnthropicServer) -> None:
    model = AnthropicModel("claude-test", base_url=server.base_url, api_key="sk-ant-wrong-key-42")
    try:
        with pytest.raises(ModelAuthError) as caught:
            await model.request(ASK)
    finally:
        await model.aclose()
    assert "authentication_error" in str(caught.value) and "ANTHROPIC_API_KEY" in str(caught.value)
    assert "sk-ant-wrong-key-42" not in str(caught.value)
    assert not caught.value.retryable


async def test_403_is_an_auth_error(server: AnthropicServer, model: AnthropicModel) -> None:
    server.reply_error(403, "permission_error", "Your API key does not have permission to use this model.")
    with pytest.raises(ModelAuthError, match="permission"):
        await model.request(ASK)


async def test_404_is_model_not_found(model: AnthropicModel) -> None:
    with AnthropicServer(api_key=KEY, models=["claude-other"]) as only_other:
        wrong = AnthropicModel("claude-test", base_url=only_other.base_url, api_key=KEY)
        try:
            with pytest.raises(ModelNotFoundError, match="claude-test") as caught:
                await wrong.request(ASK)
        finally:
            await wrong.aclose()
    assert "not_found_error" in str(caught.value)


async def test_429_is_rate_limited_with_retry_after(server: AnthropicServer, model: AnthropicModel) -> None:
    server.reply_error(
        429,
        "rate_limit_error",
        "Number of request tokens has exceeded your rate limit.",
        headers={"retry-after": "7"},
    )
    with pytest.raises(ModelRateLimited) as caught:
        await model.request(ASK)
    assert caught.value.retry_after == 7.0 and caught.value.retryable
    assert "retry after 7s" in str(caught.value)


@pytest.mark.parametrize(("status", "kind"), [(500, "api_error"), (529, "overloaded_error")])
async def test_500_and_529_are_retryable_server_errors(
    server: AnthropicServer, model: AnthropicModel, status: int, kind: str
) -> None:
    server.reply_error(status, kind, "Overloaded" if status == 529 else "Internal server error")
    with pytest.raises(ModelServerError) as caught:
        await model.request(ASK)
    assert caught.value.retryable and kind in str(caught.value) and f"HTTP {status}" in str(caught.value)


async def test_a_conversation_over_the_context_window_says_so(model: AnthropicModel) -> None:
    with AnthropicServer(api_key=KEY, context_window=50) as small:
        tight = AnthropicModel("claude-test", base_url=small.base_url, api_key=KEY)
        try:
            with pytest.raises(ModelError) as caught:
                await tight.request([UserMessage(content="x" * 400)])
        finally:
            await tight.aclose()
    message = str(caught.value)
    assert "does not fit the context window" in message and "prompt is too long" in message
    assert not caught.value.retryable
    # a fallback chain moves on to a model with a longer context; other refusals it does not retry
    assert falls_back(caught.value)


async def test_other_invalid_requests_are_model_errors_with_the_apis_reason(
    server: AnthropicServer, model: AnthropicModel
) -> None:
    # a tool result whose call is not in the turn before: the server rejects it as the API does
    with pytest.raises(ModelError) as caught:
        await model.request(
            [UserMessage(content="Hi"), ToolResultMessage(call_id="toolu_nowhere", name="x", content="1")],
            tools=[WEATHER],
        )
    assert type(caught.value) is ModelError and not falls_back(caught.value)
    assert "invalid_request_error" in str(caught.value) and "toolu_nowhere" in str(caught.value)


async def test_error_event_in_mid_stream_is_a_retryable_server_error(
    server: AnthropicServer, model: AnthropicModel
) -> None:
    server.reply(text="never sent", stream_error=("overloaded_error", "Overloaded"))
    with pytest.raises(ModelServerError, match="overloaded_error") as caught:
        await model.request(ASK, on_token=lambda _: None)
    assert caught.value.retryable


async def test_errors_survive_pickling(server: AnthropicServer, model: AnthropicModel) -> None:
    server.reply_error(429, "rate_limit_error", "slow down", headers={"retry-after": "3"})
    with pytest.raises(ModelRateLimited) as caught:
        await model.request(ASK)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (type(copy), str(copy), copy.retry_after) == (ModelRateLimited, str(caught.value), 3.0)


# -- timeouts and connections ----------------------------------------------------------------------


async def test_a_server_that_hangs_times_out_at_settings_timeout(
    server: AnthropicServer, model: AnthropicModel
) -> None:
    server.reply_hang()
    with pytest.raises(ModelTimeout, match=r"within 0\.3s") as caught:
        await model.request(ASK, settings=ModelSettings(timeout_s=0.3))
    assert caught.value.retryable


async def test_a_server_that_goes_silent_times_out_at_the_models_timeout(server: AnthropicServer) -> None:
    server.reply_hang()
    model = AnthropicModel("claude-test", base_url=server.base_url, api_key=KEY, timeout_s=0.3)
    try:
        with pytest.raises(ModelTimeout, match=r"went silent for 0\.3s"):
            await model.request(ASK, settings=ModelSettings(timeout_s=30))
    finally:
        await model.aclose()


async def test_closed_port_is_unreachable(closed_port: int) -> None:
    model = AnthropicModel("claude-test", base_url=f"http://127.0.0.1:{closed_port}", api_key=KEY)
    try:
        with pytest.raises(ModelUnreachable, match=f"127.0.0.1:{closed_port}") as caught:
            await model.request(ASK)
    finally:
        await model.aclose()
    assert caught.value.retryable and "ANTHROPIC_BASE_URL" in str(caught.value)


# -- bad answers -----------------------------------------------------------------------------------


async def test_stream_event_that_is_not_json_is_a_response_error(
    server: AnthropicServer, model: AnthropicModel
) -> None:
    server.reply_events(['event: message_start\ndata: {"type": "message_start", "message": {'])
    with pytest.raises(ModelResponseError, match="not valid JSON"):
        await model.request(ASK, on_token=lambda _: None)


async def test_stream_cut_off_before_message_stop_is_retryable(
    server: AnthropicServer, model: AnthropicModel
) -> None:
    server.reply(text="A long answer that is cut off", cut_stream_after=5)
    pieces: list[str] = []
    with pytest.raises(ModelResponseError, match="before message_stop") as caught:
        await model.request(ASK, on_token=pieces.append)
    assert caught.value.retryable


async def test_delta_for_a_block_never_started_is_a_response_error(
    server: AnthropicServer, model: AnthropicModel
) -> None:
    server.reply_events(
        [
            {
                "type": "message_start",
                "message": {"id": "m", "type": "message", "role": "assistant", "content": []},
            },
            {"type": "content_block_delta", "index": 3, "delta": {"type": "text_delta", "text": "orphan"}},
        ]
    )
    with pytest.raises(ModelResponseError, match="never started"):
        await model.request(ASK, on_token=lambda _: None)


async def test_body_that_is_not_json_is_a_response_error(
    server: AnthropicServer, model: AnthropicModel
) -> None:
    server.reply_raw(b"<html>Bad gateway</html>", content_type="text/html")
    with pytest.raises(ModelResponseError, match="not valid JSON"):
        await model.request(ASK)


async def test_message_without_content_blocks_is_a_response_error(
    server: AnthropicServer, model: AnthropicModel
) -> None:
    server.reply_raw(json.dumps({"type": "message", "content": "text, not blocks"}).encode())
    with pytest.raises(ModelResponseError, match="content is not a list"):
        await model.request(ASK)


# -- model strings ---------------------------------------------------------------------------------


def test_model_string_with_a_base_url() -> None:
    model = model_from_spec("anthropic:claude-haiku-4-5@http://127.0.0.1:9999/")
    assert isinstance(model, AnthropicModel)
    assert (model.model, model.base_url) == ("claude-haiku-4-5", "http://127.0.0.1:9999")
    assert model.name == "anthropic:claude-haiku-4-5@http://127.0.0.1:9999"
    # the name it records is itself a model string for the same endpoint
    assert model_from_spec(model.name).name == model.name


def test_model_string_without_a_base_url_uses_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    default = model_from_spec("anthropic:claude-haiku-4-5")
    assert isinstance(default, AnthropicModel) and default.base_url == DEFAULT_BASE_URL
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://gateway.internal:8080")
    gateway = model_from_spec("anthropic:claude-haiku-4-5")
    assert isinstance(gateway, AnthropicModel) and gateway.base_url == "http://gateway.internal:8080"


@pytest.mark.parametrize(
    "spec", ["anthropic:", "anthropic:@http://h", "anthropic:claude@", "anthropic:claude@ftp://h"]
)
def test_bad_anthropic_model_strings_are_config_errors(spec: str) -> None:
    with pytest.raises(ConfigError):
        model_from_spec(spec)


async def test_a_base_url_ending_in_v1_is_not_doubled(server: AnthropicServer) -> None:
    server.reply_text("ok")
    model = AnthropicModel("claude-test", base_url=f"{server.base_url}/v1", api_key=KEY)
    try:
        await model.request(ASK)
    finally:
        await model.aclose()
    assert server.requests[-1].path == "/v1/messages"


def test_repr_keeps_the_key_out() -> None:
    model = AnthropicModel("claude-test", base_url="http://127.0.0.1:1", api_key=KEY)
    assert KEY not in repr(model)
