"""Check digits of structured identifiers: a pattern finds candidates, a checksum confirms them.

A 16-digit number is a card only if its Luhn sum is right; an IBAN only if mod-97 gives 1. The checksums
are what keep PII precision high on text full of order numbers, timestamps and phone-like digit runs.
"""

from __future__ import annotations

__all__ = [
    "aadhaar_ok",
    "card_ok",
    "cpf_ok",
    "dni_ok",
    "iban_ok",
    "luhn_ok",
    "nino_ok",
    "nir_ok",
    "ssn_ok",
]

# IBAN lengths by country (ISO 13616 registry); a wrong length fails before the checksum is computed
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check used by payment cards and Canadian SINs."""
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def card_ok(digits: str) -> bool:
    """A payment card number: a known issuer prefix, a length that issuer uses, and a valid Luhn sum."""
    n = len(digits)
    if not 13 <= n <= 19 or not luhn_ok(digits) or len(set(digits)) < 2:
        return False
    two, four = int(digits[:2]), int(digits[:4])
    if digits[0] == "4":
        return n in (13, 16, 19)  # Visa
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return n == 16  # Mastercard
    if two in (34, 37):
        return n == 15  # American Express
    if digits.startswith(("6011", "65")) or 644 <= int(digits[:3]) <= 649:
        return 16 <= n <= 19  # Discover
    if 3528 <= four <= 3589:
        return 16 <= n <= 19  # JCB
    if two in (36, 38, 39) or 300 <= int(digits[:3]) <= 305:
        return 14 <= n <= 19  # Diners Club
    if two == 62:
        return 16 <= n <= 19  # UnionPay
    return digits.startswith(("50", "56", "57", "58", "63", "67")) and 12 <= n <= 19  # Maestro


def iban_ok(iban: str) -> bool:
    """An IBAN (spaces removed): the country's length and ISO 7064 mod-97 equal to 1."""
    iban = iban.upper()
    if len(iban) != _IBAN_LENGTHS.get(iban[:2], -1) or not iban[2:4].isdigit() or not iban.isalnum():
        return False
    rearranged = iban[4:] + iban[:4]
    # letters count as 10..35; folding the digits in chunks keeps the integers small
    remainder = 0
    for ch in rearranged:
        value = int(ch, 36)
        remainder = (remainder * (100 if value > 9 else 10) + value) % 97
    return remainder == 1


def ssn_ok(area: str, group: str, serial: str) -> bool:
    """A US SSN the SSA could have issued: area not 000, 666 or 9xx; group not 00; serial not 0000."""
    a = int(area)
    return a != 0 and a != 666 and a < 900 and group != "00" and serial != "0000"


def nino_ok(nino: str) -> bool:
    """A UK National Insurance number (format rules; it has no check digit)."""
    nino = nino.replace(" ", "").upper()
    if len(nino) != 9 or not nino[2:8].isdigit() or nino[8] not in "ABCD":
        return False
    first, second = nino[0], nino[1]
    if first in "DFIQUV" or second in "DFIOQUV":
        return False
    return nino[:2] not in {"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"}


_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def dni_ok(value: str) -> bool:
    """A Spanish DNI (8 digits + letter) or NIE (X/Y/Z + 7 digits + letter); the letter is a mod-23 check."""
    value = value.upper().replace("-", "")
    if len(value) != 9:
        return False
    body = value[:8]
    if body[0] in "XYZ":
        body = str("XYZ".index(body[0])) + body[1:]
    return body.isdigit() and _DNI_LETTERS[int(body) % 23] == value[8]


def nir_ok(digits: str) -> bool:
    """A French NIR (INSEE number, 15 characters): the last two digits are 97 - (first 13 mod 97)."""
    digits = digits.replace(" ", "").upper()
    if len(digits) != 15 or digits[0] not in "12":
        return False
    # Corsica's department codes 2A/2B are replaced by 19/18 before the checksum
    body = digits[:13].replace("2A", "19").replace("2B", "18")
    if not body.isdigit() or not digits[13:].isdigit():
        return False
    return 97 - int(body) % 97 == int(digits[13:])


def cpf_ok(digits: str) -> bool:
    """A Brazilian CPF (11 digits, two mod-11 check digits)."""
    if len(digits) != 11 or not digits.isdigit() or len(set(digits)) == 1:
        return False
    for n in (9, 10):
        total = sum(int(digits[i]) * (n + 1 - i) for i in range(n))
        check = (total * 10) % 11 % 10
        if check != int(digits[n]):
            return False
    return True


_VERHOEFF_D = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5], [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7], [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3], [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]  # fmt: skip
_VERHOEFF_P = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 5, 7, 6, 2, 8, 3, 0, 9, 4], [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7], [9, 4, 5, 3, 1, 2, 6, 8, 7, 0], [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5], [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
]  # fmt: skip


def aadhaar_ok(digits: str) -> bool:
    """An Indian Aadhaar number (12 digits, not starting with 0 or 1, Verhoeff check digit)."""
    if len(digits) != 12 or not digits.isdigit() or digits[0] in "01":
        return False
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = _VERHOEFF_D[c][_VERHOEFF_P[i % 8][int(ch)]]
    return c == 0
