"""The relay and delivery promises of the README's outbox section, on real PostgreSQL.

Tasks come from the test-only ``probe`` plugin: ``probe.record`` writes one ``probe.done``
row per run in the task's own transaction, so counting those rows tells how often a task
*took effect*.
"""

import collections
import threading
import uuid

import pytest
from probe_plugin import enqueue_probes as enqueue
import transaction
from sqlalchemy import func, select, text, update

from kloyst.db import session_scope, tenancy
from kloyst.outbox import OutboxEvent, OutboxStatus
from kloyst.outbox.models import OutboxBatch
from kloyst.outbox.reconcile import CONFIRM_SECONDS, Reconciler
from kloyst.outbox.relay import Relay, RelaySettings




def done_counts(db) -> collections.Counter:
    db.expire_all()
    rows = db.scalars(select(OutboxEvent.payload).where(OutboxEvent.topic == "probe.done")).all()
    return collections.Counter(row["n"] for row in rows)


def statuses(db, ids):
    db.expire_all()
    return {e.id: e for e in db.scalars(select(OutboxEvent).where(OutboxEvent.id.in_(ids)))}


def drain(registry, relay=None, rounds=100):
    relay = relay or Relay(registry)
    total = 0
    for _ in range(rounds):
        published = relay.publish(*relay.claim())
        if not published:
            return total
        total += published
    raise AssertionError("outbox never drained")


def test_a_relay_that_crashes_after_claiming_is_replaced_when_the_lease_expires(registry, db):
    [event_id] = enqueue(registry, "probe.record")
    crashed = Relay(registry)
    batch, claimed = crashed.claim()  # …and the process dies before publishing
    assert [c.id for c in claimed] == [event_id]
    assert statuses(db, [event_id])[event_id].status == OutboxStatus.LEASED

    assert drain(registry) == 0  # a leased event is invisible to other relays while the lease holds
    now = [0.0]
    reconciler = Reconciler(registry, clock=lambda: now[0])
    assert reconciler.run() == {"expired_leases": 0, "lost_deliveries": 0, "suspected": 0}  # the lease holds
    with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as s:
        s.execute(update(OutboxBatch).where(OutboxBatch.id == batch)
                  .values(leased_until=func.now() - text("interval '1 second'")))
    assert reconciler.run()["suspected"] == 1  # first look: a suspect
    now[0] += CONFIRM_SECONDS
    assert reconciler.run()["expired_leases"] == 1  # second look: lost

    assert drain(registry) == 1
    event = statuses(db, [event_id])[event_id]
    assert event.status == OutboxStatus.DELIVERED and event.attempts == 2
    assert done_counts(db) == {0: 1}


def test_an_event_published_twice_takes_effect_once(registry, db):
    [event_id] = enqueue(registry, "probe.record")
    relay = Relay(registry)
    batch, claimed = relay.claim()
    queue = registry["kloyst.queue"]
    # Crash after huey.enqueue but before "published" was recorded: the next relay publishes again.
    queue.publish_deliveries([(c.id, c.vendor_id, c.topic) for c in claimed], batch)
    queue.publish_deliveries([(c.id, c.vendor_id, c.topic) for c in claimed], batch)
    assert done_counts(db) == {0: 1}
    assert statuses(db, [event_id])[event_id].status == OutboxStatus.DELIVERED


def test_concurrent_relays_publish_each_event_once_and_every_task_takes_effect_once(registry, committed_db,
                                                                                     monkeypatch):
    ids = []
    for vendor in range(4):
        ids += enqueue(registry, "probe.record", vendor_id=None, count=250, batch=vendor)
    queue = registry["kloyst.queue"]
    published = collections.Counter()
    lock = threading.Lock()
    original = queue.publish_deliveries

    def counting(rows, batch):
        with lock:
            published.update(r[0] for r in rows)
        original(rows, batch)

    monkeypatch.setattr(queue, "publish_deliveries", counting)
    errors = []

    def relay_until_empty():
        try:
            drain(registry, Relay(registry, RelaySettings(batch_size=50, per_vendor=50)))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=relay_until_empty) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(published) == sorted(ids)
    assert max(published.values()) == 1, "no crash, so no event may be published twice"
    rows = committed_db.scalars(select(OutboxEvent.payload).where(OutboxEvent.topic == "probe.done")).all()
    completions = collections.Counter((r["batch"], r["n"]) for r in rows)
    assert len(completions) == 1000 and max(completions.values()) == 1


def test_a_poison_event_is_dead_lettered_with_its_error_and_others_continue(registry, db, testapp, accounts):
    [poison] = enqueue(registry, "probe.fail")
    healthy = enqueue(registry, "probe.record", count=3)
    max_attempts = registry.settings["kloyst.outbox.max_attempts"]
    for _ in range(max_attempts + 2):
        drain(registry)
        with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as s:
            s.execute(update(OutboxEvent).where(OutboxEvent.status == OutboxStatus.PENDING)
                      .values(available_at=func.now() - text("interval '1 second'")))
    events = statuses(db, [poison, *healthy])
    assert events[poison].status == OutboxStatus.DEAD
    assert events[poison].failures == max_attempts
    assert "RuntimeError: probe failure 0" in events[poison].last_error
    assert all(events[i].status == OutboxStatus.DELIVERED for i in healthy)

    admin = accounts.platform_admin()
    listed = testapp.get("/v1/admin/outbox/dead", headers=admin.headers).json["items"]
    assert [d["id"] for d in listed] == [poison] and listed[0]["task"] == "probe.fail"
    testapp.post(f"/v1/admin/outbox/dead/{poison}/requeue", headers=admin.headers, status=200)
    requeued = statuses(db, [poison])[poison]
    assert requeued.status == OutboxStatus.PENDING and requeued.failures == 0
    testapp.post(f"/v1/admin/outbox/dead/{poison}/requeue", headers=admin.headers, status=404)


def test_an_event_whose_transaction_commits_late_is_still_published(registry, committed_db):
    """Sequence gap: id 1 commits after id 2; a high-water-mark relay would skip it forever."""
    factory = registry["kloyst.session_factory"]
    queue = registry["kloyst.queue"]
    slow_manager = transaction.TransactionManager(explicit=True)
    slow = session_scope(factory, vendor_id=tenancy.ALL_VENDORS, manager=slow_manager)
    slow_session = slow.__enter__()
    first = queue.enqueue(slow_session, slow_manager, "probe.record", delay=0.000001, n="late")
    slow_session.flush()
    second = enqueue(registry, "probe.record")[0]
    assert first.id < second

    assert drain(registry) == 1  # only the committed one
    slow.__exit__(None, None, None)  # now the lower id commits
    with session_scope(factory, vendor_id=tenancy.ALL_VENDORS) as s:
        s.execute(update(OutboxEvent).where(OutboxEvent.id == first.id)
                  .values(available_at=func.now() - text("interval '1 second'")))
    assert drain(registry) == 1
    assert done_counts(committed_db) == {0: 1, "late": 1}


def test_a_small_vendors_events_are_in_the_first_claim_next_to_a_big_vendor(registry, db):
    big, small = uuid.UUID(int=1), uuid.UUID(int=2)
    enqueue(registry, "probe.record", vendor_id=big, count=600)
    small_ids = enqueue(registry, "probe.record", vendor_id=small, count=10)
    _, claimed = Relay(registry).claim()
    by_vendor = collections.Counter(c.vendor_id for c in claimed)
    assert set(small_ids) <= {c.id for c in claimed}
    # Work-conserving: once the small vendor has all it waits for, the rest of the batch is the big one's.
    assert by_vendor == {str(small): 10, str(big): 490}


def test_vendors_are_served_round_robin_so_nobody_waits_more_than_a_lap(registry, db):
    crowd = [uuid.UUID(int=i) for i in range(1, 26)]  # 25 vendors ahead of the small one
    for vendor in crowd:
        enqueue(registry, "probe.record", vendor_id=vendor, count=60)
    small = uuid.UUID(int=1000)
    small_ids = set(enqueue(registry, "probe.record", vendor_id=small, count=10))
    relay = Relay(registry)
    claims_needed = None
    for claim_number in range(1, 10):
        claimed = {c.id for c in relay.claim()[1]}
        if small_ids <= claimed:
            claims_needed = claim_number
            break
    # 26 vendors × 50 per vendor / 500 per claim → served within 3 claims.
    assert claims_needed is not None and claims_needed <= 3


@pytest.mark.parametrize("per_vendor", [50])
def test_while_enough_vendors_wait_no_vendor_gets_more_than_its_share(registry, db, per_vendor):
    for vendor in range(1, 13):
        enqueue(registry, "probe.record", vendor_id=uuid.UUID(int=vendor), count=80)
    _, claimed = Relay(registry).claim()
    counts = collections.Counter(c.vendor_id for c in claimed)
    assert len(claimed) == 500
    assert max(counts.values()) == per_vendor


def test_rescheduled_tasks_wait_without_counting_an_attempt(registry, db):
    from kloyst.outbox.delivery import Reschedule
    from kloyst.queue import TaskContext

    queue = registry["kloyst.queue"]
    calls = []

    def waits_once(ctx: TaskContext, **kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise Reschedule(30, "rate limited")

    queue.tasks["probe.waits"] = ("probe", type(queue.tasks["probe.record"][1])("probe.waits", waits_once))
    try:
        [event_id] = enqueue(registry, "probe.waits")
        drain(registry)
        event = statuses(db, [event_id])[event_id]
        assert event.status == OutboxStatus.PENDING and event.failures == 0 and event.last_error is None
        assert len(calls) == 1
    finally:
        del queue.tasks["probe.waits"]


def test_a_task_over_its_rate_limit_waits_for_the_next_window_without_sleeping(registry, db):
    import time

    ids = enqueue(registry, "probe.limited", count=7, limit=3)
    started = time.monotonic()
    drain(registry)
    # Sleeping out the four refusals would take 4 s or more; rescheduling takes milliseconds.
    assert time.monotonic() - started < 3.0, "no worker may sleep on a rate limit"
    assert sum(done_counts(db).values()) == 3
    waiting = [e for e in statuses(db, ids).values() if e.status == OutboxStatus.PENDING]
    assert len(waiting) == 4
    assert all(e.failures == 0 and e.last_error is None for e in waiting), "a reschedule is not a failure"

    time.sleep(1.05)  # the next window
    with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as s:
        s.execute(update(OutboxEvent).where(OutboxEvent.status == OutboxStatus.PENDING)
                  .values(available_at=func.now() - text("interval '1 second'")))
    drain(registry)
    assert sum(done_counts(db).values()) == 6


def test_the_backlog_endpoint_reports_per_vendor_counts_and_oldest_age(registry, db, testapp, accounts):
    vendor = uuid.UUID(int=7)
    enqueue(registry, "probe.record", vendor_id=vendor, count=3)
    admin = accounts.platform_admin()
    body = testapp.get("/v1/admin/outbox", headers=admin.headers).json
    row = next(v for v in body["vendors"] if v["vendor_id"] == str(vendor))
    assert row["pending"] == 3 and row["oldest_pending_age_seconds"] >= 0
    assert body["totals"]["pending"] >= 3
    assert testapp.get("/v1/admin/queue", headers=admin.headers).json["depth"] == 0
    owner = accounts.vendor()
    testapp.get("/v1/admin/outbox", headers=owner.headers, status=403)
