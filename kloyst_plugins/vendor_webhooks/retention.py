"""What of the vendor_webhooks plugin's data expires: the feed's events, with their deliveries (docs/retention.md).

An event goes with every delivery of it (they cascade), but never while one is still pending or
in flight: a delivery being retried keeps its event until it is delivered or dead. A feed cursor
older than the oldest event kept answers 410 ``cursor_expired`` (views.event_feed) instead of
silently skipping what was pruned.
"""

from __future__ import annotations

from sqlalchemy import exists, select

from kloyst.api import BySequence, RetentionPolicy, Setting
from kloyst_plugins.vendor_webhooks.models import DeliveryStatus, VendorEvent, WebhookDelivery

EVENTS = Setting(
    "vendor_webhooks.retention_days", "VENDOR_WEBHOOKS_RETENTION_DAYS", 30, int,
    help="Days the event feed (GET /v1/events) and the delivery log keep an event: a poller or an endpoint that "
         "was down for up to a month still gets everything. 0 keeps them forever.")

_events, _deliveries = VendorEvent.__table__, WebhookDelivery.__table__
_in_flight = exists(select(1).where(_deliveries.c.event_row_id == _events.c.id,
                                    _deliveries.c.status.in_([DeliveryStatus.PENDING.value,
                                                              DeliveryStatus.DELIVERING.value])))

POLICY = RetentionPolicy("vendor_webhooks.events", EVENTS, removes="feed events and their finished deliveries",
                         rows=BySequence(_events, age=_events.c.created_at, where=[~_in_flight]))
