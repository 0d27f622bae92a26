"""What a client may send to the wallet API: amounts as decimal strings, instants as ISO 8601.

Amounts go through :func:`kloyst.money.to_micros` (never floats; at most six decimals), so a
bad amount is a 422 naming the field, like any other validation problem.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

from kloyst.http.idempotency import idempotency_key
from kloyst.http.pagination import MAX_LIMIT
from kloyst.http.validation import Schema, iso_timestamp
from kloyst.money import to_micros
from kloyst_plugins.wallet.models import EntryKind

# Client keys are stored as ``api:<key>`` in a 255-character column: 200 leaves room.
MAX_CLIENT_KEY_LENGTH = 200
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _micros(value) -> int:
    return to_micros(value, field="amount")


def _signed_micros(value) -> int:
    return to_micros(value, field="amount", allow_negative=True)


def _positive(value: int) -> int:
    if value <= 0:
        raise ValueError("must be more than zero")
    return value


def _not_zero(value: int) -> int:
    if value == 0:
        raise ValueError("must not be zero: positive credits the wallet, negative debits it")
    return value


def _instant(value):
    """``2026-03-01`` (a whole day, UTC) or a full ISO 8601 timestamp (UTC when it names no zone)."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    text = str(value).strip()
    if _DATE.fullmatch(text):
        return dt.date.fromisoformat(text)
    try:
        return iso_timestamp(text)
    except ValueError:
        raise ValueError("expected a date (2026-03-01) or an ISO 8601 timestamp") from None


Micros = Annotated[int, BeforeValidator(_micros)]
PositiveMicros = Annotated[int, BeforeValidator(_micros), AfterValidator(_positive)]
SignedMicros = Annotated[int, BeforeValidator(_signed_micros), AfterValidator(_not_zero)]
Instant = Annotated[dt.datetime | dt.date, BeforeValidator(_instant)]


def start_of(value: dt.datetime | dt.date | None) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.combine(value, dt.time(), dt.timezone.utc)


def end_of(value: dt.datetime | dt.date | None) -> dt.datetime | None:
    """Exclusive end: a date includes its whole day, a timestamp is the first instant not included."""
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.combine(value + dt.timedelta(days=1), dt.time(), dt.timezone.utc)


class WalletPatch(Schema):
    low_balance_threshold: Micros  # "0" turns the alert off


class TopupBody(Schema):
    amount: PositiveMicros
    note: str | None = Field(default=None, max_length=500)


class AdjustmentBody(Schema):
    amount: SignedMicros
    note: str = Field(min_length=1, max_length=500)  # why: an adjustment without a reason cannot be audited


class Range(Schema):
    from_: Instant | None = Field(default=None, alias="from")
    to: Instant | None = None


class TransactionQuery(Range):
    cursor: str | None = None
    limit: int = Field(default=50, ge=1, le=MAX_LIMIT)
    kind: EntryKind | None = None


def required_idempotency_key(headers) -> str:
    """Money-moving admin calls must be retryable without moving money twice: the header is required."""
    return idempotency_key(headers, required=True, max_length=MAX_CLIENT_KEY_LENGTH)
