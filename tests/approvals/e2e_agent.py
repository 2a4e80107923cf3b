"""A refund agent on the embedded model for the end-to-end approval test (run in subprocesses).

`refund` is high risk and irreversible: the default policy suspends the run until a human decides. Every
refund that really runs is appended to `$E2E_DIR/refunds.log`, so the test sees effects, not claims.
`E2E_DEADLINE_S` shortens the approval deadline (on expiry: reject).
"""

from __future__ import annotations

import os
from pathlib import Path

from tether import Agent, Limits, tool
from tether.approvals import TierPolicy

ORDERS = {"1042": {"order_id": "1042", "item": "electric kettle", "quantity": 1, "paid": 37.90}}


@tool(idempotent=True)
def lookup_order(order_id: str) -> dict:
    """Look up an order: the item, quantity and the amount paid.

    Args:
        order_id: the order number, e.g. "1042".
    """
    order = ORDERS.get(order_id.strip().lstrip("#"))
    if order is None:
        raise LookupError(f"there is no order {order_id!r}")
    return order


@tool(risk="high", reversible=False, requires=("lookup_order",))
def refund(order_id: str, amount: float) -> dict:
    """Refund money to the customer for an order. Needs a human's approval.

    Args:
        order_id: the order number.
        amount: the amount to refund in dollars, as paid on the order.
    """
    with open(Path(os.environ["E2E_DIR"]) / "refunds.log", "a") as f:
        f.write(f"{order_id} {amount:.2f}\n")
    # a JSON result: given a plain sentence here, the 1.5B model answers with an empty string
    return {"order_id": order_id, "refunded": amount, "status": "refunded"}


agent = Agent(
    "refunds",
    instructions=(
        "You are a refund assistant. First call lookup_order to read the order. Then call refund with the "
        "order_id and the amount paid from the order. Then tell the customer in one short sentence what "
        "was refunded, or why nothing was refunded."
    ),
    tools=[lookup_order, refund],
    model=os.environ.get("E2E_MODEL", "local:qwen2.5-coder-1.5b"),
    limits=Limits(max_steps=8, max_output_tokens=160),
    policy=TierPolicy(
        deadline_s=float(os.environ.get("E2E_DEADLINE_S", "86400")),
        on_expiry="reject",
        roster={"approvers": ("ana", "bo")},
    ),
)
