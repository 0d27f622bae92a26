"""What a client may send to the wallet API (amounts as decimal strings, instants as ISO 8601), and what it answers.

Amounts are :data:`kloyst.http.validation.AmountIn` (decimal strings read by
:func:`kloyst.money.to_micros`: never floats, at most six decimals, at most 999,999,999,999.999999),
so a bad amount is a 422 naming the field, and the OpenAPI document declares the string the API reads.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

from kloyst.api import (
    Amount,
    AmountIn,
    Answer,
    idempotency_key,
    iso_timestamp,
    MAX_CURSOR_LENGTH,
    MAX_LIMIT,
    MultilineText,
    Schema,
    SignedAmountIn,
)
from kloyst_plugins.wallet.models import EntryKind

# Client keys are stored as ``api:<key>`` in a 255-character column: 200 leaves room.
MAX_CLIENT_KEY_LENGTH = 200
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


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


PositiveMicros = Annotated[AmountIn, AfterValidator(_positive)]
SignedMicros = Annotated[SignedAmountIn, AfterValidator(_not_zero)]
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
    low_balance_threshold: AmountIn  # "0" turns the alert off


class TopupBody(Schema):
    amount: PositiveMicros
    note: MultilineText | None = Field(default=None, max_length=500)


class AdjustmentBody(Schema):
    amount: SignedMicros
    note: MultilineText = Field(min_length=1, max_length=500)  # why: an adjustment without a reason cannot be audited


class Range(Schema):
    from_: Instant | None = Field(default=None, alias="from")
    to: Instant | None = None


class TransactionQuery(Range):
    cursor: str | None = Field(default=None, max_length=MAX_CURSOR_LENGTH)
    limit: int = Field(default=50, ge=1, le=MAX_LIMIT)
    kind: EntryKind | None = None


def required_idempotency_key(headers) -> str:
    """Money-moving admin calls must be retryable without moving money twice: the header is required."""
    return idempotency_key(headers, required=True, max_length=MAX_CLIENT_KEY_LENGTH)


class WalletOut(Answer):
    """A vendor's prepaid wallet; available = balance − held."""

    id: uuid.UUID
    currency: str = Field(description="ISO 4217, fixed when the wallet is first opened.")
    balance: Amount = Field(description="Money the vendor has.")
    held: Amount = Field(description="Money reserved for launched campaigns.")
    available: Amount = Field(description="What a new campaign can hold.")
    low_balance_threshold: Amount = Field(description="0 means no alert.")
    low_balance: bool = Field(description="Available fell below the threshold (once per crossing).")


class WalletAnswer(Answer):
    wallet: WalletOut


class EntryOut(Answer):
    """One movement of the ledger, never changed once written."""

    id: uuid.UUID
    kind: EntryKind
    amount: Amount
    balance_change: Amount
    held_change: Amount
    hold_id: uuid.UUID | None
    message_id: uuid.UUID | None
    reference: str | None
    note: str | None
    actor_user_id: uuid.UUID | None
    idempotency_key: str
    created_at: dt.datetime


class Moved(Answer):
    """The entry a top-up or adjustment wrote (or the original one, on a replay) and the wallet after it."""

    entry: EntryOut
    wallet: WalletOut


class TransactionPage(Answer):
    """Ledger entries, newest first (keyset on the ledger's own order)."""

    items: list[EntryOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")
