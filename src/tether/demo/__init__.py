"""The demo: an order-support agent that looks an order up and computes a refund on the embedded model."""

from ._agent import DEFAULT_QUESTION as DEFAULT_QUESTION
from ._agent import EXPECTED_REFUND as EXPECTED_REFUND
from ._agent import agent as agent
from ._agent import build_agent as build_agent
from ._agent import calculator as calculator
from ._agent import lookup_order as lookup_order
from ._orders import ensure_orders_db as ensure_orders_db

__all__ = [
    "DEFAULT_QUESTION",
    "EXPECTED_REFUND",
    "agent",
    "build_agent",
    "calculator",
    "ensure_orders_db",
    "lookup_order",
]
