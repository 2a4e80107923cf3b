"""Argument provenance: invented values are caught, values seen in any form are not."""

from __future__ import annotations

from typing import Any

import pytest

from tether import Agent, Runner, tool
from tether.grounding import Evidence, find_ungrounded
from tether.journal import MemoryStore, ToolFailed
from tether.models import ToolResultMessage
from tether.testing import ScriptedModel, call

ORDER = '{"order_id": "1042", "items": [{"sku": "KET-01", "unit_price": 37.9, "quantity": 3}], "total": "$1,137.00"}'


def ungrounded(args: dict[str, Any], *texts: str, free_text: tuple[str, ...] = ()) -> list[str]:
    return [f"{u.path}={u.value}" for u in find_ungrounded(args, Evidence(texts), free_text=free_text)]


@pytest.mark.parametrize(
    "args",
    [
        {"amount": 37.9},
        {"amount": 37.90},
        {"amount": "37.90"},
        {"amount": "$37.90"},
        {"expression": "2 * 37.90"},
        {"order_id": "1042"},
        {"order_id": 1042},
        {"sku": "ket-01"},
        {"total": 1137},
        {"total": "1,137.00"},
        {"qty": 1, "flag": True, "note": None},
        {"reason": "customer changed their mind"},
        {"items": [{"sku": "KET-01", "quantity": 3}]},
    ],
)
def test_values_seen_in_any_form_are_grounded(args: dict[str, Any]) -> None:
    assert ungrounded(args, "Return 2 kettles from order 1042", ORDER) == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"amount": 100}, ["amount=100"]),
        ({"expression": "2 * 24.50"}, ["expression=24.50"]),
        ({"order_id": "12345"}, ["order_id=12345"]),
        ({"sku": "KET-99"}, ["sku=KET-99"]),
        ({"items": [{"quantity": 7}]}, ["items[0].quantity=7"]),
    ],
)
def test_invented_values_are_caught(args: dict[str, Any], expected: list[str]) -> None:
    assert ungrounded(args, "Return 2 kettles from order 1042", ORDER) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"sku": "COP_SAU"}, ["sku=COP_SAU"]),  # the 1.5B model's SKU for "Copper Saucepans"
        ({"sku": "CopperSaucepan"}, ["sku=CopperSaucepan"]),  # and another run's
        ({"sku": "copper-saucepan"}, ["sku=copper-saucepan"]),
        ({"currency_code": "EUR"}, []),  # a three-letter code is not made of words
        ({"order_id": "ORD-ABC"}, ["order_id=ORD-ABC"]),
        ({"items": [{"sku": "CER-SET"}]}, ["items[0].sku=CER-SET"]),
        ({"sku": "KET-01"}, []),  # seen
        ({"status": "NOT_SHIPPED"}, []),  # not an argument that takes a key: an enum-like value
        ({"sku": "Copper Saucepan"}, []),  # a name, not a code: find_product's business
    ],
)
def test_codes_without_digits_are_identifiers_where_a_key_is_wanted(
    args: dict[str, Any], expected: list[str]
) -> None:
    assert ungrounded(args, "Reserve 5 Copper Saucepans in Leeds.", ORDER) == expected


def test_percentages_supply_their_fraction() -> None:
    assert ungrounded({"rate": 0.15}, "apply a 15% discount") == []
    assert ungrounded({"rate": 15}, "apply a 15% discount") == []


def test_free_text_arguments_are_not_checked() -> None:
    assert ungrounded({"body": "Refund of 99 issued"}, "hi", free_text=("body",)) == []
    assert ungrounded({"body": "Refund of 99 issued"}, "hi") == ["body=99"]


def test_a_huge_tool_result_is_bounded() -> None:
    ev = Evidence(["x " * 1_000_000])  # does not hang, and still answers
    assert not ev.has_number(__import__("decimal").Decimal(5))


@pytest.mark.anyio
async def test_the_loop_refuses_an_invented_value_and_the_model_corrects_itself() -> None:
    effects: list[str] = []

    @tool
    def lookup_order(order_id: str) -> str:
        """Read an order."""
        return ORDER

    @tool(reversible=False)
    def refund(order_id: str, amount: float) -> str:
        """Refund."""
        effects.append(f"refund {amount}")
        return "done"

    model = ScriptedModel(
        [
            call("refund", order_id="1042", amount=100),  # acts before it looks, with an invented amount
            call("lookup_order", order_id="1042"),
            call("refund", order_id="1042", amount=37.9),
            "Refunded $37.90",
        ]
    )
    store = MemoryStore()
    agent = Agent("support", tools=[lookup_order, refund], model=model)
    result = await Runner(store).run(agent, "Refund one kettle from order 1042")
    assert result.ok and effects == ["refund 37.9"]
    failed = [s.event for s in await store.load(result.run_id) if isinstance(s.event, ToolFailed)]
    assert [f.kind for f in failed] == ["ungrounded"]
    told = model.requests[1][-1]
    assert isinstance(told, ToolResultMessage) and told.is_error
    assert (
        "amount=100 does not appear in the user's request" in told.content and "lookup_order" in told.content
    )


@pytest.mark.anyio
async def test_grounding_can_be_turned_off() -> None:
    @tool
    def refund(amount: float) -> str:
        """Refund."""
        return "done"

    agent = Agent(
        "a", tools=[refund], model=ScriptedModel([call("refund", amount=100), "ok"]), grounding=False
    )
    store = MemoryStore()
    result = await Runner(store).run(agent, "refund please")
    assert "tool_completed" in [s.event.type for s in await store.load(result.run_id)]


def test_free_text_must_name_parameters() -> None:
    from tether.exceptions import ConfigError

    with pytest.raises(ConfigError, match=r"free_text names \['bdy'\]"):

        @tool(free_text=("bdy",))
        def send(body: str) -> str:
            """Send."""
            return body
