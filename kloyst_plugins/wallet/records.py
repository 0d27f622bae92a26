"""What the ledger hands back and raises, and the few pieces of SQL plumbing it shares with settlement.

Results are frozen dataclasses, not ORM objects: the ledger works on a bare ``Connection``
(a request's ``session.connection()`` or the sender's own), so nothing here is tied to a
session's identity map or tenant scope. The exceptions are API errors, so a view or another
plugin that lets one through answers with the right status (402, 409, 404) without a mapping.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import uuid
import weakref
from dataclasses import dataclass
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from kloyst.api import Conflict, format_micros, MAX_BALANCE_MICROS, NotFound, PaymentRequired, Unprocessable
from kloyst_plugins.wallet.models import LedgerEntry, Wallet, WalletHold

WALLET = Wallet.__table__
ENTRY = LedgerEntry.__table__
HOLD = WalletHold.__table__

DEFAULT_CURRENCY = "USD"
_CURRENCY = re.compile(r"[A-Z]{3}")
# Engine → the deployment's wallet.default_currency, registered when the app is configured. Keyed by
# engine (not a plain global) so two applications in one process, as in tests, never share it.
_CURRENCY_BY_ENGINE: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def parse_currency(value: Any) -> str:
    code = str(value).strip().upper()
    if not _CURRENCY.fullmatch(code):
        raise ValueError(f"{value!r} is not an ISO 4217 currency code such as USD or EUR")
    return code


def configure_default_currency(engine: Engine, currency: str) -> None:
    _CURRENCY_BY_ENGINE[engine] = parse_currency(currency)


def configured_currency(conn: Connection) -> str:
    return _CURRENCY_BY_ENGINE.get(conn.engine, DEFAULT_CURRENCY)


def insert_for(conn: Connection):
    """The dialect's ``insert`` (both offer ``on_conflict_do_nothing``); the ledger runs on PostgreSQL and SQLite."""
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def request_hash(kind: str, **params: Any) -> str:
    """What a movement asked for, as SHA-256 of canonical JSON: the same key must always ask the same."""
    body = {"kind": kind, **{k: str(v) if isinstance(v, uuid.UUID) else v for k, v in params.items()}}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class InsufficientFunds(PaymentRequired):
    code = "insufficient_funds"

    def __init__(self, *, needed: int, available: int, currency: str) -> None:
        super().__init__(f"the wallet has {format_micros(available)} {currency} available and this needs "
                         f"{format_micros(needed)} {currency}: top up the wallet first",
                         details={"needed": format_micros(needed), "available": format_micros(available),
                                  "currency": currency})


class BalanceLimitExceeded(Unprocessable):
    """A credit that would take the balance past :data:`kloyst.money.MAX_BALANCE_MICROS` (BIGINT's headroom)."""

    code = "balance_limit_exceeded"

    def __init__(self, *, amount: int, balance: int, currency: str) -> None:
        room = max(0, MAX_BALANCE_MICROS - balance)
        super().__init__(f"a wallet holds at most {format_micros(MAX_BALANCE_MICROS)} {currency}; it has "
                         f"{format_micros(balance)}, so it can take at most {format_micros(room)} more",
                         field="amount", details={"amount": format_micros(amount), "balance": format_micros(balance),
                                                  "maximum_balance": format_micros(MAX_BALANCE_MICROS),
                                                  "currency": currency})


class IdempotencyConflict(Conflict):
    code = "idempotency_key_reused"

    def __init__(self, key: str, entry_id: uuid.UUID) -> None:
        super().__init__("this Idempotency-Key was already used for a different movement (another amount or "
                         "kind); a key names one request: use a new key for a new one",
                         details={"idempotency_key": key, "entry_id": str(entry_id)})


class UnknownHold(NotFound):
    code = "hold_not_found"

    def __init__(self, hold_id: uuid.UUID) -> None:
        super().__init__("hold not found", details={"hold_id": str(hold_id)})


class HoldExceeded(Conflict):
    """A capture or release larger than what the hold still reserves (a caller's arithmetic went wrong)."""

    code = "hold_exceeded"

    def __init__(self, hold_id: uuid.UUID, asked: int, outstanding: int) -> None:
        super().__init__(f"the hold has {format_micros(outstanding)} outstanding, less than the "
                         f"{format_micros(asked)} asked", details={"hold_id": str(hold_id),
                                                                   "asked": format_micros(asked),
                                                                   "outstanding": format_micros(outstanding)})


@dataclass(frozen=True)
class WalletState:
    id: uuid.UUID
    currency: str
    balance_micros: int
    held_micros: int
    available_micros: int
    low_balance_threshold_micros: int
    vendor_id: uuid.UUID | None = None
    low_balance: bool = False  # available is below the threshold (the event was recorded)


@dataclass(frozen=True)
class Entry:
    id: uuid.UUID
    seq: int
    vendor_id: uuid.UUID
    kind: str
    amount_micros: int
    balance_delta_micros: int
    held_delta_micros: int
    hold_id: uuid.UUID | None
    message_id: uuid.UUID | None
    reference: str | None
    idempotency_key: str
    actor_user_id: uuid.UUID | None
    note: str | None
    created_at: dt.datetime
    replayed: bool = False  # an earlier call with the same key made it; nothing moved this time


@dataclass(frozen=True)
class Hold:
    id: uuid.UUID
    amount_micros: int
    captured_micros: int
    released_micros: int
    outstanding_micros: int
    reference: str
    refunded_micros: int = 0
    created_at: dt.datetime | None = None


def wallet_state(row) -> WalletState:
    return WalletState(id=row.id, currency=row.currency, balance_micros=row.balance_micros,
                       held_micros=row.held_micros, available_micros=row.balance_micros - row.held_micros,
                       low_balance_threshold_micros=row.low_balance_threshold_micros, vendor_id=row.vendor_id,
                       low_balance=bool(row.low_balance_flag))


def entry_from_row(row, *, replayed: bool = False) -> Entry:
    return Entry(id=row.id, seq=row.seq, vendor_id=row.vendor_id, kind=row.kind, amount_micros=row.amount_micros,
                 balance_delta_micros=row.balance_delta_micros, held_delta_micros=row.held_delta_micros,
                 hold_id=row.hold_id, message_id=row.message_id, reference=row.reference,
                 idempotency_key=row.idempotency_key, actor_user_id=row.actor_user_id, note=row.note,
                 created_at=row.created_at, replayed=replayed)


def hold_from_row(row) -> Hold:
    return Hold(id=row.id, amount_micros=row.amount_micros, captured_micros=row.captured_micros,
                released_micros=row.released_micros,
                outstanding_micros=row.amount_micros - row.captured_micros - row.released_micros,
                reference=row.reference, refunded_micros=row.refunded_micros, created_at=row.created_at)
