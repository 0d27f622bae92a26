"""The low-balance alert: one ``WalletLowBalance`` domain event per downward crossing of the threshold.

The wallet row carries ``low_balance_flag``. When a movement leaves *available* (balance −
held) below a non-zero threshold and the flag is down, the flag goes up and the event is
recorded; while it is up, further debits stay silent; once available is back at or above the
threshold the flag comes down, re-arming the alert. The flag is flipped by a conditional
UPDATE on the row the movement has just locked, so two debits racing across the threshold
record one event, not two. The event is written to the outbox on the caller's connection, so
it exists exactly when the movement commits (:mod:`kloyst.events` delivers it after commit, to the
enabled plugins that subscribe to it; with no subscriber installed nothing is written).
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.engine import Connection

from kloyst.api import events, Outbox
from kloyst_plugins.wallet.records import WALLET

LOW_BALANCE_EVENT = events.WalletLowBalance.name


def is_low(available_micros: int, threshold_micros: int) -> bool:
    return threshold_micros > 0 and available_micros < threshold_micros


def watch(conn: Connection, row) -> None:
    """After a movement (``row``: the wallet as it is now, locked): raise or re-arm the alert if it changed side."""
    available = row.balance_micros - row.held_micros
    low = is_low(available, row.low_balance_threshold_micros)
    if low == bool(row.low_balance_flag):
        return
    flipped = conn.execute(update(WALLET).where(WALLET.c.id == row.id, WALLET.c.low_balance_flag == (not low))
                           .values(low_balance_flag=low).returning(WALLET.c.id)).first()
    if flipped is not None and low:
        record_low_balance(conn, row, available)


def record_low_balance(conn: Connection, row, available_micros: int) -> None:
    events.record_event(Outbox(conn), row.vendor_id, events.WalletLowBalance(
        wallet_id=row.id, balance_micros=available_micros, threshold_micros=row.low_balance_threshold_micros,
        currency=row.currency))
