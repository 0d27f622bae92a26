"""The transactional outbox: record "this happened" in the same transaction as the change.

``request.outbox.add(topic, payload, vendor_id=...)`` (or ``ctx.outbox`` in a task, or
``Outbox(session)`` anywhere) inserts an :class:`OutboxEvent` into the caller's session.
If the transaction rolls back there is no event; if it commits there is exactly one row,
which the relay (:mod:`kloyst.outbox.relay`) publishes to the queue at least once. The
queue task :func:`deliver_outbox_event` hands each event to the handler registered for its
topic through the ``kloyst_outbox_handlers`` hook.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy.orm import Session

from kloyst.outbox.delivery import Running
from kloyst.outbox.models import OutboxEvent, OutboxStatus

__all__ = ["Outbox", "OutboxEvent", "OutboxStatus"]


class Outbox:
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, topic: str, payload: dict[str, Any], *, vendor_id: uuid.UUID | None = None,
            available_at: dt.datetime | None = None) -> OutboxEvent:
        event = OutboxEvent(topic=topic, payload=payload, vendor_id=vendor_id)
        if available_at is not None:
            event.available_at = available_at
        self._session.add(event)
        return event


def _request_outbox(request) -> Outbox:
    return Outbox(request.db)


def includeme(config) -> None:
    config.registry["kloyst.outbox.running"] = Running()
    config.add_request_method(_request_outbox, "outbox", reify=True)
