"""Hybrid inference: sensitive requests never leave the host; the quality check behind local-first.

The "remote" model is `OpenAICompatModel` talking to a real HTTP server on 127.0.0.1 (the
`openai_server` fixture) that records every request it receives, so "the remote endpoint received
nothing" is read off the server, not off the client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tether import Agent, Runner
from tether.exceptions import ConfigError
from tether.journal import MemoryStore, ModelResponded
from tether.models import (
    AssistantMessage,
    CachedModel,
    Message,
    ModelResponse,
    ModelSettings,
    Router,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolResultMessage,
    UserMessage,
    answer_problem,
    sensitive_reason,
)
from tether.models.openai_compat import OpenAICompatModel
from tether.testing import ScriptedModel

if TYPE_CHECKING:
    from conftest import FakeOpenAIServer

pytestmark = pytest.mark.anyio

HARD = (
    "First explain why merge sort runs in O(n log n), then compare it with quicksort on 3 inputs of "
    "10, 1000 and 1000000 items, and finally design a plan to benchmark both. Which is faster? Why?"
)


def chat_completion(text: str) -> dict[str, object]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-remote",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35},
    }


def hybrid(server: FakeOpenAIServer) -> tuple[Router, ScriptedModel]:
    local = ScriptedModel(lambda messages, tools: "answered on this host", name="local:qwen2.5-coder-1.5b")
    remote = OpenAICompatModel("gpt-remote", base_url=server.base_url)
    # every request below is complex enough for the reasoning tier, which only the remote model serves
    return Router(standard=local, reasoning=remote), local


SENSITIVE_REQUESTS: list[tuple[str, list[Message], ModelSettings]] = [
    ("marked sensitive", [UserMessage(content=HARD)], ModelSettings(sensitive=True)),
    ("email", [UserMessage(content=HARD + " Send it to jane.doe@example.com.")], ModelSettings()),
    ("credit card", [UserMessage(content=HARD + " Charge card 4111 1111 1111 1111.")], ModelSettings()),
    (
        "email in a tool result",
        [
            UserMessage(content=HARD),
            AssistantMessage(
                tool_calls=(ToolCall(call_id="c1", name="lookup_customer", arguments={"id": "7"}),)
            ),
            ToolResultMessage(
                call_id="c1", name="lookup_customer", content='{"email": "bob@corp.example.org"}'
            ),
            UserMessage(content=HARD),
        ],
        ModelSettings(),
    ),
    (
        "hint asks for reasoning",
        [UserMessage(content="Email me at a.b@example.com")],
        ModelSettings(hints=("reasoning",)),
    ),
]


@pytest.mark.parametrize(
    ("kind", "messages", "settings"), SENSITIVE_REQUESTS, ids=[k for k, _, _ in SENSITIVE_REQUESTS]
)
async def test_sensitive_requests_never_reach_the_remote_endpoint(
    openai_server: FakeOpenAIServer, kind: str, messages: list[Message], settings: ModelSettings
) -> None:
    router, local = hybrid(openai_server)
    response = await router.request(messages, settings=settings)
    assert response.text == "answered on this host" and local.request_count == 1
    assert response.route is not None and response.route.sensitive and response.route.private
    assert "private models only" in response.route.reason
    assert openai_server.requests == []
    await router.aclose()


async def test_the_same_request_without_personal_data_does_go_remote(openai_server: FakeOpenAIServer) -> None:
    # the control for the test above: the fixture's server does receive what the router sends it
    router, local = hybrid(openai_server)
    openai_server.reply_json(chat_completion("answered remotely"))
    response = await router.request([UserMessage(content=HARD)])
    assert response.text == "answered remotely" and local.request_count == 0
    assert len(openai_server.requests) == 1 and HARD in openai_server.requests[0].body.decode()
    assert response.route is not None and not response.route.sensitive and not response.route.private
    await router.aclose()


async def test_a_sensitive_run_stays_local_at_every_step_through_the_loop_and_cache(
    openai_server: FakeOpenAIServer,
) -> None:
    router, local = hybrid(openai_server)
    model = CachedModel(router)
    store = MemoryStore()
    agent = Agent("support", instructions="Answer the customer.", model=model)
    for _ in range(2):  # the second run would be a cache hit if sensitive answers were stored
        result = await Runner(store).run(agent, HARD + " My card is 4111-1111-1111-1111.")
        assert result.ok and result.output == "answered on this host"
    assert openai_server.requests == [] and local.request_count == 2
    assert model.stats.stored == 0 and model.stats.bypassed == 2
    responses = [
        s.event.response for s in await store.load(result.run_id) if isinstance(s.event, ModelResponded)
    ]
    assert responses[0].route is not None and responses[0].route.sensitive and responses[0].cache is None
    await model.aclose()


async def test_a_sensitive_request_with_no_private_model_is_refused_before_sending(
    openai_server: FakeOpenAIServer,
) -> None:
    router = Router(reasoning=OpenAICompatModel("gpt-remote", base_url=openai_server.base_url))
    with pytest.raises(ConfigError, match=r"sensitive \(email in message 1 \(user\)\).*no private model"):
        await router.request([UserMessage(content=HARD + " Reply to x.y@example.com")])
    assert openai_server.requests == []
    await router.aclose()


async def test_escalation_from_a_private_model_stays_private(openai_server: FakeOpenAIServer) -> None:
    local_fast = ScriptedModel([""], name="local:qwen2.5-coder-0.5b")
    local_std = ScriptedModel(["done on this host"], name="local:qwen2.5-coder-1.5b")
    remote = OpenAICompatModel("gpt-remote", base_url=openai_server.base_url)
    router = Router(fast=local_fast, standard=local_std, reasoning=remote)
    response = await router.request([UserMessage(content="Call me on +44 20 7946 0958")])
    assert response.text == "done on this host" and response.route is not None
    assert response.route.escalations and response.route.tier == "standard"
    assert openai_server.requests == []
    await router.aclose()


def test_a_remote_endpoint_can_be_declared_private(openai_server: FakeOpenAIServer) -> None:
    on_premises = OpenAICompatModel("qwen", base_url=openai_server.base_url)
    router = Router(reasoning=on_premises, private=["openai:qwen@http://127.0.0.1:*"])
    route = router.route([UserMessage(content=HARD)], settings=ModelSettings(sensitive=True))
    assert route.private and route.model == on_premises.name


# -- what counts as sensitive -------------------------------------------------------------------------


def test_the_system_prompt_and_assistant_turns_are_not_scanned() -> None:
    messages: list[Message] = [
        SystemMessage(content="You are the support agent of Acme; escalate to help@acme.example.com."),
        UserMessage(content="Where is my parcel?"),
        AssistantMessage(content="I will forward this to help@acme.example.com."),
    ]
    assert sensitive_reason(messages, ModelSettings()) is None


def test_sensitivity_names_what_was_found_and_where() -> None:
    messages: list[Message] = [UserMessage(content="hello"), UserMessage(content="my SSN is 536-22-8891")]
    assert sensitive_reason(messages, ModelSettings()) == "us_ssn in message 2 (user)"
    assert sensitive_reason(messages, ModelSettings(), entities=("email",)) is None
    assert sensitive_reason([UserMessage(content="hi")], ModelSettings(sensitive=True)) == "marked sensitive"


def test_numbers_that_are_not_personal_data_do_not_make_a_request_sensitive() -> None:
    messages: list[Message] = [UserMessage(content="What is 1234 * 5678? Order 1042 shipped on 2024-05-01.")]
    assert sensitive_reason(messages, ModelSettings()) is None


# -- the quality check --------------------------------------------------------------------------------

ORDER_TOOL = ToolDefinition(
    name="lookup_order",
    parameters={"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
)


@pytest.mark.parametrize(
    ("response", "problem"),
    [
        (ModelResponse(text="  "), "empty answer"),
        (ModelResponse(text="I'm sorry, but I can't help with that request."), "refusal"),
        (ModelResponse(text="I cannot assist with this."), "refusal"),
        (ModelResponse(text="As an AI language model, I cannot browse the web."), "refusal"),
        (ModelResponse(text="Sorry, I can\u2019t answer that."), "refusal"),
        (ModelResponse(text="Paris is", finish_reason="length"), "cut off at max_tokens=512"),
        (
            ModelResponse(tool_calls=(ToolCall(call_id="1", name="drop_table", arguments={}),)),
            "called unknown tool 'drop_table'",
        ),
        (
            ModelResponse(
                tool_calls=(ToolCall(call_id="1", name="lookup_order", arguments='{"order_id": 10'),)
            ),
            "arguments of lookup_order are not JSON",
        ),
        (
            ModelResponse(
                tool_calls=(ToolCall(call_id="1", name="lookup_order", arguments={"order_id": 10}),)
            ),
            "arguments of lookup_order do not match its schema: $.order_id: expected string, got int",
        ),
    ],
)
def test_the_quality_check_names_what_is_wrong(response: ModelResponse, problem: str) -> None:
    assert answer_problem(response, [ORDER_TOOL], ModelSettings()) == problem


@pytest.mark.parametrize(
    "text",
    [
        "Paris.",
        "I can't help but notice the order shipped yesterday.",
        "The customer said: I cannot help with the move. Their order 1042 shipped.",
        "Unfortunately the order is delayed by two days.",
    ],
)
def test_answers_that_mention_inability_are_not_refusals(text: str) -> None:
    assert answer_problem(ModelResponse(text=text), [], ModelSettings()) is None


def test_a_valid_tool_call_passes_the_quality_check() -> None:
    ok = ModelResponse(
        tool_calls=(ToolCall(call_id="1", name="lookup_order", arguments={"order_id": "1042"}),)
    )
    assert answer_problem(ok, [ORDER_TOOL], ModelSettings()) is None
