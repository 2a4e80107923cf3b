"""Personal data: find it, confirm it with a checksum where one exists, redact it.

Recognisers are patterns for candidates plus validators (Luhn, mod-97, SSA rules, ...): the pattern is
loose enough for real formatting (spaces, dashes, brackets), the validator keeps precision. Patterns are
linear: separators between digit groups are mandatory wherever group widths could otherwise be split in
many ways, and every repetition is bounded.
"""
# ruff: noqa: E501  (pattern tables: one regex per line reads and diffs better than split strings)

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Literal, get_args

from tether.exceptions import ConfigError

from ._base import DEFAULT_MAX_CHARS, TextGuard, check_action, mask, redact
from ._checksums import aadhaar_ok, card_ok, cpf_ok, dni_ok, iban_ok, luhn_ok, nino_ok, nir_ok, ssn_ok
from ._fastre import PrefixRegex
from ._verdict import Action, GuardContext, Span, Stage, Verdict

__all__ = ["PII_ENTITIES", "PIIEntity", "PIIGuard", "find_pii"]

PIIEntity = Literal[
    "email",
    "phone",
    "credit_card",
    "iban",
    "us_ssn",
    "uk_nino",
    "es_dni",
    "fr_nir",
    "br_cpf",
    "in_aadhaar",
    "ca_sin",
    "ip_address",
    "street_address",
]
PII_ENTITIES: tuple[PIIEntity, ...] = get_args(PIIEntity)

Found = tuple[int, int, str, float]

_EMAIL = PrefixRegex(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9-]{1,63}){1,8}"
)
_PHONE_INTL = PrefixRegex(
    r"(?<![\w+])\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{1,10}){1,5}(?![\w-])|(?<![\w+])\+\d{8,15}(?!\w)"
)
_PHONE_NANP = PrefixRegex(r"(?<![\w.+-])(?:1[ .-])?(?:\(\d{3}\)[ ]?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w-]|\.\d)")
_PHONE_LOCAL = PrefixRegex(
    r"(?<![\w.+-])0\d{1,4}(?:[ .-]\d{2,4}){2,5}(?![\w-]|\.\d)|(?<![\w.+-])0\d{9,10}(?![\w.-])"
)
_CARD = PrefixRegex(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d])")
_IBAN = PrefixRegex(r"\b[A-Z]{2}\d{2}[ ]?(?:[A-Z0-9]{4}[ ]?){2,7}[A-Z0-9]{1,4}\b")
_SSN = PrefixRegex(r"(?<![\d-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\d-])")
_SSN_CONTEXT = PrefixRegex(
    r"(?i:\bssn\b|social\s+security(?:\s+(?:number|no\.?|#))?)\D{0,20}?(?<!\d)(\d{9})(?!\d)"
)
_NINO = PrefixRegex(r"\b[A-Z]{2}[ ]?\d{2}[ ]?\d{2}[ ]?\d{2}[ ]?[A-D]\b")
_DNI = PrefixRegex(r"\b(?:\d{8}|[XYZ]\d{7})-?[A-Z]\b")
_NIR = PrefixRegex(
    r"\b[12][ ]?\d{2}[ ]?(?:0[1-9]|1[0-2]|[2-9]\d)[ ]?(?:\d{2}|2A|2B)[ ]?\d{3}[ ]?\d{3}[ ]?\d{2}\b"
)
_CPF = PrefixRegex(r"(?<![\d.])\d{3}\.\d{3}\.\d{3}-\d{2}(?![\d-])")
_AADHAAR = PrefixRegex(r"(?<![\d ])[2-9]\d{3} \d{4} \d{4}(?![\d])")
_SIN = PrefixRegex(
    r"(?i:\bsin\b|social\s+insurance(?:\s+number)?)\D{0,20}?(?<!\d)(\d{3}[ -]?\d{3}[ -]?\d{3})(?!\d)"
)
_IPV4 = PrefixRegex(
    r"(?<![\w.])(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}(?![\w]|\.\d)"
)
_IPV6 = PrefixRegex(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_STREET_US = PrefixRegex(
    r"\b\d{1,6}[A-Za-z]?\s+(?:[NSEW]\.?\s+)?(?:[A-Z][A-Za-z'.-]{0,30}\s+){1,4}"
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter|"
    r"Parkway|Pkwy|Highway|Hwy|Circle|Cir|Square|Sq|Trail|Trl)\b\.?(?:\s(?:NW|NE|SW|SE|N|S|E|W)\b\.?)?"
    r"(?:,?\s+(?:Apt|Suite|Ste|Unit|#)\.?\s*[\w-]{1,6})?(?:,\s*[A-Z][A-Za-z'.-]{1,30}(?:\s[A-Z][A-Za-z'.-]{1,30}){0,2})?"
    r"(?:,\s*[A-Z]{2}\s+\d{5}(?:-\d{4})?)?"
)
_STREET_EU = PrefixRegex(
    r"\b[A-ZÄÖÜ][a-zäöüß-]{2,40}(?:straße|strasse|str\.|weg|gasse|platz|allee|ring|damm)\s+\d{1,4}[a-z]?\b"
    r"|\b\d{1,4}(?:\s?(?:bis|ter))?,?\s+(?:rue|avenue|boulevard|bd|place|chemin|allée|impasse|quai|via|viale|calle|avenida)"
    r"\s+(?:de\s+la\s+|de\s+l'|du\s+|des\s+|de\s+|d'|del\s+|della\s+)?[A-ZÉÈ][\w'-]{1,30}(?:\s+[A-ZÉÈ][\w'-]{1,30}){0,3}"
)
_DIGITS = re.compile(r"\D")


def _emails(text: str) -> Iterator[Found]:
    if "@" not in text:
        return
    for m in _EMAIL.finditer(text):
        value = m.group().rstrip(".-")
        tld = value.rsplit(".", 1)[-1]
        if tld.isalpha() and len(tld) >= 2:
            yield m.start(), m.start() + len(value), "email", 0.99


def _phones(text: str) -> Iterator[Found]:
    runs = {len(r) for r in _DIGIT_RUN.findall(text)}
    patterns = []
    # each phone shape has a cheap necessary condition; the regexes (no literal start) run only then
    if "+" in text:
        patterns.append((_PHONE_INTL, 0.95))
    if 4 in runs and (3 in runs or 7 in runs):
        patterns.append((_PHONE_NANP, 0.9))
    if "0" in text and len(runs) >= 2:
        patterns.append((_PHONE_LOCAL, 0.8))
    for pattern, score in patterns:
        for m in pattern.finditer(text):
            digits = _DIGITS.sub("", m.group())
            if not 9 <= len(digits) <= 15 or len(set(digits)) < 3:
                continue
            yield m.start(), m.end(), "phone", score


def _cards(text: str) -> Iterator[Found]:
    for m in _CARD.finditer(text):
        value = m.group()
        # one separator style throughout ("4242 4242 4242 4242" or "4242-4242-..."), as people write cards
        if " " in value and "-" in value:
            continue
        if card_ok(_DIGITS.sub("", value)):
            yield m.start(), m.end(), "credit_card", 1.0


def _ibans(text: str) -> Iterator[Found]:
    for m in _IBAN.finditer(text):
        if iban_ok(m.group().replace(" ", "")):
            yield m.start(), m.end(), "iban", 1.0


def _ssns(text: str) -> Iterator[Found]:
    for m in _SSN.finditer(text):
        if ssn_ok(m.group(1), m.group(3), m.group(4)):
            yield m.start(), m.end(), "us_ssn", 0.9
    low = text.lower()
    if "ssn" not in low and "social security" not in low:
        return
    for m in _SSN_CONTEXT.finditer(text):
        d = m.group(1)
        if ssn_ok(d[:3], d[3:5], d[5:]):
            yield m.start(1), m.end(1), "us_ssn", 0.95


def _ninos(text: str) -> Iterator[Found]:
    for m in _NINO.finditer(text):
        if nino_ok(m.group()):
            yield m.start(), m.end(), "uk_nino", 0.9


def _dnis(text: str) -> Iterator[Found]:
    for m in _DNI.finditer(text):
        if dni_ok(m.group()):
            yield m.start(), m.end(), "es_dni", 1.0


def _nirs(text: str) -> Iterator[Found]:
    for m in _NIR.finditer(text):
        if nir_ok(m.group()):
            yield m.start(), m.end(), "fr_nir", 1.0


def _cpfs(text: str) -> Iterator[Found]:
    for m in _CPF.finditer(text):
        if cpf_ok(_DIGITS.sub("", m.group())):
            yield m.start(), m.end(), "br_cpf", 1.0


def _aadhaars(text: str) -> Iterator[Found]:
    for m in _AADHAAR.finditer(text):
        if aadhaar_ok(m.group().replace(" ", "")):
            yield m.start(), m.end(), "in_aadhaar", 1.0


def _sins(text: str) -> Iterator[Found]:
    low = text.lower()
    if "sin" not in low and "social insurance" not in low:
        return
    for m in _SIN.finditer(text):
        if luhn_ok(_DIGITS.sub("", m.group(1))):
            yield m.start(1), m.end(1), "ca_sin", 0.95


def _ips(text: str) -> Iterator[Found]:
    if "." in text:
        for m in _IPV4.finditer(text):
            yield m.start(), m.end(), "ip_address", 0.9
    if "::" in text or text.count(":") >= 5:
        for m in _IPV6.finditer(text):
            value = m.group()
            if value.count(":") < 2 or len(value) < 6:
                continue
            try:
                ipaddress.IPv6Address(value)
            except ValueError:
                continue
            yield m.start(), m.end(), "ip_address", 0.9


def _streets(text: str) -> Iterator[Found]:
    for pattern in (_STREET_US, _STREET_EU):
        for m in pattern.finditer(text):
            yield m.start(), m.end(), "street_address", 0.7


_RECOGNISERS: dict[PIIEntity, Callable[[str], Iterator[Found]]] = {
    "email": _emails,
    "phone": _phones,
    "credit_card": _cards,
    "iban": _ibans,
    "us_ssn": _ssns,
    "uk_nino": _ninos,
    "es_dni": _dnis,
    "fr_nir": _nirs,
    "br_cpf": _cpfs,
    "in_aadhaar": _aadhaars,
    "ca_sin": _sins,
    "ip_address": _ips,
    "street_address": _streets,
}
# When two findings overlap, the more specific one wins: a checksum-confirmed card beats a phone-like run
_ORDER: tuple[PIIEntity, ...] = (
    "email", "credit_card", "iban", "br_cpf", "in_aadhaar", "fr_nir", "es_dni", "us_ssn", "ca_sin", "uk_nino",
    "ip_address", "phone", "street_address",
)  # fmt: skip
_PRIORITY = {e: i for i, e in enumerate(_ORDER)}


_DIGIT_RUN = re.compile(r"\d+")
_STREET_WORD = PrefixRegex(
    r"\b(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter|Parkway|"
    r"Pkwy|Highway|Hwy|Circle|Cir|Square|Sq|Trail|Trl|rue|avenue|boulevard|bd|place|chemin|allée|impasse|quai|via|"
    r"viale|calle|avenida)\b|(?:straße|strasse|str\.|weg|gasse|platz|allee|ring|damm)\s+\d"
)


def _gates(text: str) -> dict[PIIEntity, bool]:
    """Which recognisers can possibly fire, from one pass over the digit runs.

    Each recogniser's regex costs ~50 us per kilobyte; most texts hold no digit run long enough for most
    entities, and these checks (one `findall`, a few comparisons) decide that for all of them at once.
    """
    runs = [len(r) for r in _DIGIT_RUN.findall(text)]
    total = sum(runs)
    longest = max(runs, default=0)
    return {
        "email": "@" in text,
        "phone": total >= 9,
        "credit_card": total >= 13 and longest >= 3,
        "iban": total >= 4 and longest >= 2,
        "us_ssn": total >= 9 and (3 in runs or longest >= 9),
        "uk_nino": total >= 6,
        "es_dni": longest >= 7,
        "fr_nir": total >= 13,
        "br_cpf": total >= 11 and "." in text,
        "in_aadhaar": runs.count(4) >= 3,
        "ca_sin": total >= 9,
        "ip_address": total >= 4 and ("." in text or ":" in text),
        "street_address": longest >= 1 and _STREET_WORD.search(text) is not None,
    }


def find_pii(text: str, entities: Iterable[PIIEntity] = PII_ENTITIES) -> list[Found]:
    """Find personal data in `text`.

    Args:
        text: the text.
        entities: which kinds to look for.

    Returns:
        `(start, end, entity, score)` findings without overlaps, in text order.
    """
    found: list[Found] = []
    gates = _gates(text)
    for entity in entities:
        if gates[entity]:
            found.extend(_RECOGNISERS[entity](text))
    if not found:
        return []
    found.sort(key=lambda f: (_PRIORITY[f[2]], f[0]))
    kept: list[Found] = []
    taken: list[tuple[int, int]] = []
    for f in found:
        if any(f[0] < end and start < f[1] for start, end in taken):
            continue
        kept.append(f)
        taken.append((f[0], f[1]))
    kept.sort()
    return kept


class PIIGuard(TextGuard):
    """Finds personal data and redacts it (or flags or blocks, as configured).

    Args:
        entities: kinds to look for; all of `PII_ENTITIES` by default.
        action: `redact` (default) replaces each finding with a placeholder; `flag`, `block`, `escalate` leave
            the text as it is.
        placeholder: the replacement, formatted with `label` (the entity in upper case).
        stages: where it runs (input and output by default).
        name: the guard's name in verdicts.
        max_chars: scan at most this many characters.
    """

    def __init__(
        self,
        *,
        entities: Iterable[PIIEntity] | None = None,
        action: Action = "redact",
        placeholder: str = "[{label}]",
        stages: Iterable[Stage] = ("input", "output"),
        name: str = "pii",
        max_chars: int = DEFAULT_MAX_CHARS,
    ):
        super().__init__(name=name, stages=stages, max_chars=max_chars)
        chosen = tuple(entities) if entities is not None else PII_ENTITIES
        unknown = sorted(set(chosen) - set(PII_ENTITIES))
        if unknown:
            raise ConfigError(f"guard {name!r}: unknown PII entities {unknown}; known: {list(PII_ENTITIES)}")
        self.entities = chosen
        self.action = check_action(action, name)
        if "{label}" not in placeholder:
            raise ConfigError(f"guard {name!r}: placeholder must contain '{{label}}', got {placeholder!r}")
        self.placeholder = placeholder

    def _check_text(self, text: str, context: GuardContext) -> list[Verdict]:
        found = find_pii(text, self.entities)
        if not found:
            return []
        spans = tuple(Span(start=s, end=e, excerpt=mask(text[s:e]), label=label) for s, e, label, _ in found)
        kinds = sorted({label for _, _, label, _ in found})
        redacted = redact(text, [(s, e, label) for s, e, label, _ in found], self.placeholder)
        return [
            Verdict(
                guard=self.name,
                category="pii",
                action=self.action,
                score=max(score for *_, score in found),
                spans=spans,
                message=f"personal data: {', '.join(kinds)}",
                redacted_text=redacted if self.action == "redact" else None,
            )
        ]
