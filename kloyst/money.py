"""Money as integers: micro-units of a currency (1 = 0.000001), shown as decimal strings.

Amounts are stored and added as integers, never floats, so a ledger sums exactly
and a price multiplied by a million messages is still exact. The API shows them as decimal
strings with six places (``"12.500000"``) and reads decimal strings or integers back.
Rounding happens in one place (:func:`round_micros`), half up, when a percentage or a rate
with more than six decimals is applied.

**Bounds.** Micro-units are stored as BIGINT (at most 9,223,372,036,854,775,807, i.e. about
9.2 trillion units). An amount a client sends is at most :data:`MAX_AMOUNT_TEXT`
(999,999,999,999.999999), and a wallet's balance is never credited past the same figure
(:data:`MAX_BALANCE_MICROS`), so a balance plus any one amount stays below 2e18 micro-units: the
sum cannot overflow even in the statement that checks it.
"""

from __future__ import annotations

import decimal
from decimal import ROUND_HALF_UP, Decimal

MICROS = 1_000_000
_SIX_PLACES = Decimal("0.000001")
# Amounts are BIGINT micro-units (at most 9.2e18, i.e. 9.2e12 units); below a trillion leaves room for sums.
MAX_AMOUNT = Decimal(10) ** 12  # exclusive: the largest amount is one micro-unit less
MAX_AMOUNT_MICROS = int(MAX_AMOUNT * MICROS) - 1
MAX_AMOUNT_TEXT = "999999999999.999999"
# The most a wallet may hold: credits past it are refused (a 422), so balance + amount < 2e18 < BIGINT's 9.2e18.
MAX_BALANCE_MICROS = MAX_AMOUNT_MICROS


class MoneyError(ValueError):
    """A value that is not an amount of money (names what was wrong, for a 422)."""


def to_micros(value, *, field: str = "amount", allow_negative: bool = False) -> int:
    """Parse ``"12.5"``, ``"0.0068"``, ``12`` or ``Decimal`` into micro-units; more than six decimals is an error."""
    if isinstance(value, bool) or value is None:
        raise MoneyError(f"{field}: expected a decimal amount such as \"12.50\"")
    if isinstance(value, float):
        raise MoneyError(f"{field}: send amounts as decimal strings (\"12.50\"), not floating-point numbers")
    try:
        amount = Decimal(str(value).strip())
    except decimal.InvalidOperation:
        raise MoneyError(f"{field}: {str(value)[:40]!r} is not a decimal amount") from None
    if not amount.is_finite():
        raise MoneyError(f"{field}: must be a finite amount")
    if abs(amount) >= MAX_AMOUNT:  # before quantize, which cannot hold 1E+30 to six places
        raise MoneyError(f"{field}: must be at most {MAX_AMOUNT_TEXT} (less than {MAX_AMOUNT:,.0f})")
    if amount != amount.quantize(_SIX_PLACES, rounding=ROUND_HALF_UP):
        raise MoneyError(f"{field}: at most six decimal places")
    if amount < 0 and not allow_negative:
        raise MoneyError(f"{field}: must not be negative")
    return int(amount * MICROS)


def format_micros(micros: int) -> str:
    """``12500000`` → ``"12.500000"`` (always six places, sign kept)."""
    return str((Decimal(int(micros)) / MICROS).quantize(_SIX_PLACES))


def round_micros(value: Decimal) -> int:
    """A computed amount in micro-units (a Decimal, possibly fractional) rounded half up to a whole micro."""
    return int(Decimal(value).quantize(Decimal(1), rounding=ROUND_HALF_UP))

