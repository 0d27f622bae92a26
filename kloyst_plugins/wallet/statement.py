"""The wallet statement as CSV: every entry of a period with the balance after it, streamed.

* **Running balance by the database.** Each batch of entries (in ``seq`` order, keyset on
  ``seq``) gets ``opening + SUM(balance_delta) OVER (ORDER BY seq)``: the window runs over the
  batch only (a subquery takes the batch first, so the window never rescans the period), and the
  next batch starts from the last balance. The opening balance is the sum of everything before
  the period; the last row's balance is therefore the ledger's balance at the end of the period.
* **Streamed in batches**, each in its own short transaction scoped to the vendor (as the
  contacts export does): a year of per-message captures never sits in memory, and no
  transaction stays open for the length of a download.
* **Formula-injection safe**: notes and references are typed by people and other plugins, so
  they go through ``kloyst.http.spreadsheet.csv_safe`` (a leading ``'`` before ``=``, ``+``,
  ``-``, ``@``, TAB, CR). Amounts, ids and timestamps are written by us in fixed formats, so they
  stay bare: a negative amount must remain a number a spreadsheet can add up.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

from sqlalchemy import func, literal, select

from kloyst.api import format_micros, session_scope
from kloyst_plugins.wallet.records import ENTRY

# Columns people or other plugins fill: the ones a formula could hide in.
FREE_TEXT = frozenset({"reference", "note"})
COLUMNS = ("created_at", "entry_id", "kind", "amount", "balance_change", "held_change", "balance_after", "currency",
           "reference", "message_id", "hold_id", "note")
BATCH = 2000


def _range(vendor_id: uuid.UUID, start: dt.datetime | None, end: dt.datetime | None) -> list:
    conditions = [ENTRY.c.vendor_id == vendor_id]
    if start is not None:
        conditions.append(ENTRY.c.created_at >= start)
    if end is not None:
        conditions.append(ENTRY.c.created_at < end)
    return conditions


def opening_balance(conn, vendor_id: uuid.UUID, start: dt.datetime | None) -> int:
    if start is None:
        return 0
    return conn.execute(select(func.coalesce(func.sum(ENTRY.c.balance_delta_micros), 0))
                        .where(ENTRY.c.vendor_id == vendor_id, ENTRY.c.created_at < start)).scalar()


def batch_with_balances(conn, vendor_id: uuid.UUID, start, end, *, after_seq: int, opening: int, limit: int):
    """Up to ``limit`` entries after ``after_seq`` with ``balance_after`` from the window function."""
    batch = (select(ENTRY).where(*_range(vendor_id, start, end), ENTRY.c.seq > after_seq)
             .order_by(ENTRY.c.seq).limit(limit).subquery())
    running = literal(opening) + func.sum(batch.c.balance_delta_micros).over(order_by=batch.c.seq)
    return conn.execute(select(batch, running.label("balance_after")).order_by(batch.c.seq)).all()


def iter_rows(session_factory, *, vendor_id: uuid.UUID, currency: str, start: dt.datetime | None,
              end: dt.datetime | None, batch: int = BATCH) -> Iterator[list[str]]:
    """The statement's rows: an opening-balance row, then every entry of the period, oldest first."""
    with session_scope(session_factory, vendor_id=vendor_id) as db:
        balance = opening_balance(db.connection(), vendor_id, start)
    yield [start.isoformat() if start else "", "", "OPENING_BALANCE", "", "", "", format_micros(balance), currency,
           "", "", "", ""]
    after = 0
    while True:
        with session_scope(session_factory, vendor_id=vendor_id) as db:
            rows = batch_with_balances(db.connection(), vendor_id, start, end, after_seq=after, opening=balance,
                                       limit=batch)
        for row in rows:
            yield [row.created_at.isoformat(), str(row.id), row.kind, format_micros(row.amount_micros),
                   format_micros(row.balance_delta_micros), format_micros(row.held_delta_micros),
                   format_micros(row.balance_after), currency, row.reference or "",
                   str(row.message_id) if row.message_id else "", str(row.hold_id) if row.hold_id else "",
                   row.note or ""]
        if len(rows) < batch:
            return
        after, balance = rows[-1].seq, rows[-1].balance_after
