"""An amount in an answer keeps the currency its source gives it (`mislabelled_amount`), in the loop too."""

from __future__ import annotations

import json

import pytest

from tether import Agent, Runner, tool
from tether.grounding import mislabelled_amount
from tether.journal import AnswerRejected, MemoryStore
from tether.testing import ScriptedModel, call

ORDER = ("lookup_order", json.dumps({"order_id": "8810", "total": 129, "quantity": 3, "currency": "USD"}))
CONVERTED = ("convert_currency", json.dumps({"amount": 19504.8, "currency": "JPY", "rate": 151.2}))


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        ("The order total is 129 yen.", "JPY"),
        ("The total is ¥129.", "JPY"),
        ("The total is JPY 129.00.", "JPY"),
        ("It comes to 129 Japanese yen.", "JPY"),
        ("It costs €129.", "EUR"),
        ("The order total in Japanese yen is 129.0.", "JPY"),  # the 1.5B model's, with the currency first
        ("The total in euros: 129", "EUR"),
    ],
)
def test_an_amount_its_source_gives_in_another_currency_is_mislabelled(answer: str, said: str) -> None:
    found = mislabelled_amount(answer, [ORDER])
    assert found is not None
    assert (found.said, found.source, found.tool) == (said, "USD", "lookup_order")
    assert found.describe().startswith(f"it gives {found.amount} in {said}, but lookup_order gives")


@pytest.mark.parametrize(
    "answer",
    [
        "The total is $129.",  # the currency it has
        "The total is 129 USD, which is 19,504.80 yen.",  # each in its own
        "The total is ¥19,504.80.",  # the converted amount
        "The order total is 129.",  # no currency written: not judged
        "It has 3 items; 3 euros each would be cheap.",  # a count is not an amount of money
        "The total is 250 yen.",  # no source gives 250 at all: provenance's matter, not this one's
        "In US dollars the total is 129, in yen 19504.8.",
    ],
)
def test_amounts_in_their_own_currency_or_without_one_are_not_judged(answer: str) -> None:
    assert mislabelled_amount(answer, [ORDER, CONVERTED]) is None


def test_an_items_price_is_in_the_currency_of_the_order_around_it() -> None:
    order = {"currency": "USD", "items": [{"name": "Electric Kettle", "unit_price": 37.9}], "total": 83.9}
    found = mislabelled_amount(
        "The Electric Kettle costs 37.9 British pounds.", [("lookup_order", json.dumps(order))]
    )
    assert found is not None and (found.amount, found.said, found.source) == ("37.9", "GBP", "USD")
    # and the small model's JSON answer, the currency in its key
    assert (
        mislabelled_amount('{"total in Japanese yen": 83.9}', [("lookup_order", json.dumps(order))])
        is not None
    )


def test_amounts_in_a_plain_text_result_keep_their_currency_too() -> None:
    result = ("get_balance", "Balance: 1,250.00 EUR as of today.")
    assert mislabelled_amount("Your balance is $1,250.00.", [result]) is not None
    assert mislabelled_amount("Your balance is €1,250.", [result]) is None


@tool(idempotent=True)
def lookup_order(order_id: str) -> dict:
    """Read an order."""
    return {"order_id": order_id, "total": 129, "currency": "USD"}


@tool(idempotent=True)
def convert_currency(amount: float, from_currency: str, to_currency: str) -> dict:
    """Convert an amount between currencies."""
    return {"amount": round(amount * 151.2, 2), "currency": to_currency, "rate": 151.2}


@pytest.mark.anyio
async def test_a_mislabelled_answer_is_sent_to_the_tools_that_take_a_currency() -> None:
    model = ScriptedModel(
        [
            call("lookup_order", order_id="8810"),
            "The order total is 129 yen.",
            call("convert_currency", amount=129, from_currency="USD", to_currency="JPY"),
            "The order total is ¥19,504.80.",
        ]
    )
    store = MemoryStore()
    agent = Agent("shop", tools=[lookup_order, convert_currency], model=model)
    result = await Runner(store).run(agent, "What is the total of order 8810 in Japanese yen?")
    assert result.ok and result.output == "The order total is ¥19,504.80."
    (told,) = [s.event for s in await store.load(result.run_id) if isinstance(s.event, AnswerRejected)]
    assert told.reason.startswith("the answer gives an amount in another currency than its source")
    assert (told.then, told.needs) == ("tool", ("convert_currency",))
    assert "it gives 129 in JPY, but lookup_order gives 129 in USD" in told.message
    assert model.request_settings[2].allowed_tools == ("convert_currency",)
