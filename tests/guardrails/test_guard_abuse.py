"""Abuse lexicon: threats and incitement block, insults flag, ordinary violent-sounding idioms pass."""

from __future__ import annotations

import pytest

from tether.exceptions import ConfigError
from tether.guardrails import AbuseGuard, GuardContext

CTX = GuardContext(stage="input")
GUARD = AbuseGuard()


@pytest.mark.parametrize(
    "text",
    [
        "I will find you and kill you",
        "just kill yourself already",
        "Ich bring dich um",
        "je vais te tuer",
        "te voy a matar",
        "ti ammazzo",
        "vou te matar",
    ],
)
def test_threats_and_incitement_block(text: str) -> None:
    verdict = GUARD.check(text, CTX)[0]
    assert verdict.category == "abuse" and verdict.action == "block"


def test_insults_are_flagged() -> None:
    assert GUARD.check("fuck you, you idiot", CTX)[0].action == "flag"


@pytest.mark.parametrize(
    "text",
    [
        "How do I kill a zombie process on Linux?",
        "This bug is killing me, can you help?",
        "The die is cast.",
        "Shoot me an email when you are done.",
        "We beat the deadline by a day.",
    ],
)
def test_idioms_pass(text: str) -> None:
    assert GUARD.check(text, CTX) == []


def test_languages_and_extra_patterns() -> None:
    guard = AbuseGuard(languages=["en"], extra={"en": [("insult", 0.95, r"\bnincompoop\b")]})
    assert guard.check("you nincompoop", CTX)[0].action == "block"
    assert guard.check("ich bring dich um", CTX) == []
    with pytest.raises(ConfigError, match="lexicon"):
        AbuseGuard(languages=["xx"])
