"""huey does not acknowledge tasks; Kloyst loses nothing anyway (RELIABILITY.md A2), with real processes.

A real WORKER process consumes a real Redis queue. The database is the ledger: a worker
SIGKILLed mid-task and a Redis flushed of everything queued are both repaired by the
reconciler, and every task takes effect exactly once.
"""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import transaction
from sqlalchemy import select

from e2e_support import clean_env
from kloyst import make_configurator
from kloyst.db import session_scope, tenancy
from kloyst.outbox import OutboxEvent, OutboxStatus
from kloyst.outbox.reconcile import reconcile
from kloyst.outbox.relay import Relay, RelaySettings

pytestmark = pytest.mark.slow

WORKER = str(Path(__file__).with_name("probe_worker.py"))


@pytest.fixture
def queue_settings(kloyst_settings, tmp_path):
    """The suite's database and this worker's Redis, with a real (not immediate) queue of its own."""
    return {**kloyst_settings, "kloyst.queue.backend": "redis", "kloyst.queue.immediate": "false",
            "kloyst.queue.name": f"e2e-{uuid.uuid4().hex[:8]}", "kloyst.queue.workers": "2",
            "kloyst.log.dir": str(tmp_path / "log")}


@pytest.fixture
def producer(queue_settings, committed_db):
    """This test's own application: enqueues, relays and reconciles against the real queue."""
    import probe_plugin

    registry = make_configurator({"here": "."}, dict(queue_settings), extra_plugins=[("probe", probe_plugin)],
                                 environ={}).registry
    yield registry
    storage = registry["kloyst.queue"].huey.storage
    storage.conn.delete(storage.queue_key)
    registry["kloyst.engine"].dispose()


@pytest.fixture
def start_worker(queue_settings, tmp_path):
    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        log = (tmp_path / f"worker-{len(started)}.log").open("w")
        process = subprocess.Popen([sys.executable, WORKER], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
                                   env=clean_env(KLOYST_TEST_SETTINGS=json.dumps(queue_settings)))
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def enqueue(registry, name: str, count: int = 1, **kwargs) -> list[int]:
    manager = transaction.TransactionManager(explicit=True)
    with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS, manager=manager) as db:
        # delay skips the after-commit fast path: the relay below publishes, as in production.
        events = [registry["kloyst.queue"].enqueue(db, manager, name, delay=0.001, n=i, **kwargs)
                  for i in range(count)]
        db.flush()
        ids = [e.id for e in events]
    time.sleep(0.01)
    return ids


def publish_all(registry) -> int:
    relay = Relay(registry)
    total = 0
    while published := relay.publish(*relay.claim()):
        total += published
    return total


def done(registry) -> collections.Counter:
    with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:
        payloads = db.scalars(select(OutboxEvent.payload).where(OutboxEvent.topic == "probe.done")).all()
    return collections.Counter(p["n"] for p in payloads)


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def reconcile_now(registry) -> dict:
    return reconcile(registry, RelaySettings(redeliver_grace_seconds=0))


def test_a_worker_killed_mid_task_loses_nothing_and_the_task_takes_effect_once(producer, start_worker, tmp_path):
    marker = tmp_path / "running"
    [event_id] = enqueue(producer, "probe.sleep", seconds=3, marker=str(marker))
    assert publish_all(producer) == 1

    worker = start_worker()
    wait_until(marker.exists, 30, "the task to start in the worker")
    worker.send_signal(signal.SIGKILL)  # no graceful anything: huey's copy of the task is gone
    worker.wait(timeout=10)
    assert producer["kloyst.queue"].depth() == 0
    assert done(producer) == {}

    # The database still knows: the event is leased in a published batch, never delivered.
    wait_until(lambda: reconcile_now(producer)["lost_deliveries"] == 1, 15, "the reconciler to find the lost task")
    assert publish_all(producer) == 1
    start_worker()
    wait_until(lambda: done(producer) == {0: 1}, 30, "the task to run again")
    with session_scope(producer["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:
        event = db.get(OutboxEvent, event_id)
        assert event.status == OutboxStatus.DELIVERED and event.attempts == 2


def test_a_flushed_redis_is_rebuilt_from_the_database(producer, start_worker):
    ids = enqueue(producer, "probe.record", count=20)
    assert publish_all(producer) == 20
    queue = producer["kloyst.queue"]
    assert queue.depth() == 20
    queue.huey.storage.conn.flushdb()  # everything queued is gone
    assert queue.depth() == 0

    assert reconcile_now(producer)["lost_deliveries"] == 20
    assert publish_all(producer) == 20
    start_worker()
    wait_until(lambda: sum(done(producer).values()) == 20, 30, "all 20 tasks to run")
    assert done(producer) == {n: 1 for n in range(20)}
    with session_scope(producer["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:
        statuses = set(db.scalars(select(OutboxEvent.status).where(OutboxEvent.id.in_(ids))))
    assert statuses == {OutboxStatus.DELIVERED}


def test_the_same_task_delivered_twice_by_two_workers_takes_effect_once(producer, start_worker):
    [event_id] = enqueue(producer, "probe.record")
    relay = Relay(producer)
    batch, rows = relay.claim()
    queue = producer["kloyst.queue"]
    for _ in range(3):  # as if three relays had published it after crashes
        queue.publish_deliveries([(r.id, r.vendor_id, r.topic) for r in rows], batch)
    start_worker()
    start_worker()
    wait_until(lambda: queue.depth() == 0 and done(producer) == {0: 1}, 30, "the duplicates to be consumed")
    time.sleep(0.5)
    assert done(producer) == {0: 1}
