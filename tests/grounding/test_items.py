"""An amount from the wrong part of a record: the order's total for the price of one item."""

from __future__ import annotations

import pytest

from tether import Agent, Runner, tool
from tether.approvals import TierPolicy
from tether.grounding import OtherAmount, other_amount
from tether.journal import MemoryStore, ToolFailed
from tether.testing import ScriptedModel, call

pytestmark = pytest.mark.anyio

ORDER = {
    "order_id": "6120",
    "currency": "USD",
    "items": [
        {"sku": "CK-501", "name": "Chef's Knife", "unit_price": 54.0, "quantity": 1},
        {"sku": "BB-310", "name": "Bamboo Cutting Board", "unit_price": 24.5, "quantity": 1},
    ],
    "total": 78.5,
}
RESULTS = [("lookup_order", ORDER)]
KNIFE = "Order 6120 arrived with a damaged chef's knife. Refund the price of the knife."


def test_the_records_total_for_one_named_item_is_another_amount() -> None:
    found = other_amount(KNIFE, RESULTS, {"order_id": "6120", "amount": 78.5})
    assert found == OtherAmount(
        param="amount",
        value="78.5",
        item="Chef's Knife",
        field="total",
        own=("unit_price 54", "quantity 1"),
        tool="lookup_order",
    )
    assert found.describe() == (
        "amount=78.5 is the total in lookup_order's result, but the request is about the Chef's Knife "
        "(unit_price 54, quantity 1)"
    )
    # another item's price is not the knife's either
    assert other_amount(KNIFE, RESULTS, {"amount": 24.5}).field == "Bamboo Cutting Board unit_price"


@pytest.mark.parametrize(
    ("request_text", "amount"),
    [
        (KNIFE, 54.0),  # the item's own price
        (KNIFE, 108.0),  # worked out (two knives): not a number of the record at all
        ("Refund the whole order 6120, the knife was damaged.", 78.5),  # the whole was asked for
        ("Refund the total of order 6120.", 78.5),  # no item named
        ("Refund the knives and the boards of order 6120.", 78.5),  # more than one item named
    ],
)
def test_an_amount_that_is_the_items_own_or_asked_as_a_whole_is_not_flagged(
    request_text: str, amount: float
) -> None:
    assert other_amount(request_text, RESULTS, {"order_id": "6120", "amount": amount}) is None


def test_plural_names_and_free_text_arguments() -> None:
    assert other_amount("Refund the two knives from order 6120.", RESULTS, {"amount": 78.5}) is not None
    assert other_amount(KNIFE, RESULTS, {"note": 78.5}, free_text=("note",)) is None


async def test_a_write_with_the_orders_total_for_one_item_is_refused_before_it_runs() -> None:
    refunded: list[float] = []

    @tool(idempotent=True)
    def lookup_order(order_id: str) -> dict:
        """Read an order."""
        return ORDER

    @tool(risk="high", reversible=False, requires=("lookup_order",))
    def refund(order_id: str, amount: float) -> str:
        """Refund an amount on an order."""
        refunded.append(amount)
        return f"refunded {amount}"

    model = ScriptedModel(
        [
            call("lookup_order", order_id="6120"),
            call("refund", order_id="6120", amount=78.5),
            call("refund", order_id="6120", amount=54.0),
            "Refunded $54.00 for the knife.",
        ]
    )
    store = MemoryStore()
    every_tier_runs = TierPolicy(tiers={"high": "run", "critical": "run"}, confidence_floor=0.0)
    agent = Agent("shop", tools=[lookup_order, refund], model=model, policy=every_tier_runs)
    result = await Runner(store).run(agent, KNIFE)
    assert result.ok and refunded == [54.0]
    (refused,) = [s.event for s in await store.load(result.run_id) if isinstance(s.event, ToolFailed)]
    assert (refused.kind, refused.error_type, refused.needs) == ("ungrounded", "OtherAmount", ("refund",))
    assert refused.message == (
        "refund was not run: amount=78.5 is the total in lookup_order's result, but the request is about the "
        "Chef's Knife (unit_price 54, quantity 1). Call refund with the Chef's Knife's own numbers."
    )
