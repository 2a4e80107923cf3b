"""OpenAICompatModel against the stock `python -m llama_cpp.server` running Qwen2.5-Coder-0.5B.

That server answers tool calls as text in `content` and rejects `"content": null`; these tests show
that tether still gets parsed calls out of it and that a whole tool round trip is accepted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tether.exceptions import ModelError, ModelNotFoundError
from tether.models import (
    AssistantMessage,
    Message,
    ModelSettings,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolResultMessage,
    UserMessage,
)
from tether.models.openai_compat import OpenAICompatModel

pytestmark = [pytest.mark.provider, pytest.mark.anyio]

WEATHER = ToolDefinition(
    name="get_weather",
    description="Get the current weather in a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
WEATHER_QUESTION = UserMessage(content="What is the weather in Paris? Use the get_weather tool.")
GREEDY = ModelSettings(max_tokens=96, temperature=0.0, seed=0)


@pytest.fixture
async def model(llama_cpp_server: str) -> AsyncIterator[OpenAICompatModel]:
    model = OpenAICompatModel("qwen2.5-coder-0.5b", base_url=llama_cpp_server)
    yield model
    await model.aclose()


async def test_plain_chat_answer(model: OpenAICompatModel) -> None:
    response = await model.request(
        [UserMessage(content="What is the capital of France? Answer with one word.")], settings=GREEDY
    )

    assert "paris" in response.text.lower()
    assert response.tool_calls == ()
    assert response.finish_reason == "stop"
    assert response.model == f"openai:qwen2.5-coder-0.5b@{model.base_url}"


async def test_tool_call_is_parsed_with_valid_arguments(model: OpenAICompatModel) -> None:
    response = await model.request([WEATHER_QUESTION], tools=[WEATHER], settings=GREEDY)

    [call] = response.tool_calls
    assert call.name == "get_weather"
    assert isinstance(call.arguments, dict)
    assert "paris" in str(call.arguments.get("city", "")).lower()
    assert response.finish_reason == "tool_calls"


async def test_conversation_with_a_tool_call_and_its_result_is_accepted(model: OpenAICompatModel) -> None:
    # an assistant turn with only tool calls is what llama_cpp.server rejected with "content": null
    conversation: list[Message] = [
        SystemMessage(content="You answer weather questions with the get_weather tool."),
        WEATHER_QUESTION,
        AssistantMessage(
            tool_calls=(ToolCall(call_id="call_0", name="get_weather", arguments={"city": "Paris"}),)
        ),
        ToolResultMessage(
            call_id="call_0", name="get_weather", content='{"temperature_c": 18, "sky": "sunny"}'
        ),
    ]

    response = await model.request(conversation, tools=[WEATHER], settings=ModelSettings(max_tokens=48))

    assert response.text or response.tool_calls
    # the tool result reached the prompt: it is longer than the question alone
    alone = await model.request([WEATHER_QUESTION], tools=[WEATHER], settings=GREEDY)
    assert response.usage.input_tokens > alone.usage.input_tokens


async def test_usage_is_counted(model: OpenAICompatModel) -> None:
    response = await model.request(
        [UserMessage(content="Write a haiku about the sea.")], settings=ModelSettings(max_tokens=8)
    )

    assert response.usage.input_tokens > 0
    assert 0 < response.usage.output_tokens <= 8
    assert response.finish_reason == "length"


async def test_streaming_passes_text_to_on_token(model: OpenAICompatModel) -> None:
    tokens: list[str] = []

    response = await model.request(
        [UserMessage(content="Count from 1 to 5, separated by commas.")],
        settings=GREEDY,
        on_token=tokens.append,
    )

    assert len(tokens) > 1
    assert "".join(tokens) == response.text
    assert "1" in response.text and "5" in response.text
    assert response.finish_reason == "stop"


async def test_streamed_tool_call_is_parsed(model: OpenAICompatModel) -> None:
    tokens: list[str] = []

    response = await model.request(
        [WEATHER_QUESTION], tools=[WEATHER], settings=GREEDY, on_token=tokens.append
    )

    [call] = response.tool_calls
    assert call.name == "get_weather"
    assert isinstance(call.arguments, dict)
    # the call's raw JSON is not shown as if it were the answer's text
    assert "".join(tokens) == response.text


async def test_base_url_without_v1_is_not_found(llama_cpp_server: str) -> None:
    model = OpenAICompatModel("qwen2.5-coder-0.5b", base_url=llama_cpp_server.removesuffix("/v1"))
    try:
        with pytest.raises(ModelNotFoundError, match="/v1"):
            await model.request([UserMessage(content="hi")], settings=GREEDY)
    finally:
        await model.aclose()


async def test_prompt_over_the_context_is_refused_with_the_servers_reason(model: OpenAICompatModel) -> None:
    with pytest.raises(ModelError, match="maximum context length") as caught:
        await model.request([UserMessage(content="word " * 5000)], settings=GREEDY)

    assert not caught.value.retryable
