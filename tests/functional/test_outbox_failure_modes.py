"""What the outbox does when things go wrong around it: outages, backlogs, stale copies, wrong scopes."""

import collections
import threading
import time
import uuid

import pytest
from probe_plugin import enqueue_probes as enqueue
import transaction
from sqlalchemy import select

from kloyst.db import session_scope, tenancy
from kloyst.db.tenancy import TenancyError
from kloyst.outbox import Outbox, OutboxEvent, OutboxStatus
from kloyst.outbox.relay import Relay, RelaySettings




def events(db, ids):
    db.expire_all()
    return {e.id: e for e in db.scalars(select(OutboxEvent).where(OutboxEvent.id.in_(ids)))}


def run_relay_for(registry, seconds, **settings):
    relay = Relay(registry, RelaySettings(**settings))
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,))
    thread.start()
    time.sleep(seconds)
    stop.set()
    thread.join(10)
    return relay


def test_a_queue_outage_never_dead_letters_events_and_the_relay_backs_off(registry, committed_db, monkeypatch):
    ids = enqueue(registry, "probe.record", count=20)
    queue = registry["kloyst.queue"]

    attempts = []

    def refuse(rows, batch):
        attempts.append(len(rows))
        raise ConnectionError("redis is down")

    monkeypatch.setattr(queue, "publish_deliveries", refuse)
    run_relay_for(registry, 2.5, reconcile_interval_seconds=1000)
    rows = events(committed_db, ids)
    assert {e.status for e in rows.values()} == {OutboxStatus.PENDING}
    assert {e.failures for e in rows.values()} == {0}
    assert all("redis is down" in e.last_error for e in rows.values())
    # Backing off 0.5 s, 1 s, 2 s… (and the events' own pause): a handful of tries in 2.5 s, not hundreds.
    assert 1 <= len(attempts) <= 4


def test_the_relay_stops_claiming_while_the_queue_is_backed_up(registry, committed_db, monkeypatch):
    ids = enqueue(registry, "probe.record", count=5)
    monkeypatch.setattr(registry["kloyst.queue"], "depth", lambda: 5000)
    relay = run_relay_for(registry, 0.5, max_queue_depth=2000, reconcile_interval_seconds=1000)
    assert relay.claim_seconds == []
    assert {e.status for e in events(committed_db, ids).values()} == {OutboxStatus.PENDING}


def test_rate_limited_tasks_are_spread_over_the_coming_windows(registry, db):
    ids = enqueue(registry, "probe.limited", count=40, limit=10, per_seconds=60)
    Relay(registry).run_once()  # one claim of all 40: 10 run, 30 are refused
    waiting = sorted(e.available_at for e in events(db, ids).values() if e.status == OutboxStatus.PENDING)
    assert len(waiting) == 30
    first = waiting[0]
    windows = collections.Counter(round((at - first).total_seconds() / 60) for at in waiting)
    # 10 per window over the next three windows, instead of all 30 retrying at the next one.
    assert sorted(windows.values()) == [10, 10, 10]


def test_a_task_enqueued_in_a_vendors_transaction_runs_for_that_vendor(registry, db, accounts):
    owner = accounts.vendor()
    db.commit()
    queue = registry["kloyst.queue"]
    manager = transaction.TransactionManager(explicit=True)
    with session_scope(registry["kloyst.session_factory"], vendor_id=owner.vendor_id, manager=manager) as s:
        event = queue.enqueue(s, manager, "probe.record", delay=1, n=1)
        assert event.vendor_id == owner.vendor_id
        with pytest.raises(TenancyError, match="another vendor"):
            queue.enqueue(s, manager, "probe.record", delay=1, vendor_id=uuid.uuid4(), n=2)


def test_a_topic_handler_does_not_run_for_a_vendor_without_its_plugin(registry, db, accounts, enable_plugin,
                                                                       run_outbox):
    without, with_probe = accounts.vendor("Without"), accounts.vendor("With")
    enable_plugin(with_probe, "probe")
    with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as s:
        Outbox(s).add("probe.topic", {"n": "without"}, vendor_id=without.vendor_id)
        Outbox(s).add("probe.topic", {"n": "with"}, vendor_id=with_probe.vendor_id)
    run_outbox()
    db.expire_all()
    done = [p["n"] for p in db.scalars(select(OutboxEvent.payload).where(OutboxEvent.topic == "probe.done"))]
    assert done == ["with"]


def test_a_stale_copy_from_an_earlier_batch_does_nothing(registry, db):
    [event_id] = enqueue(registry, "probe.record")
    relay = Relay(registry)
    old_batch, rows = relay.claim()
    # The event went back to pending (say, its lease expired) and was claimed again in a new batch.
    with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as s:
        s.get(OutboxEvent, event_id).status = OutboxStatus.PENDING
    new_batch, _ = relay.claim()
    from kloyst.outbox.delivery import deliver

    assert deliver(registry, event_id, None, "kloyst.task", old_batch) == "duplicate"
    assert deliver(registry, event_id, None, "kloyst.task", new_batch) == "delivered"
    assert events(db, [event_id])[event_id].status == OutboxStatus.DELIVERED
