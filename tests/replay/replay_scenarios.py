"""The runs whose journals are kept in `journals/` and replayed against the current code.

Each scenario is an agent (as the current code defines it), an input, and the script its model followed
when the journal was recorded. `record.py` runs every scenario and writes its journal; `test_replay.py`
replays each journal with the agent from here. Change an agent here (or tether's loop) so that a
recorded run would take another path, and the replay test fails with a diff; if the change is meant,
record again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tether import Agent, Limits, tool
from tether.testing import ScriptedModel, call

ORDERS = {
    "1042": {"order_id": "1042", "total": 12.5, "status": "delivered"},
    "1043": {"order_id": "1043", "total": 30.0, "status": "shipped"},
    "1044": {"order_id": "1044", "total": 8.25, "status": "delivered"},
    "1045": {"order_id": "1045", "total": 19.9, "status": "lost"},
}


@tool(idempotent=True)
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look an order up.

    Args:
        order_id: the order's number.
    """
    return ORDERS[order_id]


def refund(order_id: str, amount: float) -> str:
    """Refund (part of) an order.

    Args:
        order_id: the order's number.
        amount: how much to refund.
    """
    return f"refunded {amount} on order {order_id}"


@tool
def check_policy(order_id: str) -> str:
    """Whether an order may be refunded.

    Args:
        order_id: the order's number.
    """
    return "refunds allowed within 30 days"


@tool
def warehouse_status(order_id: str) -> str:
    """Where an order is in the warehouse.

    Args:
        order_id: the order's number.
    """
    raise ConnectionError("the warehouse API is down")


def shop(
    script: Sequence[Any] = (),
    *,
    refund_requires: tuple[str, ...] = ("lookup_order",),
    limits: Limits | None = None,
) -> Agent:
    """The shop agent, answering from `script` (a replay replaces its model); variants for the tests."""
    # low risk: these runs never wait for an approval (replaying decisions is not covered yet)
    refund_tool = tool(requires=refund_requires)(refund)
    return Agent(
        "shop",
        instructions="Answer questions about orders with the tools. Refund only after looking the order up.",
        tools=[lookup_order, refund_tool, check_policy, warehouse_status],
        model=ScriptedModel(list(script)),
        limits=limits or Limits(max_steps=6, max_answer_retries=2),
    )


@dataclass(frozen=True, kw_only=True)
class Scenario:
    input: str
    script: Callable[[], list[Any]]
    """The model's replies, built fresh each time (call ids are numbered as they are made)."""
    limits: Limits | None = None

    def agent(self, **changes: Any) -> Agent:
        return shop(self.script(), limits=self.limits, **changes)


SCENARIOS: dict[str, Scenario] = {
    # look up, refund, answer: the path every other scenario departs from
    "tool_calls": Scenario(
        input="Please refund order 1042 in full.",
        script=lambda: [
            call("lookup_order", order_id="1042"),
            call("refund", order_id="1042", amount=12.5),
            "Refunded 12.5 on order 1042.",
        ],
    ),
    # a final answer with a number from nowhere is sent back; the model looks it up and answers again
    "rejected_answer": Scenario(
        input="What is the total of order 1042?",
        script=lambda: [
            "Order 1042 totals 99.99.",
            call("lookup_order", order_id="1042"),
            "Order 1042 totals 12.5.",
        ],
    ),
    # an argument the model invented (no such number in the request or any result) is refused
    "ungrounded_call": Scenario(
        input="Is order 1042 delivered?",
        script=lambda: [
            call("lookup_order", order_id="7777"),
            call("lookup_order", order_id="1042"),
            "Yes, order 1042 is delivered.",
        ],
    ),
    # a refund before the lookup it requires is refused; the model looks up, then refunds
    "precondition": Scenario(
        input="Refund order 1042, all 12.5 of it.",
        script=lambda: [
            call("refund", order_id="1042", amount=12.5),
            call("lookup_order", order_id="1042"),
            call("refund", order_id="1042", amount=12.5),
            "Refunded 12.5 on order 1042.",
        ],
    ),
    # a tool that raises: the model is told and answers without it
    "failed_tool": Scenario(
        input="Where is order 1045 in the warehouse?",
        script=lambda: [
            call("warehouse_status", order_id="1045"),
            "The warehouse cannot be reached right now; please try again later.",
        ],
    ),
    # the model keeps calling tools and never answers: the step limit ends the run
    "max_steps": Scenario(
        input="Check orders 1042, 1043, 1044 and 1045.",
        script=lambda: [
            call("lookup_order", order_id="1042"),
            call("lookup_order", order_id="1043"),
            call("lookup_order", order_id="1044"),
        ],
        limits=Limits(max_steps=3),
    ),
}
