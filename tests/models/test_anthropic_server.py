"""`tether.testing.AnthropicServer` rejects what the documented Messages API rejects.

The server is a local stand-in that follows Anthropic's documented wire format; it is not Anthropic's
API. The client tests in test_anthropic.py are only as strict as it is, so its rules are pinned here:
each request below breaks one documented rule and must get the API's error shape, not an answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tether.testing import AnthropicServer

KEY = "test-key"
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
TOOLS = [{"name": "lookup", "input_schema": {"type": "object", "properties": {}}}]


@pytest.fixture
def server() -> Iterator[AnthropicServer]:
    with AnthropicServer(api_key=KEY) as server:
        yield server


def post(server: AnthropicServer, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/messages", json=body, headers=headers or HEADERS, timeout=10)


def body(messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"model": "claude-test", "max_tokens": 32, "messages": messages, **extra}


def user(*blocks: Any) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


def assistant(*blocks: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": list(blocks)}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def use(call_id: str) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": "lookup", "input": {}}


def result(call_id: str) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": call_id, "content": "42"}


def test_a_valid_request_gets_the_scripted_answer(server: AnthropicServer) -> None:
    server.reply_text("Hello.")
    answer = post(server, body([user(text("Hi"))]))
    assert answer.status_code == 200
    data = answer.json()
    assert (data["type"], data["role"], data["content"], data["stop_reason"]) == (
        "message",
        "assistant",
        [{"type": "text", "text": "Hello."}],
        "end_turn",
    )
    assert set(data["usage"]) >= {"input_tokens", "output_tokens"}


def test_the_same_answer_streams_as_documented_events(server: AnthropicServer) -> None:
    server.reply_tool_use("lookup", {"q": "x"}, text="Checking.")
    with httpx.stream(
        "POST",
        f"{server.base_url}/v1/messages",
        json=body([user(text("Hi"))], tools=TOOLS, stream=True),
        headers=HEADERS,
        timeout=10,
    ) as response:
        assert response.headers["content-type"] == "text/event-stream"
        names = [line[len("event: ") :] for line in response.iter_lines() if line.startswith("event: ")]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 2
    assert "ping" in names and "content_block_delta" in names


@pytest.mark.parametrize(
    ("request_body", "status", "error_type", "says"),
    [
        (body([user(text("Hi"))], seed=1), 400, "invalid_request_error", "seed: Extra inputs"),
        (
            {"model": "claude-test", "messages": [user(text("Hi"))]},
            400,
            "invalid_request_error",
            "max_tokens",
        ),
        (
            body([{"role": "system", "content": "be nice"}, user(text("Hi"))]),
            400,
            "invalid_request_error",
            "top-level `system`",
        ),
        (body([assistant(text("Hello")), user(text("Hi"))]), 400, "invalid_request_error", "first message"),
        (body([user(text("Hi")), user(text("Again"))]), 400, "invalid_request_error", "must alternate"),
        (body([user(text("   "))]), 400, "invalid_request_error", "non-whitespace"),
        (
            body([user(text("Hi")), assistant(use("toolu_1")), user(text("go on"))], tools=TOOLS),
            400,
            "invalid_request_error",
            "without `tool_result`",
        ),
        (
            body([user(text("Hi")), assistant(use("toolu_1")), user(result("toolu_2"))], tools=TOOLS),
            400,
            "invalid_request_error",
            "unexpected `tool_use_id`",
        ),
        (
            body(
                [user(text("Hi")), assistant(use("toolu_1")), user(text("x"), result("toolu_1"))], tools=TOOLS
            ),
            400,
            "invalid_request_error",
            "must come first",
        ),
        (
            body([user(text("Hi")), assistant(use("toolu_1")), user(result("toolu_1"))]),
            400,
            "invalid_request_error",
            "must define tools",
        ),
        (
            body([user(text("Hi"))], tools=TOOLS, tool_choice={"type": "tool", "name": "other"}),
            400,
            "invalid_request_error",
            "not found in provided tools",
        ),
        (body([user(text("Hi"))], temperature=1.5), 400, "invalid_request_error", "temperature"),
    ],
)
def test_requests_that_break_a_documented_rule_are_rejected(
    server: AnthropicServer, request_body: dict[str, Any], status: int, error_type: str, says: str
) -> None:
    server.reply_text("must not be sent")
    answer = post(server, request_body)
    assert answer.status_code == status
    error = answer.json()
    assert error["type"] == "error" and error["error"]["type"] == error_type
    assert says in error["error"]["message"]
    assert server.requests[-1].rejected == error["error"]["message"]
    assert server.pending == 1  # the scripted answer waits for a valid request


@pytest.mark.parametrize(
    ("headers", "status", "error_type"),
    [
        ({"anthropic-version": "2023-06-01"}, 401, "authentication_error"),
        ({"x-api-key": "wrong", "anthropic-version": "2023-06-01"}, 401, "authentication_error"),
        ({"x-api-key": KEY}, 400, "invalid_request_error"),
    ],
)
def test_headers_are_required(
    server: AnthropicServer, headers: dict[str, str], status: int, error_type: str
) -> None:
    answer = post(server, body([user(text("Hi"))]), headers=headers)
    assert (answer.status_code, answer.json()["error"]["type"]) == (status, error_type)


def test_a_full_tool_exchange_is_accepted(server: AnthropicServer) -> None:
    server.reply_text("It is 42.")
    answer = post(
        server,
        body(
            [
                user(text("Hi")),
                assistant(text("Looking."), use("toolu_1")),
                user(result("toolu_1"), text("thanks")),
            ],
            tools=TOOLS,
        ),
    )
    assert answer.status_code == 200, answer.text
