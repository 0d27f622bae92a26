"""Delivery: the one huey task. It runs an outbox event's handler and records that it did, atomically.

The task carries only ``(event_id, vendor_id, topic)``. Its first statement marks the
event ``delivered`` — in the *same transaction* as the handler's own writes — and only if
it was not delivered already. So:

* a duplicate (the relay published twice after a crash, or the reconciler redelivered)
  finds the row delivered, or waits on its row lock and then finds it delivered, and does
  nothing: handlers whose effects are database writes run exactly once;
* a handler that raises rolls its writes *and* the mark back; a second short transaction
  returns the event to pending with exponential backoff and jitter (or ``dead`` after
  ``max_attempts``), recording the error;
* a worker killed mid-handler (SIGKILL, OOM) leaves the event leased in a published batch,
  and unlocked; the reconciler returns it to pending and the relay publishes it again.

A handler that must wait (a rate limit) raises :class:`Reschedule`: the event goes back to
pending for that long without counting an attempt, and no worker thread sleeps.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import uuid

import transaction
from sqlalchemy import Boolean, DateTime, bindparam, text

from kloyst.db import session_scope, tenancy, utcnow

log = logging.getLogger(__name__)

DELIVER_TASK = "kloyst.deliver_outbox_event"


class Reschedule(Exception):
    """Raise from a handler or task to run it again in ``delay_seconds`` (not counted as a failure)."""

    def __init__(self, delay_seconds: float, reason: str = "") -> None:
        super().__init__(reason or f"rescheduled in {delay_seconds:.3f}s")
        self.delay_seconds = max(0.0, float(delay_seconds))
        self.reason = reason


def backoff_seconds(attempts: int, base: float = 2.0, cap: float = 600.0) -> float:
    """Exponential backoff with full jitter: a random delay in [d/2, d], d = min(cap, base·2^(attempts-1))."""
    ceiling = min(cap, base * (2 ** max(0, attempts - 1)))
    return ceiling / 2 + random.random() * ceiling / 2


_MARK_DELIVERED = text(
    "UPDATE outbox_event SET status = 'delivered', delivered_at = :now, leased_until = NULL, "
    "published_at = COALESCE((SELECT b.published_at FROM outbox_batch b WHERE b.id = outbox_event.batch_id), :now) "
    "WHERE id = :id AND status IN ('pending', 'leased')"
).bindparams(bindparam("now", type_=DateTime(timezone=True)))

_REQUEUE = text("""
UPDATE outbox_event
   SET status = CASE WHEN :count AND attempts >= :max THEN 'dead' ELSE 'pending' END,
       attempts = CASE WHEN :count THEN attempts ELSE attempts - 1 END,
       available_at = :available_at, leased_until = NULL, batch_id = NULL,
       last_error = COALESCE(:error, last_error)
 WHERE id = :id AND status NOT IN ('delivered', 'dead')
""").bindparams(bindparam("available_at", type_=DateTime(timezone=True)), bindparam("count", type_=Boolean))


def _mark_delivered(session, event_id: int) -> bool:
    return session.execute(_MARK_DELIVERED, {"id": event_id, "now": utcnow()}).rowcount == 1


def _requeue(session, event_id: int, *, delay: float, error: str | None, count_attempt: bool, max_attempts: int):
    session.execute(_REQUEUE, {"id": event_id, "count": count_attempt, "max": max_attempts, "error": error,
                               "available_at": utcnow() + dt.timedelta(seconds=delay)})


def deliver(registry, event_id: int, vendor_id, topic: str) -> str:
    """Run the handler for one event; return what happened (``delivered``, ``duplicate``, ``failed``, …)."""
    from kloyst.outbox.models import OutboxEvent
    from kloyst.queue import TaskContext

    if isinstance(vendor_id, str):
        vendor_id = uuid.UUID(vendor_id)
    factory = registry["kloyst.session_factory"]
    max_attempts = registry.settings["kloyst.outbox.max_attempts"]
    handler = registry["kloyst.outbox_handlers"].get(topic)
    scope = vendor_id if vendor_id is not None else tenancy.ALL_VENDORS
    manager = transaction.TransactionManager(explicit=True)
    try:
        with session_scope(factory, vendor_id=scope, manager=manager) as db:
            with tenancy.unscoped(db):
                if not _mark_delivered(db, event_id):
                    return "duplicate"
                event = db.get(OutboxEvent, event_id)
            if handler is None:
                raise LookupError(f"no installed plugin handles outbox topic {topic!r}")
            handler(TaskContext(registry, db, manager, vendor_id), event)
        return "delivered"
    except Reschedule as exc:
        with session_scope(factory, vendor_id=tenancy.ALL_VENDORS) as db:
            _requeue(db, event_id, delay=exc.delay_seconds, error=None, count_attempt=False,
                     max_attempts=max_attempts)
        return "rescheduled"
    except Exception as exc:
        log.exception("outbox event %s (%s) failed", event_id, topic)
        with session_scope(factory, vendor_id=tenancy.ALL_VENDORS) as db:
            attempts = db.execute(text("SELECT attempts FROM outbox_event WHERE id = :id"),
                                  {"id": event_id}).scalar() or 1
            _requeue(db, event_id, delay=backoff_seconds(attempts), error=f"{type(exc).__name__}: {exc}"[:2000],
                     count_attempt=True, max_attempts=max_attempts)
        return "failed"
