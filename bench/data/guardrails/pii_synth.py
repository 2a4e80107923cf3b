"""Synthetic structured PII with exact ground truth (emails, cards, phones, IBANs, IPs) and look-alikes.

Values are generated, never real: cards and IBANs carry valid check digits so that a checksum-validating
recogniser can find them, and the negatives (order numbers, invalid cards, dates, versions, ISBNs, UUIDs)
are the look-alikes that cost precision in practice. Deterministic for a given seed.
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path
from typing import Any

_FIRST = [
    "anna",
    "ben",
    "carla",
    "deepak",
    "elena",
    "farid",
    "grace",
    "hiro",
    "ines",
    "jonas",
    "kemi",
    "liam",
    "mei",
    "nora",
]
_LAST = [
    "schmidt",
    "okafor",
    "rossi",
    "nguyen",
    "garcia",
    "kowalski",
    "smith",
    "dubois",
    "tanaka",
    "silva",
    "berg",
    "novak",
]
_DOMAINS = [
    "example.com",
    "mail.example.org",
    "firm.de",
    "uni-example.edu",
    "shop.co.uk",
    "post.example.fr",
    "corp.io",
]


def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return body + str((10 - total % 10) % 10)


def _card(rng: random.Random) -> str:
    kind = rng.choice(["visa", "mc", "amex", "discover"])
    if kind == "amex":
        n = _luhn_complete(rng.choice(["34", "37"]), 15, rng)
        sep = rng.choice([" ", "-", ""])
        return sep.join([n[:4], n[4:10], n[10:]])
    prefix = {"visa": "4", "mc": str(rng.randint(51, 55)), "discover": "6011"}[kind]
    n = _luhn_complete(prefix, 16, rng)
    sep = rng.choice([" ", "-", ""])
    return sep.join(n[i : i + 4] for i in range(0, 16, 4))


def _bad_card(rng: random.Random) -> str:
    good = _luhn_complete("4", 16, rng)
    bad = good[:-1] + str((int(good[-1]) + rng.randint(1, 9)) % 10)
    return " ".join(bad[i : i + 4] for i in range(0, 16, 4))


_IBAN_FORMATS = {
    "DE": "8n10n",
    "GB": "4a14n",
    "FR": "23n",
    "ES": "20n",
    "NL": "4a10n",
    "IT": "1a22n",
    "BE": "12n",
}


def _iban(rng: random.Random) -> str:
    country, fmt = rng.choice(sorted(_IBAN_FORMATS.items()))
    bban = ""
    num = ""
    for ch in fmt:
        if ch.isdigit():
            num += ch
            continue
        pool = string.digits if ch == "n" else string.ascii_uppercase
        bban += "".join(rng.choice(pool) for _ in range(int(num)))
        num = ""
    rearranged = bban + country + "00"
    value = int("".join(str(int(c, 36)) for c in rearranged))
    check = 98 - value % 97
    iban = f"{country}{check:02d}{bban}"
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4)) if rng.random() < 0.6 else iban


def _phone(rng: random.Random) -> str:
    def d(n: int) -> str:
        return "".join(rng.choice(string.digits) for _ in range(n))

    area = str(rng.randint(201, 989))
    return rng.choice(
        [
            f"({area}) {rng.randint(200, 999)}-{d(4)}",
            f"{area}-{rng.randint(200, 999)}-{d(4)}",
            f"+1 {area} {rng.randint(200, 999)} {d(4)}",
            f"+44 20 {d(4)} {d(4)}",
            f"+49 30 {d(8)}",
            f"+33 1 {d(2)} {d(2)} {d(2)} {d(2)}",
            f"06 {d(2)} {d(2)} {d(2)} {d(2)}",
            f"+39 06 {d(4)} {d(4)}",
        ]
    )


def _email(rng: random.Random) -> str:
    f, last = rng.choice(_FIRST), rng.choice(_LAST)
    local = rng.choice([f"{f}.{last}", f"{f[0]}{last}", f"{f}_{last}{rng.randint(1, 99)}", f"{f}+news"])
    return f"{local}@{rng.choice(_DOMAINS)}"


def _ip(rng: random.Random) -> str:
    if rng.random() < 0.75:
        return ".".join(
            str(x)
            for x in (rng.randint(11, 223), rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254))
        )
    if rng.random() < 0.5:
        return "2001:db8:" + ":".join(f"{rng.randint(0, 65535):x}" for _ in range(6))
    return f"2001:db8:{rng.randint(1, 65535):x}::{rng.randint(1, 65535):x}"


def _negative(rng: random.Random) -> str:
    def d(n: int) -> str:
        return "".join(rng.choice(string.digits) for _ in range(n))

    return rng.choice(
        [
            f"order #{d(9)}",
            f"invoice INV-{d(6)}",
            f"{rng.randint(2000, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            f"version {rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 40)}",
            f"ISBN 978-{d(1)}-{d(2)}-{d(6)}-{d(1)}",
            f"tracking number 1Z{d(16)}",
            f"${rng.randint(1, 99)},{d(3)}.{d(2)}",
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}",
            "card " + _bad_card(rng),
            f"ticket {d(4)}-{d(4)}",
            f"room {rng.randint(100, 999)}",
            f"reference {d(12)}",
        ]
    )


_GEN = {"email": _email, "credit_card": _card, "phone": _phone, "iban": _iban, "ip_address": _ip}
_TEMPLATES = [
    "Please contact {0} about {n}.",
    "Customer record: {0}; {1}. Note: {n}.",
    "Hi, my details are {0} and {1}, regarding {n}.",
    "Payment failed for {n}; update {0} before Friday.",
    "Server log: {n} request from {0} flagged.",
    "Refund to {0}, reference {n}, confirmation sent to {1}.",
    "{0}",
    "See {n} and {n2}; nothing else to report.",
]
_LABEL_PHRASE = {
    "email": "email",
    "credit_card": "card",
    "phone": "phone",
    "iban": "IBAN",
    "ip_address": "IP",
}


def write_pii(path: Path, *, seed: int, rows: int = 400) -> None:
    """Write `rows` texts with their entity spans to `path` (JSONL: `text`, `entities`)."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(rows):
        template = rng.choice(_TEMPLATES)
        slots = template.count("{0}") + template.count("{1}")
        kinds = [rng.choice(sorted(_GEN)) for _ in range(slots)]
        values = [_GEN[k](rng) for k in kinds]
        parts: dict[str, str] = {"n": _negative(rng), "n2": _negative(rng)}
        text = template
        entities: list[dict[str, Any]] = []
        # fill left to right so that offsets are exact
        for slot, (kind, value) in enumerate(zip(kinds, values, strict=True)):
            marker = "{" + str(slot) + "}"
            phrase = f"{_LABEL_PHRASE[kind]} {value}"
            text = text.replace(marker, phrase, 1)
        for key, value in parts.items():
            text = text.replace("{" + key + "}", value)
        cursor = 0
        for kind, value in zip(kinds, values, strict=True):
            start = text.index(value, cursor)
            entities.append({"start": start, "end": start + len(value), "label": kind})
            cursor = start + len(value)
        out.append({"id": f"pii-{i:04d}", "text": text, "entities": entities})
    with path.open("w") as fh:
        for r in out:
            fh.write(json.dumps(r) + "\n")
