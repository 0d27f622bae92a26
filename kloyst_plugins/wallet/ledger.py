"""The one way money moves: ``Ledger(conn, vendor_id)``, on PostgreSQL and SQLite alike.

Every movement is, in the caller's transaction:

1. **look up its idempotency key** — a key already used answers with its entry (same request:
   nothing moves again) or :class:`IdempotencyConflict` (same key, other amount or kind);
2. **a conditional UPDATE** of the hold (``… WHERE amount - captured - released >= :amt``) and
   then of the wallet (``… WHERE balance - held >= :amt`` for debits): the check and the change
   are one statement on a locked row, so concurrent debits can never overdraw (measured:
   101 debits of 30 against 1000 → exactly 33 succeed). Credits are bounded the same way
   (``… WHERE balance <= MAX_BALANCE - :amt``): a balance never grows past
   :data:`kloyst.money.MAX_BALANCE_MICROS`, so no sum can overflow BIGINT (a 422 instead). No row →
   refused, and nothing was written, so a refusal leaves no orphan entry and needs no savepoint
   (pysqlite's savepoints are fragile);
3. **INSERT the entry … ON CONFLICT (vendor_id, idempotency_key) DO NOTHING**. Losing that race
   means a concurrent call with the same key committed between steps 1 and 3: the changes of step
   2 are reversed on the rows this transaction already holds, and the winner's entry is the answer.

Lock order is hold, then wallet, everywhere (settlement too), so movements never deadlock.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from kloyst.api import MAX_BALANCE_MICROS, new_id, utcnow
from kloyst_plugins.wallet import alerts
from kloyst_plugins.wallet.models import EntryKind
from kloyst_plugins.wallet.records import (  # noqa: F401 - the ledger's public surface
    ENTRY, HOLD, WALLET, BalanceLimitExceeded, Entry, Hold, HoldExceeded, IdempotencyConflict, InsufficientFunds,
    UnknownHold,
    WalletState, configure_default_currency, configured_currency, entry_from_row, hold_from_row, insert_for,
    parse_currency, request_hash, wallet_state)

RELEASE_ALL = "outstanding"


def _positive(amount: int, what: str = "amount") -> int:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ValueError(f"{what} must be a positive integer of micro-units, not {amount!r}")
    return amount


class Ledger:
    """Movements of one vendor's wallet on ``conn``; the caller's transaction commits or aborts them."""

    def __init__(self, conn: Connection, vendor_id: uuid.UUID, *, default_currency: str | None = None) -> None:
        self.conn = conn
        self.vendor_id = vendor_id
        self.default_currency = parse_currency(default_currency) if default_currency else configured_currency(conn)

    def wallet(self) -> WalletState:
        """The wallet as it is now, opened (empty, in the default currency) on first use."""
        row = self._wallet_row()
        if row is None:
            now = utcnow()
            self.conn.execute(insert_for(self.conn)(WALLET).values(
                id=new_id(), vendor_id=self.vendor_id, currency=self.default_currency, balance_micros=0,
                held_micros=0, low_balance_threshold_micros=0, low_balance_flag=False, created_at=now,
                updated_at=now).on_conflict_do_nothing(index_elements=["vendor_id"]))
            row = self._wallet_row()
        return wallet_state(row)

    def set_low_balance_threshold(self, threshold_micros: int) -> WalletState:
        """Change the alert threshold; crossing it this way (raised above available) alerts like a debit."""
        if threshold_micros < 0:
            raise ValueError("the threshold must not be negative")
        self.wallet()
        row = self.conn.execute(update(WALLET).where(WALLET.c.vendor_id == self.vendor_id)
                                .values(low_balance_threshold_micros=threshold_micros, updated_at=utcnow())
                                .returning(*WALLET.c)).one()
        alerts.watch(self.conn, row)
        return wallet_state(self._wallet_row())

    def topup(self, amount: int, *, idempotency_key: str, actor_user_id: uuid.UUID | None = None,
              note: str | None = None) -> Entry:
        _positive(amount)
        return self._move(EntryKind.TOPUP, amount, key=idempotency_key,
                          digest=request_hash("TOPUP", amount=amount), balance_delta=amount,
                          actor_user_id=actor_user_id, note=note)

    def adjust(self, amount_signed: int, *, idempotency_key: str, actor_user_id: uuid.UUID | None,
               note: str) -> Entry:
        """A platform admin's correction: positive credits, negative debits (never below available)."""
        amount = _positive(abs(amount_signed) if isinstance(amount_signed, int) else amount_signed, "adjustment")
        return self._move(EntryKind.ADJUSTMENT, amount, key=idempotency_key,
                          digest=request_hash("ADJUSTMENT", amount=amount_signed), balance_delta=amount_signed,
                          need_available=amount if amount_signed < 0 else 0, actor_user_id=actor_user_id,
                          note=note)

    def hold(self, amount: int, *, idempotency_key: str, reference: str) -> Hold:
        """Reserve ``amount`` of the available money; :class:`InsufficientFunds` when it is not there."""
        _positive(amount)
        entry = self._move(EntryKind.HOLD, amount, key=idempotency_key,
                           digest=request_hash("HOLD", amount=amount, reference=reference), held_delta=amount,
                           need_available=amount, hold_id=new_id(), reference=reference)
        if not entry.replayed:
            now = utcnow()
            self.conn.execute(HOLD.insert().values(
                id=entry.hold_id, vendor_id=self.vendor_id, amount_micros=amount, captured_micros=0,
                released_micros=0, refunded_micros=0, reference=reference, created_at=now, updated_at=now))
        return self.get_hold(entry.hold_id)

    def capture(self, hold_id: uuid.UUID, amount: int, *, idempotency_key: str,
                message_id: uuid.UUID | None = None) -> Entry:
        """Spend ``amount`` of a hold: balance and held both go down by it."""
        _positive(amount)
        return self._move(EntryKind.CAPTURE, amount, key=idempotency_key,
                          digest=request_hash("CAPTURE", amount=amount, hold_id=hold_id, message_id=message_id),
                          balance_delta=-amount, held_delta=-amount, hold_id=hold_id, hold_part="captured_micros",
                          message_id=message_id)

    def release(self, hold_id: uuid.UUID, amount: int | None = None, *, idempotency_key: str) -> Entry | None:
        """Give ``amount`` of a hold back to available (None: all it still reserves; nothing left → None)."""
        digest = request_hash("RELEASE", amount=RELEASE_ALL if amount is None else amount, hold_id=hold_id)
        if amount is None:
            if (earlier := self._earlier(idempotency_key, digest)) is not None:
                return earlier
            amount = self._outstanding(hold_id, lock=True)
            if amount == 0:
                return None
        _positive(amount)
        return self._move(EntryKind.RELEASE, amount, key=idempotency_key, digest=digest, held_delta=-amount,
                          hold_id=hold_id, hold_part="released_micros")

    def settle_hold(self, hold_id: uuid.UUID, *, idempotency_key: str) -> Entry | None:
        """Close a hold: release whatever it still reserves (a finished or cancelled campaign)."""
        return self.release(hold_id, None, idempotency_key=idempotency_key)

    def holds(self, reference: str) -> list[Hold]:
        rows = self.conn.execute(select(HOLD).where(HOLD.c.vendor_id == self.vendor_id, HOLD.c.reference == reference)
                                 .order_by(HOLD.c.created_at, HOLD.c.id))
        return [hold_from_row(row) for row in rows]

    def get_hold(self, hold_id: uuid.UUID) -> Hold:
        row = self.conn.execute(select(HOLD).where(HOLD.c.vendor_id == self.vendor_id, HOLD.c.id == hold_id)).first()
        if row is None:
            raise UnknownHold(hold_id)
        return hold_from_row(row)

    def _move(self, kind: EntryKind, amount: int, *, key: str, digest: str, balance_delta: int = 0,
              held_delta: int = 0, need_available: int = 0, hold_id: uuid.UUID | None = None,
              hold_part: str | None = None, message_id: uuid.UUID | None = None, reference: str | None = None,
              actor_user_id: uuid.UUID | None = None, note: str | None = None) -> Entry:
        if not key or len(key) > 255:
            raise ValueError("an idempotency key is 1 to 255 characters")
        if (earlier := self._earlier(key, digest)) is not None:
            return earlier
        if hold_part is not None:
            reference = self._change_hold(hold_id, hold_part, amount)  # entries of a hold carry its reference
        wallet = self._change_wallet(balance_delta, held_delta, need_available)
        values = dict(id=new_id(), vendor_id=self.vendor_id, kind=kind.value, amount_micros=amount,
                      balance_delta_micros=balance_delta, held_delta_micros=held_delta, hold_id=hold_id,
                      message_id=message_id, reference=reference, idempotency_key=key, request_hash=digest,
                      actor_user_id=actor_user_id, note=note, created_at=utcnow())
        seq = self.conn.execute(insert_for(self.conn)(ENTRY).values(**values)
                                .on_conflict_do_nothing(index_elements=["vendor_id", "idempotency_key"])
                                .returning(ENTRY.c.seq)).scalar()
        if seq is None:
            # A concurrent call with this key committed after step 1: undo step 2 on the rows we hold.
            self._change_wallet(-balance_delta, -held_delta, 0, bounded=False)
            if hold_part is not None:
                self._change_hold(hold_id, hold_part, -amount)
            return self._earlier(key, digest)
        alerts.watch(self.conn, wallet)
        values.pop("request_hash")
        return Entry(seq=seq, **values)

    def _earlier(self, key: str, digest: str) -> Entry | None:
        row = self.conn.execute(select(ENTRY).where(ENTRY.c.vendor_id == self.vendor_id,
                                                    ENTRY.c.idempotency_key == key)).first()
        if row is None:
            return None
        if row.request_hash != digest:
            raise IdempotencyConflict(key, row.id)
        return entry_from_row(row, replayed=True)

    def _change_hold(self, hold_id: uuid.UUID, part: str, amount: int) -> str:
        column = HOLD.c[part]
        statement = update(HOLD).where(HOLD.c.vendor_id == self.vendor_id, HOLD.c.id == hold_id)
        if amount > 0:
            statement = statement.where(HOLD.c.amount_micros - HOLD.c.captured_micros - HOLD.c.released_micros
                                        >= amount)
        changed = self.conn.execute(statement.values({column: column + amount, HOLD.c.updated_at: utcnow()})
                                    .returning(HOLD.c.reference)).first()
        if changed is None:
            raise HoldExceeded(hold_id, amount, self._outstanding(hold_id))
        return changed.reference

    def _outstanding(self, hold_id: uuid.UUID, *, lock: bool = False) -> int:
        statement = select(HOLD.c.amount_micros - HOLD.c.captured_micros - HOLD.c.released_micros).where(
            HOLD.c.vendor_id == self.vendor_id, HOLD.c.id == hold_id)
        outstanding = self.conn.execute(statement.with_for_update() if lock else statement).scalar()
        if outstanding is None:
            raise UnknownHold(hold_id)
        return outstanding

    def _change_wallet(self, balance_delta: int, held_delta: int, need_available: int, *, bounded: bool = True):
        """The conditional UPDATE: the funds (or headroom) check and the change in one statement on the locked row."""
        statement = update(WALLET).where(WALLET.c.vendor_id == self.vendor_id)
        if need_available:
            statement = statement.where(WALLET.c.balance_micros - WALLET.c.held_micros >= need_available)
        if bounded and balance_delta > 0:  # written as a subtraction: the check itself never adds past BIGINT
            statement = statement.where(WALLET.c.balance_micros <= MAX_BALANCE_MICROS - balance_delta)
        statement = statement.values(balance_micros=WALLET.c.balance_micros + balance_delta,
                                     held_micros=WALLET.c.held_micros + held_delta,
                                     updated_at=utcnow()).returning(*WALLET.c)
        row = self.conn.execute(statement).first()
        if row is None:
            state = self.wallet()  # opens a missing wallet, then one more try
            row = self.conn.execute(statement).first()
            if row is None and balance_delta > 0:
                raise BalanceLimitExceeded(amount=balance_delta, balance=state.balance_micros, currency=state.currency)
            if row is None:
                raise InsufficientFunds(needed=need_available, available=state.available_micros,
                                        currency=state.currency)
        return row

    def _wallet_row(self):
        return self.conn.execute(select(WALLET).where(WALLET.c.vendor_id == self.vendor_id)).first()
