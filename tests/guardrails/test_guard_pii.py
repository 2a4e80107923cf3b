"""PII: checksum-confirmed entities are found and redacted; look-alikes are not; redaction never leaks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.exceptions import ConfigError
from tether.guardrails import GuardContext, PIIGuard, find_pii
from tether.guardrails._checksums import (
    aadhaar_ok,
    card_ok,
    cpf_ok,
    dni_ok,
    iban_ok,
    luhn_ok,
    nino_ok,
    nir_ok,
    ssn_ok,
)

CTX = GuardContext(stage="input")

POSITIVES = [
    ("write to jane.doe@example.co.uk today", "email", "jane.doe@example.co.uk"),
    ("card 4111 1111 1111 1111 exp 12/29", "credit_card", "4111 1111 1111 1111"),
    ("amex 3782-822463-10005", "credit_card", "3782-822463-10005"),
    ("pay to GB82 WEST 1234 5698 7654 32 please", "iban", "GB82 WEST 1234 5698 7654 32"),
    ("IBAN DE89370400440532013000", "iban", "DE89370400440532013000"),
    ("call (415) 555-2671 after 5", "phone", "(415) 555-2671"),
    ("call +44 20 7946 0958", "phone", "+44 20 7946 0958"),
    ("ssn 123-45-6789", "us_ssn", "123-45-6789"),
    ("NI number AB 12 34 56 C", "uk_nino", "AB 12 34 56 C"),
    ("DNI 12345678Z", "es_dni", "12345678Z"),
    ("CPF 111.444.777-35", "br_cpf", "111.444.777-35"),
    ("server 192.168.1.10 is down", "ip_address", "192.168.1.10"),
    ("v6 2001:db8::8a2e:370:7334 too", "ip_address", "2001:db8::8a2e:370:7334"),
    (
        "ship to 1600 Pennsylvania Avenue NW, Washington, DC 20500",
        "street_address",
        "1600 Pennsylvania Avenue NW, Washington, DC 20500",
    ),
    ("SIN: 046 454 286", "ca_sin", "046 454 286"),
]

NEGATIVES = [
    "order #123456789 shipped on 2024-01-15 at 12:30:45",
    "card 4111 1111 1111 1112 is invalid",
    "version 1.2.3 and build 10.0.19045",
    "IBAN GB82 WEST 1234 5698 7654 33 has a bad checksum",
    "ssn 000-12-3456 and 666-12-3456 are never issued",
    "ISBN 978-3-16-148410-0",
    "the total is $1,234.56",
]


@pytest.mark.parametrize(("text", "label", "value"), POSITIVES)
def test_entities_are_found(text: str, label: str, value: str) -> None:
    found = [(text[s:e], lab) for s, e, lab, _ in find_pii(text)]
    assert (value, label) in found, found


@pytest.mark.parametrize("text", NEGATIVES)
def test_look_alikes_are_not_cards_ibans_or_ssns(text: str) -> None:
    labels = {lab for *_, lab, _ in find_pii(text)}
    assert not labels & {"credit_card", "iban", "us_ssn", "ip_address"}, labels


def test_redaction_and_masked_spans() -> None:
    text = "Mail jane@example.com, card 4242 4242 4242 4242."
    verdict = PIIGuard().check(text, CTX)[0]
    assert verdict.action == "redact"
    assert verdict.redacted_text == "Mail [EMAIL], card [CREDIT_CARD]."
    assert all("4242 4242" not in s.excerpt and "jane@" not in s.excerpt for s in verdict.spans)


def test_flag_action_keeps_the_text() -> None:
    verdict = PIIGuard(action="flag", entities=["email"]).check("a@b.io and 4242 4242 4242 4242", CTX)[0]
    assert verdict.action == "flag" and verdict.redacted_text is None
    assert [s.label for s in verdict.spans] == ["email"]


def test_bad_configuration() -> None:
    with pytest.raises(ConfigError, match="unknown PII"):
        PIIGuard(entities=["dna"])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="placeholder"):
        PIIGuard(placeholder="***")


def test_checksums() -> None:
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")
    assert card_ok("4111111111111111") and not card_ok("1234567812345670")
    assert iban_ok("FR1420041010050500013M02606") and not iban_ok("FR1420041010050500013M02607")
    assert ssn_ok("123", "45", "6789") and not ssn_ok("900", "45", "6789")
    assert nino_ok("AB123456C") and not nino_ok("DA123456C")
    assert dni_ok("X1234567L") and not dni_ok("12345678A")
    assert nir_ok("255081416802538") and not nir_ok("255081416802539")
    assert cpf_ok("52998224725") and not cpf_ok("11111111111")
    # a Verhoeff check digit is unique: exactly one last digit completes a valid number
    assert sum(aadhaar_ok(f"23412341234{d}") for d in range(10)) == 1
    assert not aadhaar_ok("123412341234")  # cannot start with 0 or 1


def _luhn_complete(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


_FILLER = st.text(alphabet=st.characters(codec="utf-8", categories=("L", "Zs", "P")), max_size=40)
_EMAILS = st.builds(
    lambda local, domain, tld: f"{local}@{domain}.{tld}",
    st.from_regex(r"[a-z][a-z0-9._]{0,15}[a-z0-9]", fullmatch=True),
    st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True),
    st.sampled_from(["com", "org", "io", "co.uk", "de"]),
)
_CARDS = st.builds(
    lambda body, sep: sep.join(_luhn_complete(body)[i : i + 4] for i in range(0, 16, 4)),
    st.from_regex(r"4[0-9]{14}", fullmatch=True),
    st.sampled_from([" ", "-", ""]),
)


@settings(max_examples=150, deadline=None)
@given(before=_FILLER, entity=st.one_of(_EMAILS, _CARDS), after=_FILLER)
def test_redacted_text_never_contains_the_entity(before: str, entity: str, after: str) -> None:
    text = f"{before} {entity} {after}"
    verdicts = PIIGuard().check(text, CTX)
    assert verdicts, text
    redacted = verdicts[0].redacted_text
    assert redacted is not None
    assert entity not in redacted
    assert entity.replace(" ", "").replace("-", "") not in redacted.replace(" ", "").replace("-", "")
