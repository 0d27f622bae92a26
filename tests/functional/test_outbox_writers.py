"""Tasks and the loops make progress together, on the embedded default's SQLite and on PostgreSQL alike.

Each test runs against an application built on SQLite (the embedded default) and on
PostgreSQL, with a SqliteHuey queue the test works off as a worker would (``run_next``), on
a thread of its own where a task has to be caught mid-run. The tasks are the
``writer_probe_plugin``'s: they write in a transaction of their own before their task's, wait
for the test before touching ``ctx.db``, or nest a write after their first one
(:mod:`kloyst.db.sqlite`, :mod:`kloyst.outbox.delivery`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import datetime as dt
import threading
import time
import uuid

import pytest
import transaction
import writer_probe_plugin
from sqlalchemy import delete, select, update
from writer_probe_plugin import GATES

from kloyst import make_configurator, testing
from kloyst.db import migrate, session_scope, tenancy, utcnow
from kloyst.outbox import Outbox, OutboxEvent, OutboxStatus
from kloyst.outbox.models import OutboxBatch
from kloyst.outbox.reconcile import CONFIRM_SECONDS, Reconciler
from kloyst.outbox.relay import Relay
from kloyst.queue import TASK_TOPIC

pytestmark = pytest.mark.slow


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def app(request, tmp_path_factory):
    """The registry of an application on ``request.param``, migrated, with the writer probes installed."""
    here = tmp_path_factory.mktemp(request.param)
    name = f"kloyst_writers_{uuid.uuid4().hex[:10]}"
    url = f"sqlite:///{here}/kloyst.sqlite" if request.param == "sqlite" else testing.create_database(name)
    settings = {**testing.TEST_SETTINGS, "kloyst.database.url": url, "kloyst.redis.url": "",
                "kloyst.queue.backend": "sqlite", "kloyst.queue.immediate": "false",
                "kloyst.queue.sqlite_path": str(here / "queue.sqlite"), "kloyst.log.dir": str(here / "log"),
                "kloyst.mail.file_dir": str(here / "mail")}
    registry = make_configurator({"here": str(here)}, settings, extra_plugins=[("writer", writer_probe_plugin)],
                                 environ={}).registry
    migrate.upgrade(registry["kloyst.plugin_manager"], registry["kloyst.engine"])
    yield registry
    registry["kloyst.engine"].dispose()
    if request.param == "postgresql":
        testing.drop_database(name)


@pytest.fixture(autouse=True)
def empty_outbox(app):
    app["kloyst.queue"].huey.storage.flush_queue()
    yield
    GATES.clear()
    with session_scope(app["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:
        db.execute(delete(OutboxEvent))
        db.execute(delete(OutboxBatch))


@pytest.fixture
def worker():
    """A worker thread: ``worker.submit(run_next, app)`` runs the next queued task there."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="test-worker") as pool:
        yield pool
        for gate in GATES.values():  # never leave a task waiting on a gate after a failed assertion
            gate.set()


def sqlite(app) -> bool:
    return app["kloyst.engine"].dialect.name == "sqlite"


def enqueue(app, name: str, **kwargs) -> int:
    """Enqueue task ``name`` in a committed transaction; the after-commit fast path puts it in the queue."""
    manager = transaction.TransactionManager(explicit=True)
    with session_scope(app["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS, manager=manager) as db:
        event = app["kloyst.queue"].enqueue(db, manager, name, **kwargs)
        db.flush()
        event_id = event.id
    return event_id


def run_next(app) -> str:
    huey = app["kloyst.queue"].huey
    return huey.execute(huey.dequeue())


def gates(*names: str) -> list[str]:
    keys = [f"{name}-{uuid.uuid4().hex[:8]}" for name in names]
    for key in keys:
        GATES[key] = threading.Event()
    return keys


def took_effect(app, topic: str) -> collections.Counter:
    with session_scope(app["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS, read_only=True) as db:
        return collections.Counter(p["n"] for p in db.scalars(select(OutboxEvent.payload)
                                                              .where(OutboxEvent.topic == topic)))


def event(app, event_id: int) -> OutboxEvent:
    with session_scope(app["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS, read_only=True) as db:
        return db.get(OutboxEvent, event_id)


def timed_write(app) -> float:
    """Seconds one short write of someone else (a request, a loop) takes to commit."""
    started = time.monotonic()
    with session_scope(app["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:
        Outbox(db).add("writer.other", {"n": 0}).status = OutboxStatus.DELIVERED
    return time.monotonic() - started


def test_a_task_that_writes_in_a_transaction_of_its_own_first_never_waits_for_itself(app):
    enqueue(app, "writer.claim_first", n="claim")
    started = time.monotonic()
    assert run_next(app) == "delivered"
    assert time.monotonic() - started < 1.0
    assert took_effect(app, "writer.claimed") == {"claim": 1}
    assert took_effect(app, "writer.done") == {"claim": 1}


def test_while_a_task_works_before_writing_everyone_else_writes_at_once(app, worker):
    gate, started = gates("gate", "started")
    enqueue(app, "writer.wait_first", n="slow", gate=gate, started=started)
    running = worker.submit(run_next, app)
    assert GATES[started].wait(10), running.exception(0) if running.done() else "the task never started"

    assert timed_write(app) < 0.5
    enqueue(app, "writer.claim_first", n="meanwhile")  # the fast path leases and publishes it: the relay writes
    assert run_next(app) == "delivered"

    GATES[gate].set()
    assert running.result(10) == "delivered"
    assert took_effect(app, "writer.done") == {"slow": 1, "meanwhile": 1}


def test_the_reconciler_never_takes_back_a_task_its_process_is_running(app, worker):
    gate, started = gates("gate", "started")
    event_id = enqueue(app, "writer.wait_first", n="running", gate=gate, started=started)
    running = worker.submit(run_next, app)
    assert GATES[started].wait(10)

    clock = Clock()
    reconciler = Reconciler(app, clock=clock)
    for _ in range(3):
        counts = reconciler.run()
        assert counts["lost_deliveries"] == counts["expired_leases"] == 0
        assert counts["suspected"] == 1  # not in the queue any more, and running here
        clock.now += 60
    assert event(app, event_id).status == OutboxStatus.LEASED

    GATES[gate].set()
    assert running.result(10) == "delivered"
    assert reconciler.run()["suspected"] == 0
    assert took_effect(app, "writer.done") == {"running": 1}


def test_a_second_copy_of_a_task_running_in_the_process_is_a_duplicate_at_once(app, worker):
    gate, started = gates("gate", "started")
    event_id = enqueue(app, "writer.wait_first", n="copied", gate=gate, started=started)
    running = worker.submit(run_next, app)
    assert GATES[started].wait(10)

    batch = event(app, event_id).batch_id
    app["kloyst.queue"].publish_deliveries([(event_id, None, TASK_TOPIC)], batch)
    copy_started = time.monotonic()
    assert run_next(app) == "duplicate"
    assert time.monotonic() - copy_started < 0.5

    GATES[gate].set()
    assert running.result(10) == "delivered"
    assert took_effect(app, "writer.done") == {"copied": 1}


def test_an_event_taken_back_by_another_process_while_its_task_runs_leaves_no_effect(app, worker):
    if not sqlite(app):
        pytest.skip("on PostgreSQL the task's row lock keeps every other process's reconciler off it")
    gate, started = gates("gate", "started")
    event_id = enqueue(app, "writer.wait_first", n="taken", gate=gate, started=started)
    running = worker.submit(run_next, app)
    assert GATES[started].wait(10)

    with session_scope(app["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:  # as its reconciler does
        db.execute(update(OutboxEvent).where(OutboxEvent.id == event_id)
                   .values(status=OutboxStatus.PENDING, batch_id=None, leased_until=None, available_at=utcnow()))
    GATES[gate].set()
    assert running.result(10) == "duplicate"
    assert took_effect(app, "writer.done") == {}
    assert event(app, event_id).status == OutboxStatus.PENDING  # published again by the relay, and run once


def test_a_write_in_a_second_transaction_after_the_first_wrote_fails_at_once_on_sqlite_instead_of_freezing(app):
    event_id = enqueue(app, "writer.nested_after_write", n="nested")
    started = time.monotonic()
    outcome = run_next(app)
    assert time.monotonic() - started < 1.0
    if sqlite(app):
        assert outcome == "failed"
        assert "NestedWriteError" in event(app, event_id).last_error
        assert took_effect(app, "writer.done") == {}
    else:  # PostgreSQL locks rows, not the database: the second transaction commits on its own
        assert outcome == "delivered"
        assert took_effect(app, "writer.done") == {"nested": 1}


def test_the_reconciler_returns_expired_and_lost_events_and_they_run_once(app):
    relay = Relay(app)
    lost = enqueue(app, "writer.claim_first", n="lost")  # published by the fast path, then lost with the queue
    app["kloyst.queue"].huey.storage.flush_queue()
    with session_scope(app["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:
        Outbox(db).add(TASK_TOPIC, {"task": "writer.claim_first", "kwargs": {"n": "expired"}})
    batch, rows = relay.claim()  # a relay that claimed and died before publishing
    assert len(rows) == 1
    with session_scope(app["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:
        db.execute(update(OutboxBatch).where(OutboxBatch.id == batch)
                   .values(leased_until=utcnow() - dt.timedelta(seconds=1)))

    clock = Clock()
    reconciler = Reconciler(app, clock=clock)
    assert reconciler.run() == {"expired_leases": 0, "lost_deliveries": 0, "suspected": 2}
    clock.now += CONFIRM_SECONDS
    assert reconciler.run() == {"expired_leases": 1, "lost_deliveries": 1, "suspected": 0}
    assert event(app, lost).status == OutboxStatus.PENDING

    assert relay.publish(*relay.claim()) == 2
    assert sorted([run_next(app), run_next(app)]) == ["delivered", "delivered"]
    assert took_effect(app, "writer.done") == {"lost": 1, "expired": 1}
