"""Builders and readers shared by the wallet tests."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from kloyst.outbox.models import OutboxEvent
from kloyst_plugins.messages.settlement import SettledMessage
from kloyst_plugins.wallet.records import ENTRY, HOLD

MICROS = 1_000_000


def entries(conn, vendor_id: uuid.UUID) -> list:
    return conn.execute(select(ENTRY).where(ENTRY.c.vendor_id == vendor_id).order_by(ENTRY.c.seq)).all()


def hold_row(conn, hold_id: uuid.UUID):
    return conn.execute(select(HOLD).where(HOLD.c.id == hold_id)).one()


def hold_count(conn, vendor_id: uuid.UUID) -> int:
    return conn.execute(select(func.count()).select_from(HOLD).where(HOLD.c.vendor_id == vendor_id)).scalar()


def settled(vendor_id: uuid.UUID, hold_id: uuid.UUID | None, price: int, outcome: str,
            message_id: uuid.UUID | None = None) -> SettledMessage:
    return SettledMessage(message_id=message_id or uuid.uuid4(), vendor_id=vendor_id, campaign_id=None,
                          hold_id=hold_id, price_micros=price, outcome=outcome)


def low_balance_events(conn, vendor_id: uuid.UUID) -> list[dict]:
    rows = conn.execute(select(OutboxEvent.__table__.c.payload).where(
        OutboxEvent.__table__.c.vendor_id == vendor_id, OutboxEvent.__table__.c.topic == "vendor.event")).scalars()
    return [row["payload"] for row in rows if row["name"] == "WalletLowBalance"]
