"""The reconciler finds lost work by evidence (no worker holds it, the queue does not have it), never by waiting.

The test application's queue normally runs tasks the moment they are published; here it is
made to hold them (``held_queue``), and the tests play the worker: ``huey.dequeue()`` is a
worker taking a message, ``huey.execute(task)`` is it running the task. The reconciler gets
a clock the test moves, so its two looks are explicit. The races of
:mod:`kloyst.outbox.reconcile` are each played out, in both orders where there are two.
"""

from __future__ import annotations

import collections
import threading
import time

import pytest
from probe_plugin import enqueue_probes as enqueue
from sqlalchemy import func, select, text, update

import probe_plugin
from kloyst import make_configurator, testing
from kloyst.db import migrate, session_scope, tenancy
from kloyst.outbox import OutboxEvent, OutboxStatus
from kloyst.outbox.models import OutboxBatch
from kloyst.outbox.reconcile import CONFIRM_SECONDS, Reconciler
from kloyst.outbox.relay import Relay

NOTHING = {"expired_leases": 0, "lost_deliveries": 0, "suspected": 0}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = CONFIRM_SECONDS) -> None:
        self.now += seconds


@pytest.fixture
def held_queue(registry, monkeypatch):
    """The test application's queue, holding what is published until the test works it off."""
    queue = registry["kloyst.queue"]
    queue.huey.storage.flush_queue()
    monkeypatch.setattr(queue.huey, "immediate", False)
    yield queue
    queue.huey.storage.flush_queue()


def reconciler_for(registry, **options) -> tuple[Reconciler, Clock]:
    clock = Clock()
    return Reconciler(registry, clock=clock, **options), clock


def events(session, ids) -> dict[int, OutboxEvent]:
    session.expire_all()
    return {e.id: e for e in session.scalars(select(OutboxEvent).where(OutboxEvent.id.in_(ids)))}


def done_counts(session) -> collections.Counter:
    session.expire_all()
    rows = session.scalars(select(OutboxEvent.payload).where(OutboxEvent.topic == "probe.done")).all()
    return collections.Counter(row["n"] for row in rows)


def publish_all(registry) -> int:
    relay, total = Relay(registry), 0
    while published := relay.publish(*relay.claim()):
        total += published
    return total


def work_off(queue) -> list:
    """Run every message in the queue, as a worker would; returns what each delivery reported."""
    results = []
    while (task := queue.huey.dequeue()) is not None:
        results.append(queue.huey.execute(task))
    return results


def expire_leases(registry) -> None:
    with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as s:
        s.execute(update(OutboxBatch).values(leased_until=func.now() - text("interval '1 second'")))


def test_events_waiting_in_the_queue_are_never_taken_back_however_long_they_wait(registry, db, held_queue):
    published = enqueue(registry, "probe.record", count=3)
    assert publish_all(registry) == 3
    # A relay that pushed its batch and died before recording it published: its lease runs out.
    unrecorded = enqueue(registry, "probe.record", count=2, batch="unrecorded")
    batch, rows = Relay(registry).claim()
    held_queue.publish_deliveries([(r.id, r.vendor_id, r.topic) for r in rows], batch)
    expire_leases(registry)
    before = {e.id: e.batch_id for e in events(db, published + unrecorded).values()}

    reconciler, clock = reconciler_for(registry)
    for _ in range(5):
        assert reconciler.run() == NOTHING
        clock.advance(60)
    after = events(db, published + unrecorded)
    assert {e.status for e in after.values()} == {OutboxStatus.LEASED}
    assert {e.id: e.batch_id for e in after.values()} == before
    assert held_queue.depth() == 5 and publish_all(registry) == 0, "nothing is published twice"

    assert work_off(held_queue) == ["delivered"] * 5
    assert done_counts(db) == {0: 2, 1: 2, 2: 1}
    assert {e.attempts for e in events(db, published + unrecorded).values()} == {1}


def test_an_event_the_queue_lost_goes_back_to_pending_on_the_second_look(registry, db, held_queue):
    ids = enqueue(registry, "probe.record", count=2)
    publish_all(registry)
    held_queue.huey.dequeue()  # its worker took it and died
    reconciler, clock = reconciler_for(registry)

    assert reconciler.run() == {**NOTHING, "suspected": 1}
    clock.advance(CONFIRM_SECONDS / 2)
    assert reconciler.run() == {**NOTHING, "suspected": 1}, "not before the confirmation"
    clock.advance(CONFIRM_SECONDS / 2)
    assert reconciler.run() == {**NOTHING, "lost_deliveries": 1}

    lost = next(e for e in events(db, ids).values() if e.status == OutboxStatus.PENDING)
    assert lost.batch_id is None and lost.failures == 0, "lost work is not the work's failure"
    assert publish_all(registry) == 1
    assert work_off(held_queue) == ["delivered", "delivered"]
    assert done_counts(db) == {0: 1, 1: 1}
    assert events(db, [lost.id])[lost.id].attempts == 2


def test_a_worker_that_takes_its_event_as_the_reconciler_looks_runs_it_once(registry, db, held_queue):
    [event_id] = enqueue(registry, "probe.record")
    publish_all(registry)
    task = held_queue.huey.dequeue()  # taken, not yet locked
    reconciler, clock = reconciler_for(registry)
    assert reconciler.run()["suspected"] == 1

    assert held_queue.huey.execute(task) == "delivered"
    clock.advance()
    assert reconciler.run() == NOTHING
    assert events(db, [event_id])[event_id].status == OutboxStatus.DELIVERED
    assert done_counts(db) == {0: 1}


def test_a_worker_slower_than_the_confirmation_finds_its_event_taken_back_and_does_not_run_it(
        registry, db, held_queue):
    [event_id] = enqueue(registry, "probe.record")
    publish_all(registry)
    task = held_queue.huey.dequeue()  # taken, and the worker stalls before it locks the row
    reconciler, clock = reconciler_for(registry)
    reconciler.run()
    clock.advance()
    assert reconciler.run()["lost_deliveries"] == 1

    assert held_queue.huey.execute(task) == "duplicate", "the stale copy must not run the handler"
    assert done_counts(db) == {}
    assert publish_all(registry) == 1 and work_off(held_queue) == ["delivered"]
    assert done_counts(db) == {0: 1}


def test_a_batch_claimed_but_not_yet_published_is_left_alone_while_its_lease_holds(registry, db, held_queue):
    [event_id] = enqueue(registry, "probe.record")
    batch, _ = Relay(registry).claim()  # a live relay, about to publish
    reconciler, clock = reconciler_for(registry)
    for _ in range(3):
        assert reconciler.run() == NOTHING
        clock.advance()
    assert events(db, [event_id])[event_id].batch_id == batch


def test_the_queue_is_read_only_when_the_database_has_candidates(registry, db, held_queue, monkeypatch):
    reads = []
    original = held_queue.queued_deliveries
    monkeypatch.setattr(held_queue, "queued_deliveries", lambda: reads.append(1) or original())
    reconciler, _ = reconciler_for(registry)
    enqueue(registry, "probe.record", count=3)  # pending: nothing any worker could have lost
    reconciler.run()
    assert reads == []
    publish_all(registry)
    reconciler.run()
    assert reads == [1]


def test_when_the_queue_cannot_be_read_nothing_is_taken_back(registry, db, held_queue, monkeypatch):
    [event_id] = enqueue(registry, "probe.record")
    publish_all(registry)
    held_queue.huey.storage.flush_queue()  # lost for real, but the reconciler cannot see the queue

    def unreadable():
        raise ConnectionError("redis is down")

    monkeypatch.setattr(held_queue, "queued_deliveries", unreadable)
    reconciler, clock = reconciler_for(registry)
    for _ in range(3):
        with pytest.raises(ConnectionError):
            reconciler.run()
        clock.advance()
    assert events(db, [event_id])[event_id].status == OutboxStatus.LEASED
    Relay(registry).reconcile_if_due()  # logged, and the relay carries on


def test_a_handler_running_for_longer_than_the_confirmation_is_never_taken_back(registry, committed_db, held_queue,
                                                                                   tmp_path):
    marker = tmp_path / "running"
    [event_id] = enqueue(registry, "probe.sleep", seconds=2 * CONFIRM_SECONDS, marker=str(marker))
    publish_all(registry)
    worker = threading.Thread(target=lambda: held_queue.huey.execute(held_queue.huey.dequeue()))
    worker.start()
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marker.exists()

    reconciler, clock = reconciler_for(registry)
    assert reconciler.run() == {**NOTHING, "suspected": 1}  # running: not in the queue…
    clock.advance()
    assert reconciler.run() == {**NOTHING, "suspected": 1}  # …but locked, so never taken back
    worker.join(10)
    assert reconciler.run() == NOTHING
    event = events(committed_db, [event_id])[event_id]
    assert event.status == OutboxStatus.DELIVERED and event.attempts == 1
    assert done_counts(committed_db) == {0: 1}


def test_workers_racing_a_reconciler_without_confirmation_still_run_every_handler_exactly_once(
        registry, committed_db, held_queue):
    """The confirmation only spares messages; exactly-once rests on the (event, batch) check under the row lock."""
    ids = enqueue(registry, "probe.record", count=300)
    stop = threading.Event()
    errors: list[BaseException] = []
    eager = Reconciler(registry, confirm_seconds=0)  # takes back anything not queued and not locked, at once

    def guarded(loop):
        def run():
            try:
                while not stop.is_set():
                    loop()
            except BaseException as exc:  # surfaced below
                errors.append(exc)
        return threading.Thread(target=run)

    def work_one():
        task = held_queue.huey.dequeue()
        if task is None:
            time.sleep(0.001)
        else:
            held_queue.huey.execute(task)

    def reconcile():
        eager.run()
        time.sleep(0.002)

    def relay_all():
        if not publish_all(registry):
            time.sleep(0.005)

    relay = Relay(registry)
    threads = [guarded(work_one) for _ in range(3)] + [guarded(reconcile), guarded(relay_all)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not errors:
        statuses = {e.status for e in events(committed_db, ids).values()}
        if statuses == {OutboxStatus.DELIVERED}:
            break
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert {e.status for e in events(committed_db, ids).values()} == {OutboxStatus.DELIVERED}
    assert done_counts(committed_db) == {n: 1 for n in range(300)}
    assert relay.claim() == (None, [])


@pytest.fixture
def embedded(tmp_path):
    """The embedded default: SQLite and SqliteHuey, the queue holding its messages as on a real install."""
    settings = {**testing.TEST_SETTINGS, "kloyst.database.url": f"sqlite:///{tmp_path}/k.sqlite",
                "kloyst.redis.url": "", "kloyst.mail.file_dir": f"{tmp_path}/mail", "kloyst.log.dir": f"{tmp_path}/log",
                "kloyst.queue.backend": "sqlite", "kloyst.queue.immediate": "false",
                "kloyst.queue.sqlite_path": f"{tmp_path}/queue.sqlite"}
    registry = make_configurator({"here": str(tmp_path)}, settings, extra_plugins=[("probe", probe_plugin)],
                                 environ={}).registry
    migrate.upgrade(registry["kloyst.plugin_manager"], registry["kloyst.engine"])
    yield registry
    registry["kloyst.engine"].dispose()


def test_on_the_embedded_default_lost_work_comes_back_and_queued_work_stays(embedded):
    ids = enqueue(embedded, "probe.record", count=3)
    queue = embedded["kloyst.queue"]
    assert publish_all(embedded) == 3
    queue.huey.dequeue()  # lost with its worker
    reconciler, clock = reconciler_for(embedded)
    reconciler.run()
    clock.advance()
    assert reconciler.run() == {**NOTHING, "lost_deliveries": 1}
    assert queue.depth() == 2, "the two still queued stay where they are"
    assert publish_all(embedded) == 1
    assert sorted(work_off(queue)) == ["delivered"] * 3
    with session_scope(embedded["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:
        assert done_counts(db) == {0: 1, 1: 1, 2: 1}
        assert {e.status for e in events(db, ids).values()} == {OutboxStatus.DELIVERED}


def test_on_the_embedded_default_a_running_handler_is_waited_for_not_taken_back(embedded, tmp_path):
    marker = tmp_path / "running"
    [event_id] = enqueue(embedded, "probe.sleep", seconds=1.0, marker=str(marker))
    queue = embedded["kloyst.queue"]
    publish_all(embedded)
    reconciler, clock = reconciler_for(embedded)
    assert reconciler.run() == NOTHING  # queued
    worker = threading.Thread(target=lambda: queue.huey.execute(queue.huey.dequeue()))
    worker.start()
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reconciler.run() == {**NOTHING, "suspected": 1}
    clock.advance()
    # SQLite has one writer: the return waits for the handler's commit, then finds the event delivered.
    assert reconciler.run() == {**NOTHING, "suspected": 1}
    worker.join(10)
    assert reconciler.run() == NOTHING
    with session_scope(embedded["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:
        assert done_counts(db) == {0: 1}
        assert events(db, [event_id])[event_id].attempts == 1
