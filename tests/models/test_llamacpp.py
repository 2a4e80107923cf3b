"""The embedded model, for real: Qwen2.5-Coder-0.5B run by llama.cpp in this process.

One model is loaded for the module (about a second); each test is a few seconds on two cores.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tether.exceptions import ModelError, ModelFileError, ModelTimeout
from tether.models import (
    AssistantMessage,
    Message,
    ModelResponse,
    ModelSettings,
    ToolDefinition,
    ToolResultMessage,
    UserMessage,
)

pytest.importorskip("llama_cpp", reason="the local backend needs tether[local]")

from tether.models.llamacpp import CALL_AS_ANSWER_REFUSED, LlamaCppModel, tool_call_grammar

pytestmark = pytest.mark.anyio

CALCULATOR = ToolDefinition(
    name="calculator",
    description="Evaluate an arithmetic expression and return the result.",
    parameters={
        "type": "object",
        "properties": {"expression": {"type": "string", "description": "for example 2*(3+4)"}},
        "required": ["expression"],
    },
)
# nested objects, a $ref, an enum, an integer, an array and an optional field: what the grammar must keep
CREATE_ORDER = ToolDefinition(
    name="create_order",
    description="Create an order for a customer.",
    parameters={
        "type": "object",
        "$defs": {
            "Item": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "quantity": {"type": "integer"}},
                "required": ["sku", "quantity"],
            }
        },
        "properties": {
            "customer": {"type": "string"},
            "priority": {"enum": ["low", "normal", "urgent"]},
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "minItems": 1},
            "note": {"type": "string"},
        },
        "required": ["customer", "priority", "items"],
    },
)
CALC_QUESTION = "What is 17*23? Use the calculator."


@pytest.fixture(scope="module")
def model() -> Iterator[LlamaCppModel]:
    model = LlamaCppModel("qwen2.5-coder-0.5b", n_ctx=4096)
    yield model
    anyio.run(model.aclose)


@pytest.mark.model
async def test_plain_answer_streams_its_text(model: LlamaCppModel) -> None:
    pieces: list[str] = []
    response = await model.request(
        [UserMessage(content="Reply with one word: the opposite of 'ping'.")],
        settings=ModelSettings(max_tokens=20),
        on_token=pieces.append,
    )
    assert "pong" in response.text.lower()
    assert "".join(pieces).strip() == response.text
    assert response.tool_calls == ()
    assert response.finish_reason == "stop"
    assert response.model == "local:qwen2.5-coder-0.5b" == model.name
    assert response.usage.input_tokens > 20 and 0 < response.usage.output_tokens <= 20
    assert response.duration_s > 0
    assert model.last_generation_tps is not None and model.last_generation_tps > 0


@pytest.mark.model
async def test_max_tokens_ends_with_length(model: LlamaCppModel) -> None:
    response = await model.request(
        [UserMessage(content="Count from 1 to 100, one number per line.")],
        settings=ModelSettings(max_tokens=8),
    )
    assert response.finish_reason == "length"
    assert response.usage.output_tokens == 8


@pytest.mark.model
async def test_required_call_matches_its_schema(model: LlamaCppModel) -> None:
    response = await model.request(
        [UserMessage(content="Order 3 units of SKU A-1 for Dana, it is urgent.")],
        tools=[CALCULATOR, CREATE_ORDER],
        settings=ModelSettings(tool_choice="required", max_tokens=120),
    )
    assert response.finish_reason == "tool_calls"
    (call,) = response.tool_calls
    assert call.call_id == "call_0"
    if call.name == "calculator":
        _check_calculator(call.arguments)
    else:
        assert call.name == "create_order"
        _check_order(call.arguments)


@pytest.mark.model
async def test_auto_call_for_the_calculator(model: LlamaCppModel) -> None:
    pieces: list[str] = []
    response = await model.request(
        [UserMessage(content=CALC_QUESTION)], tools=[CALCULATOR, CREATE_ORDER], on_token=pieces.append
    )
    assert response.finish_reason == "tool_calls"
    (call,) = response.tool_calls
    assert call.name == "calculator"
    _check_calculator(call.arguments)
    assert re.sub(r"\s", "", call.arguments["expression"]) in {"17*23", "23*17"}
    # the call is never shown as text while it is written
    assert "expression" not in "".join(pieces) and "<tool_call>" not in "".join(pieces)


@pytest.mark.model
async def test_tool_choice_none_answers_in_text(model: LlamaCppModel) -> None:
    response = await model.request(
        [UserMessage(content="Say hello to Dana.")],
        tools=[CALCULATOR],
        settings=ModelSettings(tool_choice="none", max_tokens=30),
    )
    assert response.tool_calls == ()
    assert response.text
    assert "<tool_call>" not in response.text


@pytest.mark.model
async def test_tool_choice_none_never_answers_with_a_call_written_as_text(model: LlamaCppModel) -> None:
    # asked for words, the 0.5B writes the call it wanted as bare JSON; it is asked again, starting with a word
    pieces: list[str] = []
    response = await model.request(
        [UserMessage(content=CALC_QUESTION)],
        tools=[CALCULATOR],
        settings=ModelSettings(tool_choice="none", max_tokens=40, temperature=0),
        on_token=pieces.append,
    )
    assert response.tool_calls == ()
    assert CALL_AS_ANSWER_REFUSED in response.repairs
    assert response.text and response.text[0] not in "{[`<"
    assert "".join(pieces).strip() == response.text


@pytest.mark.model
async def test_tool_choice_none_keeps_json_that_is_not_a_call(model: LlamaCppModel) -> None:
    pieces: list[str] = []
    response = await model.request(
        [UserMessage(content='Reply with exactly this JSON and nothing else: {"name": "Dana", "age": 41}')],
        tools=[CALCULATOR],
        settings=ModelSettings(tool_choice="none", max_tokens=30, temperature=0),
        on_token=pieces.append,
    )
    assert CALL_AS_ANSWER_REFUSED not in response.repairs
    assert '"Dana"' in response.text and response.text.lstrip().startswith("{")
    assert "".join(pieces).strip() == response.text


@pytest.mark.model
async def test_the_next_step_reuses_the_kv_cache(model: LlamaCppModel) -> None:
    model.reuse_kv_cache = True
    try:
        step1_messages: list[Message] = [UserMessage(content=CALC_QUESTION)]
        step1 = await model.request(
            step1_messages, tools=[CALCULATOR], settings=ModelSettings(tool_choice="required")
        )
        step2_messages = _after_tool_result(step1_messages, step1, "391")

        reused = await model.request(
            step2_messages, tools=[CALCULATOR], settings=ModelSettings(max_tokens=40)
        )
        reused_stats = model.last_stats
        model.reuse_kv_cache = False
        fresh = await model.request(step2_messages, tools=[CALCULATOR], settings=ModelSettings(max_tokens=40))
        fresh_stats = model.last_stats
    finally:
        model.reuse_kv_cache = True

    assert reused_stats is not None and fresh_stats is not None
    assert reused.usage.input_tokens == fresh.usage.input_tokens > step1.usage.input_tokens
    # step 1's prompt and its call are in the cache; only the tool result and the turn markers are new
    assert reused.usage.cached_tokens > step1.usage.input_tokens + 10
    new_tokens = reused.usage.input_tokens - reused.usage.cached_tokens
    assert new_tokens < 30
    assert fresh.usage.cached_tokens == 0
    assert fresh_stats.evaluated_tokens >= fresh.usage.input_tokens > 5 * reused_stats.evaluated_tokens


@pytest.mark.model
async def test_timeout_stops_generation_quickly(model: LlamaCppModel) -> None:
    await model.load()
    started = time.perf_counter()
    with pytest.raises(ModelTimeout) as info:
        await model.request(
            [UserMessage(content="Count from 1 to 1000, one number per line.")],
            settings=ModelSettings(max_tokens=3000, timeout_s=1.0),
        )
    assert time.perf_counter() - started < 2.0
    assert "local:qwen2.5-coder-0.5b" in str(info.value) and "timeout_s=1s" in str(info.value)
    assert info.value.retryable

    # the abandoned generation stops at its next token and lets the next request run at once
    started = time.perf_counter()
    response = await model.request([UserMessage(content="Say hi.")], settings=ModelSettings(max_tokens=5))
    assert response.text
    assert time.perf_counter() - started < 10.0


@pytest.mark.model
async def test_a_prompt_longer_than_the_context_is_refused() -> None:
    small = LlamaCppModel(n_ctx=128)
    try:
        with pytest.raises(
            ModelError, match=r"the prompt is \d+ tokens but the context window is n_ctx=128; raise"
        ):
            await small.request([UserMessage(content="word " * 200)])
    finally:
        await small.aclose()


async def test_a_file_that_is_not_gguf_fails_with_its_path(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_text("<html>404</html>")
    model = LlamaCppModel(path=bad)
    with pytest.raises(ModelFileError, match=re.escape(f"{bad} is not a GGUF file")):
        await model.request([UserMessage(content="hi")])


def test_grammar_writes_json_as_the_template_renders_it() -> None:
    grammar = dict(
        line.split(" ::= ", 1) for line in tool_call_grammar([CALCULATOR, CREATE_ORDER]).splitlines()
    )
    # no optional whitespace anywhere: `", "` and `": "` exactly, as json.dumps writes them
    assert grammar["space"] == '""'
    assert all('"," space' not in rule and '":" space' not in rule for rule in grammar.values())
    assert grammar["root"] == "alternative-0 | alternative-1"
    assert '"\\"calculator\\""' in grammar.values()


def test_a_schema_the_grammar_cannot_express_gets_free_form_arguments() -> None:
    odd = ToolDefinition(
        name="odd", parameters={"type": "object", "properties": {"x": {"type": "decimal128"}}}
    )
    grammar = tool_call_grammar([odd, CALCULATOR])
    assert "\nalternative-0-arguments ::= object\n" in grammar
    assert "decimal128" not in grammar
    assert '"\\"expression\\""' in grammar


# -- helpers ------------------------------------------------------------------------------------


def _after_tool_result(messages: list[Message], response: ModelResponse, result: str) -> list[Message]:
    (call,) = response.tool_calls
    return [
        *messages,
        AssistantMessage(content=response.text, tool_calls=response.tool_calls),
        ToolResultMessage(call_id=call.call_id, name=call.name, content=result),
    ]


def _check_calculator(arguments: Any) -> None:
    assert isinstance(arguments, dict) and set(arguments) == {"expression"}
    assert isinstance(arguments["expression"], str)


def _check_order(arguments: Any) -> None:
    assert isinstance(arguments, dict)
    assert {"customer", "priority", "items"} <= set(arguments) <= {"customer", "priority", "items", "note"}
    assert isinstance(arguments["customer"], str)
    assert arguments["priority"] in {"low", "normal", "urgent"}
    assert isinstance(arguments["items"], list) and arguments["items"]
    for item in arguments["items"]:
        assert set(item) == {"sku", "quantity"}
        assert isinstance(item["sku"], str) and type(item["quantity"]) is int
    assert isinstance(arguments.get("note", ""), str)


@pytest.mark.parametrize(
    ("pieces", "stopped"),
    [
        (['{"', "name", '"'], True),  # a bare call
        (["```", "json\n", '{"name"'], True),  # a fenced one
        ([">", '{"name"'], True),  # the tag's last character, written when the tag's token is banned
        (["{", '"title"'], False),  # JSON that is not a call
        (["The", " answer"], False),
    ],
)
def test_an_answer_that_opens_as_a_call_stops_before_any_of_it_is_shown(
    pieces: list[str], stopped: bool
) -> None:
    from tether.models.llamacpp import _CALL_OPENERS, _OPENER, _Streamer

    shown: list[str] = []
    streamer = _Streamer(shown.append, (), _CALL_OPENERS)
    hits = [streamer.feed(p) for p in pieces]
    assert (hits[-1] == _OPENER) is stopped
    if stopped:
        assert shown == []
