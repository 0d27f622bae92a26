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
import weakref
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from kloyst.db import utcnow
from kloyst.outbox.running import Running
from kloyst.outbox.models import OutboxEvent, OutboxStatus

__all__ = ["Outbox", "OutboxEvent", "OutboxStatus"]


# The plugin manager of the application that uses each engine (set when the application is configured), so
# an ``Outbox(session)`` made anywhere can tell which plugins are installed (kloyst.events skips events
# nobody subscribes to).
_PLUGIN_MANAGERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

# Rows per INSERT statement of add_many: 8 columns each stays far below every driver's parameter limit.
ADD_MANY_CHUNK = 1000


class Outbox:
    def __init__(self, session: Session | Connection, *, plugin_manager=None) -> None:
        self._session = session
        self._plugin_manager = plugin_manager

    @property
    def connection(self) -> Session | Connection:
        """The session or connection whose transaction this outbox writes in (to read in that transaction too)."""
        return self._session

    @property
    def plugin_manager(self):
        """The installed plugins of the application writing here; None when unknown (a bare engine)."""
        if self._plugin_manager is None:
            target = self._session
            bind = target if isinstance(target, Connection) else target.get_bind()
            self._plugin_manager = _PLUGIN_MANAGERS.get(getattr(bind, "engine", bind))
        return self._plugin_manager

    def add(self, topic: str, payload: dict[str, Any], *, vendor_id: uuid.UUID | None = None,
            available_at: dt.datetime | None = None) -> OutboxEvent:
        if isinstance(self._session, Connection):
            raise TypeError("Outbox.add needs an ORM Session; on a Connection use add_many")
        event = OutboxEvent(topic=topic, payload=payload, vendor_id=vendor_id)
        if available_at is not None:
            event.available_at = available_at
        self._session.add(event)
        return event

    def add_many(self, topic: str, payloads: Sequence[dict[str, Any]], *, vendor_id: uuid.UUID | None = None) -> int:
        """Insert one pending event per payload with one multi-row INSERT (per 1000); return how many.

        Works on an ORM ``Session`` and on a Core ``Connection`` alike (the row commits with that
        transaction); unlike :meth:`add` it returns no ``OutboxEvent`` objects.
        """
        now = utcnow()
        rows = [{"topic": topic, "payload": payload, "vendor_id": vendor_id, "status": OutboxStatus.PENDING,
                 "attempts": 0, "failures": 0, "available_at": now, "created_at": now} for payload in payloads]
        table = OutboxEvent.__table__
        for start in range(0, len(rows), ADD_MANY_CHUNK):
            self._session.execute(insert(table).values(rows[start:start + ADD_MANY_CHUNK]))
        return len(rows)


def _request_outbox(request) -> Outbox:
    return Outbox(request.db)


def includeme(config) -> None:
    config.registry["kloyst.outbox.running"] = Running()
    _PLUGIN_MANAGERS[config.registry["kloyst.engine"]] = config.registry["kloyst.plugin_manager"]
    config.add_request_method(_request_outbox, "outbox", reify=True)
