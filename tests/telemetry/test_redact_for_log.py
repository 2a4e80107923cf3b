"""`redact_for_log`: what a log line may carry of a prompt or a response."""

from __future__ import annotations

import pytest

from tether import ConfigError
from tether.telemetry import redact_for_log


def test_personal_data_and_credentials_are_replaced() -> None:
    text = (
        "Refund order 1042 to alice@example.com, card 4111 1111 1111 1111, phone +44 20 7946 0958, "
        "IBAN GB82 WEST 1234 5698 7654 32, key sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD"
    )
    assert redact_for_log(text) == (
        "Refund order 1042 to [EMAIL], card [CREDIT_CARD], phone [PHONE], IBAN [IBAN], key [OPENAI_API_KEY]"
    )


def test_text_without_either_is_unchanged() -> None:
    # numbers that fail the card checksum, an order id, an amount: nothing to hide
    text = "Order 1042 (40.00 USD) ships on 2026-01-31; tracking 4111 1111 1111 1112."
    assert redact_for_log(text) == text
    assert redact_for_log("") == ""


def test_long_text_is_cut_and_a_finding_at_the_cut_is_not_half_logged() -> None:
    text = "x" * 95 + " bob@example.org " + "y" * 1000
    logged = redact_for_log(text, max_chars=100)
    assert logged.endswith(" … [1012 more characters not logged]")
    assert "bob" not in logged and "example" not in logged  # the address straddled the cut
    assert logged.startswith("x" * 95 + " [EM")


def test_max_chars_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="max_chars must be a positive whole number; got 0"):
        redact_for_log("hello", max_chars=0)
