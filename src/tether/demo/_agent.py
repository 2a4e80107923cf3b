"""The demo agent: order support that must look an order up and compute a refund to answer."""

from __future__ import annotations

import ast
import operator
import re
from typing import Any

from ..agents import Agent, Limits
from ..exceptions import ConfigError
from ..tools import tool
from ._orders import fetch_order

__all__ = ["DEFAULT_QUESTION", "EXPECTED_REFUND", "agent", "build_agent", "calculator", "lookup_order"]

DEFAULT_QUESTION = (
    "I want to return 2 of the 3 electric kettles from order 1042. How much will I be refunded?"
)
EXPECTED_REFUND = 75.80  # 2 × 37.90, the kettle's unit price in the demo database

INSTRUCTIONS = """You are the order-support assistant of a kitchenware shop.
Rules:
1. Always call lookup_order first to read the order; never guess prices or quantities.
2. The refund is the returned item's unit_price multiplied by the number of items returned. Compute it with the calculator tool.
3. Then answer the customer in one sentence that states the refund amount in dollars.
"""

_OPS: dict[type, Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.left), _eval(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.operand))
    raise ValueError("only numbers, + - * / and parentheses are allowed")


@tool(idempotent=True)
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look up an order: its status and items with unit prices and quantities.

    Args:
        order_id: the order number, digits only, e.g. "1042".
    """
    digits = re.sub(r"\D", "", order_id)
    order = fetch_order(digits) if digits else None
    if order is None:
        raise LookupError(f"there is no order {order_id!r}; order numbers look like 1042")
    return order


# The demo declares its tool order (DESIGN.md: tool-order constraints where the agent declares them):
# a refund is computed from an order, so the calculator refuses to run before a successful lookup.
@tool(idempotent=True, run_in_thread=False, requires=("lookup_order",))
def calculator(expression: str) -> float:
    """Calculate with numbers taken from the order: multiply, divide, add or subtract.

    Args:
        expression: the calculation written with numbers and + - * / ( ).
    """
    if len(expression) > 200:
        raise ValueError("the expression is too long; keep it under 200 characters")
    try:
        tree = ast.parse(expression.replace("$", "").replace(",", ""), mode="eval")
        value = _eval(tree)
    except ZeroDivisionError:
        raise ValueError("division by zero") from None
    except SyntaxError:
        raise ValueError(f"{expression!r} is not an arithmetic expression") from None
    return round(value, 10)


def build_agent(*, model: str | None = None) -> Agent:
    """The demo agent, on the embedded model unless `model` names another."""
    if model is not None and not isinstance(model, str):
        raise ConfigError("model must be a model string such as local:qwen2.5-coder-1.5b")
    return Agent(
        "order-support",
        instructions=INSTRUCTIONS,
        tools=[lookup_order, calculator],
        model=model,
        limits=Limits(max_steps=8, max_output_tokens=200, timeout_s=300),
        ref="tether.demo:agent",
        guardrails=True,  # the default LLM-free stack on the input, the order data, the calls and the answer
    )


agent = build_agent()
