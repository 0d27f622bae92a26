"""Delivery: the one huey task. It runs an outbox event's handler and records that it did, atomically.

The message carries ``(event_id, vendor_id, topic, batch_id)``. The event is marked
``delivered`` in the *same transaction* as the handler's own writes, and only if it is
still leased **in that batch**. So:

* a duplicate (published twice after a relay crash, or republished by the reconciler while
  the first copy was still queued) finds the event delivered, or in another batch, and does
  nothing; a copy that arrives while another runs in the same process is a duplicate at
  once (:class:`Running`). Handlers whose effects are database writes take effect exactly
  once;
* a handler that raises rolls back its writes *and* the mark; a second short transaction
  returns the event to pending with exponential backoff and jitter, counting one
  ``failure``; after ``max_attempts`` failures the event is ``dead`` (the dead-letter
  state) with its last error. Nothing else — a queue outage, a lost message, a relay crash,
  a reschedule — counts as a failure, so an outage can never dead-letter healthy work;
* the reconciler (:mod:`kloyst.outbox.reconcile`) must tell a running event from a lost
  one. Every process knows the events it is running (:class:`Running`). On PostgreSQL the
  mark is also the first statement of the transaction, so a running event's row is locked
  for every process (the reconciler takes rows ``FOR UPDATE SKIP LOCKED``); the mark must
  stay first there. A worker killed mid-handler (SIGKILL, OOM) leaves the event leased in
  a published batch, unlocked, running nowhere and no longer in the queue; the reconciler
  returns it to pending within seconds and the relay publishes it again;
* on SQLite (the embedded default) the mark is the *last* statement instead: a first
  statement that writes would take the database's one write lock for the whole handler
  (:mod:`kloyst.db.sqlite`), so a task that renders a PDF would hold up every request, and
  a task that writes in a short transaction of its own would wait for itself. Whether the
  event is still leased in this batch is read first, without a lock; the conditional mark
  at the end decides, and if another process's reconciler took the event back meanwhile
  the mark changes nothing and the handler's writes are rolled back (a duplicate, as on
  PostgreSQL);
* the row, not the message, decides the tenant scope and the handler; a topic whose plugin
  the event's vendor has not enabled is marked delivered without running (the plugin is
  off for that vendor, as a route of it would be).

A handler that must wait (a rate limit) raises :class:`Reschedule`: the event goes back to
pending for that long, and no worker thread sleeps.
"""

from __future__ import annotations

import datetime as dt
import logging
import random

import transaction
from sqlalchemy import Boolean, DateTime, bindparam, text

from kloyst.db import session_scope, tenancy, utcnow
from kloyst.outbox.context import Reschedule, TaskContext
from kloyst.outbox.models import OutboxEvent
from kloyst.outbox.running import Running
from kloyst.plugins.enablement import enabled_plugins

__all__ = ["DELIVER_TASK", "Reschedule", "Running", "backoff_seconds", "deliver"]  # Reschedule, Running: their old home

log = logging.getLogger(__name__)

DELIVER_TASK = "kloyst.deliver_outbox_event"


def backoff_seconds(failures: int, base: float = 2.0, cap: float = 600.0) -> float:
    """Exponential backoff with jitter: a random delay in [d/2, d], d = min(cap, base·2^(failures-1))."""
    ceiling = min(cap, base * (2 ** max(0, failures - 1)))
    return ceiling / 2 + random.random() * ceiling / 2


_MARK_DELIVERED = text(
    "UPDATE outbox_event SET status = 'delivered', delivered_at = :now, leased_until = NULL, "
    "published_at = COALESCE((SELECT b.published_at FROM outbox_batch b WHERE b.id = outbox_event.batch_id), :now) "
    "WHERE id = :id AND status = 'leased' AND batch_id = :batch"
).bindparams(bindparam("now", type_=DateTime(timezone=True)))

_REQUEUE = text("""
UPDATE outbox_event
   SET status = CASE WHEN :failed AND failures + 1 >= :max THEN 'dead' ELSE 'pending' END,
       failures = CASE WHEN :failed THEN failures + 1 ELSE failures END,
       available_at = :available_at, leased_until = NULL, batch_id = NULL,
       last_error = COALESCE(:error, last_error)
 WHERE id = :id AND status = 'leased' AND batch_id = :batch
""").bindparams(bindparam("available_at", type_=DateTime(timezone=True)), bindparam("failed", type_=Boolean))


def _mark_delivered(session, event_id: int, batch_id: int) -> bool:
    return session.execute(_MARK_DELIVERED, {"id": event_id, "batch": batch_id, "now": utcnow()}).rowcount == 1


def _requeue(session, event_id: int, batch_id: int, *, delay: float, error: str | None, failed: bool,
             max_attempts: int) -> None:
    session.execute(_REQUEUE, {"id": event_id, "batch": batch_id, "failed": failed, "max": max_attempts,
                               "error": error, "available_at": utcnow() + dt.timedelta(seconds=delay)})


class _TakenBack(Exception):
    """SQLite: the event left this batch while its handler ran; the handler's writes must not count."""


_LEASED_IN_BATCH = text("SELECT 1 FROM outbox_event WHERE id = :id AND status = 'leased' AND batch_id = :batch")


def _leased_in_batch(session, event_id: int, batch_id: int) -> bool:
    return session.execute(_LEASED_IN_BATCH, {"id": event_id, "batch": batch_id}).first() is not None


def deliver(registry, event_id: int, vendor_id, topic: str, batch_id: int | None = None) -> str:
    """Run the handler for one event; return what happened (``delivered``, ``duplicate``, ``failed``, …)."""
    running = registry["kloyst.outbox.running"]
    if batch_id is None or not running.start(event_id):
        return "duplicate"
    try:
        return _deliver(registry, event_id, vendor_id, topic, batch_id)
    finally:
        running.finish(event_id)


def _deliver(registry, event_id: int, vendor_id, topic: str, batch_id: int) -> str:
    factory = registry["kloyst.session_factory"]
    max_attempts = registry.settings["kloyst.outbox.max_attempts"]
    mark_first = registry["kloyst.engine"].dialect.name != "sqlite"  # see the module docstring
    pm = registry["kloyst.plugin_manager"]
    manager = transaction.TransactionManager(explicit=True)
    try:
        with session_scope(factory, vendor_id=tenancy.ALL_VENDORS, manager=manager) as db:
            if mark_first:
                if not _mark_delivered(db, event_id, batch_id):
                    return "duplicate"
                event = db.get_one(OutboxEvent, event_id)  # marked just now: it exists
                plugins = enabled_plugins(db, pm, event.vendor_id)
            else:
                with session_scope(factory, vendor_id=tenancy.ALL_VENDORS, read_only=True) as look:
                    if not _leased_in_batch(look, event_id, batch_id):
                        return "duplicate"
                    event = look.get_one(OutboxEvent, event_id)  # leased in this batch: it exists
                    plugins = enabled_plugins(look, pm, event.vendor_id)
            if (str(event.vendor_id) if event.vendor_id else None) != vendor_id or event.topic != topic:
                log.warning("outbox event %s: the queue message disagrees with the row; the row wins", event_id)
            # From here on the handler sees only its vendor's rows.
            tenancy.set_scope(db, event.vendor_id if event.vendor_id is not None else tenancy.ALL_VENDORS)
            handler = registry["kloyst.outbox_handlers"].get(event.topic)
            if handler is None:
                raise LookupError(f"no installed plugin handles outbox topic {event.topic!r}")
            owner = registry["kloyst.outbox_handler_owners"].get(event.topic)
            if owner is not None and event.vendor_id is not None and owner not in plugins:
                log.info("outbox event %s skipped: plugin %s is not enabled for vendor %s", event_id, owner,
                         event.vendor_id)
                if not mark_first and not _mark_delivered(db, event_id, batch_id):
                    raise _TakenBack()
                return "skipped"
            handler(TaskContext(registry, db, manager, event.vendor_id, plugins=plugins), event)
            if not mark_first and not _mark_delivered(db, event_id, batch_id):
                raise _TakenBack()
        return "delivered"
    except _TakenBack:
        log.info("outbox event %s left batch %s while its handler ran; its writes are rolled back", event_id, batch_id)
        return "duplicate"
    except Reschedule as exc:
        with session_scope(factory, vendor_id=tenancy.ALL_VENDORS) as db:
            _requeue(db, event_id, batch_id, delay=exc.delay_seconds, error=None, failed=False,
                     max_attempts=max_attempts)
        return "rescheduled"
    except Exception as exc:
        log.exception("outbox event %s (%s) failed", event_id, topic)
        with session_scope(factory, vendor_id=tenancy.ALL_VENDORS) as db:
            failures = db.execute(text("SELECT failures FROM outbox_event WHERE id = :id"),
                                  {"id": event_id}).scalar() or 0
            _requeue(db, event_id, batch_id, delay=backoff_seconds(failures + 1),
                     error=f"{type(exc).__name__}: {exc}"[:2000], failed=True, max_attempts=max_attempts)
        return "failed"
