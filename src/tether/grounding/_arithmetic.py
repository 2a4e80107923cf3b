"""Numbers an answer computed: one step of arithmetic on two numbers the run has seen.

"2 of the kettles at 37.90 each" is answered "$75.80": the number is in no tool result, yet it is not
made up. A small model computes in its head (often right), and sending a right answer back until it calls
a calculator cost the suite three tasks. So a number an answer states counts as grounded when one step
of arithmetic on two known numbers gives it: a + b, a − b, a × b, a ÷ b, or a percentage change
a × (1 ± p) where p is a fraction such as the 0.10 of "10%". The derivation is returned so that the run
can record how the number was checked.

What keeps a made-up number from passing by chance:
- the operands are two different numbers the run has seen (not 0 or 1), and the result must match to
  the cent (a whole number of 100 or more: to the unit, as answers round "19,504.8 yen" to "19,505");
- a whole number under 100 made from two whole numbers is never derived: with a handful of small
  counts in view, nearly every small whole number is some sum or difference of two of them.
Only answers use this. Tool arguments must appear as they are: a write is not made with a value the
model worked out in its head (`find_ungrounded`).
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Callable, Iterable
from decimal import Decimal

__all__ = ["derive", "misscaled"]

_CENT = 0.005
_MAX_OPERANDS = 400  # beyond this many distinct numbers in view, chance matches grow: derive nothing


def plain(n: Decimal) -> str:
    """A number as a tool result would show it: 2400000, 37.9 (no exponent, no trailing zeros)."""
    return format(n.normalize(), "f")


def _fmt(x: float) -> str:
    return plain(Decimal(repr(x)))


def derive(value: Decimal, known: Iterable[Decimal]) -> str | None:
    """How `value` comes from two of the `known` numbers in one step ("75.8 = 2 × 37.9"), or None."""
    target = float(value)
    operands = sorted({float(n) for n in known if n not in (0, 1) and abs(n) < 1e12})
    if not operands or len(operands) > _MAX_OPERANDS:
        return None
    whole_target = target == int(target) and abs(target) < 100
    # a whole number of 100 or more may be the result rounded ("19,505 yen" for 129 x 151.2)
    tol = 0.5 if target == int(target) and abs(target) >= 100 else max(_CENT, abs(target) * 1e-9)

    def candidates(b: float, b_tol: float) -> list[float]:
        lo, hi = bisect.bisect_left(operands, b - b_tol), bisect.bisect_right(operands, b + b_tol)
        return operands[lo:hi]

    def allowed(a: float, b: float) -> bool:
        # two different numbers: "82000 + 82000" is a coincidence far more often than a computation
        return a != b and not (whole_target and a == int(a) and b == int(b))

    for a in operands:
        # (the operand b that would give the target, its tolerance, the form, the result a and b give)
        checks: list[tuple[float, float, str, Callable[[float, float], float]]] = [
            (target - a, tol, "{a} + {b}", operator.add),
            (a - target, tol, "{a} − {b}", operator.sub),
            (target / a, tol / abs(a), "{a} × {b}", operator.mul),
        ]
        if target != 0:
            checks.append((a / target, abs(a) * tol / (target * target), "{a} ÷ {b}", operator.truediv))
        fractions = [
            (target / a - 1, tol / abs(a), "{a} × (1 + {b})", lambda x, y: x * (1 + y)),
            (1 - target / a, tol / abs(a), "{a} × (1 − {b})", lambda x, y: x * (1 - y)),
        ]
        for wanted, b_tol, form, result in checks + fractions:
            for b in candidates(wanted, b_tol):
                if not allowed(a, b) or (form.endswith("{b})") and not 0 < b < 1):
                    continue  # a percentage change takes a fraction
                exact = abs(result(a, b) - target) <= _CENT
                return f"{_fmt(target)} {'=' if exact else '≈'} " + form.format(a=_fmt(a), b=_fmt(b))
    return None


_POWERS = frozenset(Decimal(10) ** k for k in (-3, -2, -1, 1, 2, 3))


def misscaled(value: Decimal, known: Iterable[Decimal]) -> Decimal | None:
    """The known number `value` is a power of ten away from ("$24,000,000" for a budget of 2400000, a
    zero too many in the thousands separators), or None. For the message that sends such an answer back:
    told only "answer with the values as the results give them", the 1.5B model wrote the same number
    three times."""
    if value == 0:
        return None
    for n in known:
        if n in (0, 1) or n == value:
            continue
        ratio = value / n
        if ratio in _POWERS:
            return n
    return None
