"""Each domain event a vendor's plugin hears: one feed row, and one delivery per endpoint that wants it.

Runs as the plugin's ``kloyst_vendor_event`` in the worker's transaction of the outbox event,
so the feed row and its deliveries commit together with the event being marked delivered.
At least once: a redelivered event finds its feed row (looked up by ``(vendor_id, event_id)``
under the counter's lock) and adds nothing. The feed's ``seq`` is taken from the vendor's
counter row, whose lock is held until commit, so a vendor's events are numbered in commit
order, without gaps — what lets a poller trust ``after=<seq>`` (:mod:`.models`). The price is
that one vendor's events are recorded one transaction at a time; different vendors never wait
for each other.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from kloyst.api import events, new_id, tenancy, utcnow
from kloyst_plugins.vendor_webhooks.models import VendorEvent, VendorEventCounter, WebhookDelivery, WebhookEndpoint

ALL_TYPES = "*"


def next_seq(db, vendor_id: uuid.UUID) -> int:
    """Take the vendor's next feed number, locking its counter row until this transaction ends."""
    table = VendorEventCounter.__table__
    dialect = postgresql if db.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).values(id=new_id(), vendor_id=vendor_id, last_seq=1)
    statement = statement.on_conflict_do_update(index_elements=[table.c.vendor_id],
                                                set_={"last_seq": table.c.last_seq + 1})
    # Core (an upsert has no ORM form) naming the vendor itself: marked as scoped by its caller.
    return int(db.execute(tenancy.caller_scoped(statement.returning(table.c.last_seq))).scalar_one())


def wants(endpoint: WebhookEndpoint, name: str) -> bool:
    return ALL_TYPES in endpoint.event_types or name in endpoint.event_types


def record(event: events.DomainEvent, db) -> VendorEvent | None:
    """Add ``event`` to its vendor's feed and queue its deliveries; None when it was recorded before."""
    vendor_id = event.vendor_id
    # The look-up comes after the counter's lock: a copy of this event recorded by a transaction that held the lock
    # before us has committed by now, and (READ COMMITTED: a fresh snapshot per statement) is seen here. The caller
    # runs this in a savepoint and rolls it back on None, so the number taken is given back.
    seq = next_seq(db, vendor_id)
    if db.scalar(select(VendorEvent.id).where(VendorEvent.vendor_id == vendor_id,
                                              VendorEvent.event_id == event.id)) is not None:
        return None
    row = VendorEvent(vendor_id=vendor_id, seq=seq, event_id=event.id, type=event.name,
                      occurred_at=event.occurred_at or utcnow(), payload=event.payload)
    db.add(row)
    db.flush()
    endpoints = db.scalars(select(WebhookEndpoint).where(WebhookEndpoint.vendor_id == vendor_id,
                                                         WebhookEndpoint.enabled.is_(True))).all()
    now = utcnow()
    for endpoint in endpoints:
        if wants(endpoint, event.name):
            db.add(WebhookDelivery(vendor_id=vendor_id, endpoint_id=endpoint.id, event_row_id=row.id,
                                   window_started_at=now, next_attempt_at=now))
    return row
