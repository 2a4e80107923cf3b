"""How sure the embedded model was of a call: `ToolCall.confidence` from its tokens' probabilities.

The formula is tested on hand-made token streams; the rest runs Qwen2.5-Coder-0.5B, loaded once for the
module, a few seconds a request on two cores.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from tether.approvals import TierPolicy
from tether.journal import ModelResponded, RunStarted, SQLiteStore
from tether.models import ModelResponse, ModelSettings, ToolDefinition, UserMessage
from tether.models.llamacpp import LlamaCppModel, call_confidence

GET_ORDER = ToolDefinition(
    name="get_order",
    description="Look up an order by its id.",
    parameters={"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
)
REFUND_ORDER = ToolDefinition(
    name="refund_order",
    description="Refund an order. This cannot be undone.",
    parameters={
        "type": "object",
        "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}},
        "required": ["order_id", "amount"],
    },
)
TOOLS = [GET_ORDER, REFUND_ORDER]
CALL = ModelSettings(max_tokens=80, temperature=0, tool_choice="required")


def stream(*pieces: tuple[str, float]) -> tuple[str, list[int], list[float]]:
    """The text, token ends and log-probabilities of tokens given as (text, probability)."""
    text, ends, logprobs = "", [], []
    for piece, probability in pieces:
        text += piece
        ends.append(len(text))
        logprobs.append(math.log(probability))
    return text, ends, logprobs


# -- the formula ----------------------------------------------------------------------------------


def test_the_tool_name_and_argument_values_count_and_the_json_around_them_does_not() -> None:
    # `{"` at 0.07 is the model preferring `{` then `"`: another spelling of the same call, not a doubt
    text, ends, logprobs = stream(
        ('{"', 0.07), ("name", 1.0), ('":', 1.0), (' "', 1.0), ("get", 0.9), ("_order", 1.0), ('",', 1.0),
        (' "', 1.0), ("arguments", 1.0), ('":', 1.0), (' {"', 0.5), ("order", 1.0), ("_id", 1.0), ('":', 1.0),
        (' "', 1.0), ("1", 0.4), ("2", 0.8), ("3", 1.0), ('"}}', 0.6),
    )  # fmt: skip
    assert text == '{"name": "get_order", "arguments": {"order_id": "123"}}'
    # the product: the mean of the id's tokens (0.68) would hide that its first digit was a guess
    assert call_confidence(text, ends, logprobs) == pytest.approx(0.9 * 0.4 * 0.8)


def test_numbers_literals_and_nested_values_count_but_keys_do_not() -> None:
    text, ends, logprobs = stream(
        ('{"name": "', 0.1), ("f", 0.9), ('", "arguments": {"', 0.1), ("items", 0.1), ('": [{"', 0.1),
        ("sku", 0.1), ('": "', 0.1), ("x", 0.8), ('", "n": ', 0.1), ("2", 0.7), ('}], "', 0.1), ("ok", 0.1),
        ('": ', 0.1), ("true", 0.6), (', "note": "say \\"', 0.1), ("hi", 0.5), ('\\""}}', 0.1),
    )  # fmt: skip
    # the piece that opens `say \"` and the one that closes `hi\"` overlap the note's value, so they count
    assert call_confidence(text, ends, logprobs) == pytest.approx(0.9 * 0.8 * 0.7 * 0.6 * 0.1 * 0.5 * 0.1)


def test_a_token_that_straddles_the_start_of_a_value_counts() -> None:
    text, ends, logprobs = stream(
        ('{"name": "f", "arguments": {"city": ', 1.0), ('"P', 0.5), ("aris", 0.9), ('"}}', 0.2)
    )
    assert call_confidence(text, ends, logprobs) == pytest.approx(0.5 * 0.9)


def test_a_token_holding_only_part_of_a_character_counts_where_it_stands() -> None:
    # "é" is two bytes; llama.cpp may write them as two tokens, the first decoding to nothing yet
    text, ends, logprobs = stream(
        ('{"name": "f", "arguments": {"city": "', 1.0), ("", 0.5), ("é", 0.8), ('"}}', 1.0)
    )
    assert call_confidence(text, ends, logprobs) == pytest.approx(0.5 * 0.8)


def test_a_call_cut_off_before_any_value_counts_every_token_and_no_tokens_give_none() -> None:
    text, ends, logprobs = stream(('{"', 0.5), ("na", 0.5))
    assert call_confidence(text, ends, logprobs) == pytest.approx(0.25)
    assert call_confidence("", [], []) is None


def test_the_confidence_stays_within_0_and_1() -> None:
    # a token holding all the probability can round to a log-probability a hair above 0
    assert call_confidence('{"name": "f"', [9, 12], [1e-9, 1e-9]) == 1.0
    many = stream(('{"name": "', 1.0), *[("x", 1e-30)] * 40)
    assert call_confidence(*many) == 0.0


# -- on the real model ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> Iterator[LlamaCppModel]:
    pytest.importorskip("llama_cpp", reason="the local backend needs tether[local]")
    model = LlamaCppModel("qwen2.5-coder-0.5b", n_ctx=2048)
    yield model
    anyio.run(model.aclose)


async def only_call(model: LlamaCppModel, prompt: str) -> ModelResponse:
    response = await model.request([UserMessage(content=prompt)], tools=TOOLS, settings=CALL)
    assert len(response.tool_calls) == 1, response
    return response


@pytest.mark.model
@pytest.mark.anyio
@pytest.mark.parametrize(
    ("stated", "missing", "tool", "value"),
    [
        ("What is the status of order 48213?", "What is the status of my order?", "get_order", "48213"),
        ("Refund order 5521 for 19.99 dollars.", "Refund my order.", "refund_order", "5521"),
    ],
)
async def test_a_call_whose_arguments_the_user_gave_is_surer_than_one_the_model_made_up(
    model: LlamaCppModel, stated: str, missing: str, tool: str, value: str
) -> None:
    (given,) = (await only_call(model, stated)).tool_calls
    (made_up,) = (await only_call(model, missing)).tool_calls
    assert given.name == made_up.name == tool
    assert isinstance(given.arguments, dict) and given.arguments["order_id"] == value
    assert isinstance(made_up.arguments, dict) and value not in str(made_up.arguments)
    assert given.confidence is not None and made_up.confidence is not None
    assert 0.0 < made_up.confidence < given.confidence <= 1.0
    # what the user sees: the default policy's floor lets the first through and stops the second
    floor = TierPolicy().confidence_floor
    assert made_up.confidence < floor < given.confidence, (made_up, given)


@pytest.mark.model
@pytest.mark.anyio
async def test_the_confidence_round_trips_through_the_journal(model: LlamaCppModel, tmp_path: Path) -> None:
    response = await only_call(model, "Refund order 5521 for 19.99 dollars.")
    store = SQLiteStore(tmp_path / "journal.db")
    started = RunStarted(at=1.0, agent="support", input="refund", model=model.name, instructions="")
    await store.create_run("r1", started)
    await store.append("r1", [ModelResponded(at=2.0, step=1, response=response)], expected_seq=1)
    await store.aclose()

    reopened = SQLiteStore(tmp_path / "journal.db")
    try:
        (recorded,) = [e.event for e in await reopened.load("r1") if isinstance(e.event, ModelResponded)]
    finally:
        await reopened.aclose()
    assert recorded.response == response
    assert recorded.response.tool_calls[0].confidence == response.tool_calls[0].confidence is not None
