"""A plugin that exists only in Kloyst's own test run: tasks whose effects tests can count.

``probe.record`` writes a ``probe.done`` row (an outbox row marked delivered, so nothing
else picks it up) in the task's own transaction: counting those rows per ``n`` tells how
many times a task *took effect*. ``probe.sleep`` does the same after sleeping, so a test
can kill its worker mid-task (with a ``marker``, only its first run sleeps, so a test can
time the recovery itself). ``probe.limited`` takes a rate-limit slot first. The
``probe.topic`` outbox topic records the same way, through a plugin-owned handler.
``probe.fail`` always raises. Webhook changes of the made-up field ``probe_field`` are recorded
the same way (``kloyst_webhook_changes``), as a plugin handling a field of its own would.

It subscribes to every domain event type (``kloyst_event_types`` → ``Event``), so in Kloyst's own
test run every event an emitter records is written to the outbox; a vendor that enabled
``probe`` gets each delivered as a ``probe.event`` row (``{"event_id", "name", "payload",
"data"}``, marked delivered): :func:`delivered_events` reads them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from kloyst.outbox import Outbox, OutboxStatus
from kloyst.plugins import PluginMeta, hookimpl
from kloyst.queue import task

plugin_meta = PluginMeta(description="test-only probes")


def _record(ctx, n, vendor_id=None, **extra) -> None:
    event = Outbox(ctx.db).add("probe.done", {"n": n, **extra}, vendor_id=vendor_id)
    event.status = OutboxStatus.DELIVERED


@task("probe.record")
def record(ctx, *, n, vendor_id=None, **extra):
    _record(ctx, n, vendor_id, **extra)


@task("probe.sleep")
def sleep_then_record(ctx, *, n, seconds, marker=None, vendor_id=None):
    # The marker tells a test the task is running and in which process, so it can kill that
    # worker mid-task; a run that finds the marker already there is a rerun and records at once.
    rerun = marker is not None and Path(marker).exists()
    if marker:
        Path(marker).write_text(str(os.getpid()))
    if not rerun:
        time.sleep(seconds)
    _record(ctx, n, vendor_id)


@task("probe.limited")
def limited(ctx, *, n, limit, per_seconds=1.0, vendor_id=None):
    ctx.rate_limit("probe.limited", limit, per_seconds)
    _record(ctx, n, vendor_id)


@task("probe.fail")
def fail(ctx, *, n, vendor_id=None):
    raise RuntimeError(f"probe failure {n}")


def _topic_handler(ctx, event) -> None:
    _record(ctx, event.payload["n"], event.vendor_id)


@hookimpl
def kloyst_outbox_handlers():
    return {"probe.topic": _topic_handler}


@hookimpl
def kloyst_webhook_changes(changes, ctx):
    for change in changes:
        if change.field == "probe_field":
            _record(ctx, change.value.get("n"), ctx.vendor_id, delivery_id=change.delivery_id,
                    meta_waba_id=change.meta_waba_id)


@hookimpl
def kloyst_tasks():
    return [record, sleep_then_record, limited, fail]


@hookimpl
def kloyst_event_types():
    from kloyst.events import Event

    return [Event]


@hookimpl
def kloyst_vendor_event(event, ctx):
    row = Outbox(ctx.db).add("probe.event", {"event_id": event.id, "name": event.name, "payload": event.payload,
                                             "data": type(event.data).__name__ if event.data else None},
                             vendor_id=event.vendor_id)
    row.status = OutboxStatus.DELIVERED


def delivered_events(db, vendor_id) -> list[dict]:
    """The domain events delivered to ``probe`` for ``vendor_id``, in delivery order."""
    from sqlalchemy import select

    from kloyst.outbox import OutboxEvent

    return [row.payload for row in db.scalars(select(OutboxEvent).where(
        OutboxEvent.topic == "probe.event", OutboxEvent.vendor_id == vendor_id).order_by(OutboxEvent.id))]


def enqueue_probes(registry, name: str, *, count: int = 1, vendor_id=None, **kwargs) -> list[int]:
    """Enqueue ``count`` probe tasks (``n`` = 0…count-1) in one committed transaction, due now.

    The after-commit fast path is skipped (a tiny ``delay``) so that tests decide when the
    relay runs; the events are then made due at once.
    """
    import transaction
    from sqlalchemy import update

    from kloyst.db import session_scope, tenancy, utcnow
    from kloyst.outbox import OutboxEvent

    queue = registry["kloyst.queue"]
    factory = registry["kloyst.session_factory"]
    manager = transaction.TransactionManager(explicit=True)
    with session_scope(factory, vendor_id=tenancy.ALL_VENDORS, manager=manager) as session:
        events = [queue.enqueue(session, manager, name, delay=1, vendor_id=vendor_id, n=i, **kwargs)
                  for i in range(count)]
        session.flush()
        ids = [event.id for event in events]
    with session_scope(factory, vendor_id=tenancy.ALL_VENDORS) as session:
        session.execute(update(OutboxEvent).where(OutboxEvent.id.in_(ids)).values(available_at=utcnow()))
    return ids

