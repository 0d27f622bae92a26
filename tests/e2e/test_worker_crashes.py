"""huey does not acknowledge tasks; Kloyst loses nothing anyway, and recovers in seconds (docs/messaging.md).

Real processes on a real Redis queue: WORKERs and an OUTBOX relay started as ``kloyst run``
starts them (``probe_worker.py``, with the test-only probe plugin). The database is the
ledger: a worker SIGKILLed mid-task, a Redis flushed of everything queued and a relay
killed between its claim and its publish are all repaired by the relay's reconciler within
10 s, and every task takes effect exactly once. A SIGTERM-ed worker finishes what it holds
and a SIGTERM-ed relay leaves nothing claimed behind. The embedded default (one ALL process
on SQLite and SqliteHuey) recovers from its own SIGKILL as soon as it is started again.
The PostgreSQL tests run twice: the processes connected directly, and through PgBouncer in
transaction pooling (``kloyst_route`` in conftest.py), where a killed process's transaction
ends with its client connection while the server connection serves others.
"""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import transaction
from sqlalchemy import func, select

from kloyst import make_configurator
from kloyst.db import migrate, session_scope, tenancy
from kloyst.outbox import OutboxEvent, OutboxStatus
from kloyst.outbox.models import OutboxBatch
from kloyst.outbox.relay import Relay
from kloyst.testing.deployment import process_env
from kloyst.testing.processes import free_port

pytestmark = pytest.mark.slow

PROBE = str(Path(__file__).with_name("probe_worker.py"))
TESTS = str(Path(__file__).resolve().parents[1])
RECOVERY_SECONDS = 10  # the promise: lost work is delivered within this long of its loss

# A relay that claims one batch and is killed before it publishes it.
CLAIM_AND_DIE = f"""
import json, os, signal, sys
sys.path.insert(0, {TESTS!r})
import probe_plugin
from kloyst import make_configurator
from kloyst.outbox.relay import Relay
settings = json.loads(os.environ["KLOYST_TEST_SETTINGS"])
registry = make_configurator({{"here": os.getcwd()}}, settings, extra_plugins=[("probe", probe_plugin)],
                             environ={{}}).registry
batch, rows = Relay(registry).claim()
print(json.dumps({{"batch": batch, "events": [r.id for r in rows]}}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture
def queue_settings(kloyst_settings, tmp_path):
    """The suite's database and this test's own Redis queue, not immediate."""
    return {**kloyst_settings, "kloyst.queue.backend": "redis", "kloyst.queue.immediate": "false",
            "kloyst.queue.name": f"e2e-{uuid.uuid4().hex[:8]}", "kloyst.queue.workers": "2",
            "kloyst.log.dir": str(tmp_path / "log")}


@pytest.fixture
def producer(queue_settings, committed_db):
    """This test's own application: enqueues and inspects, against the real queue."""
    import probe_plugin

    registry = make_configurator({"here": "."}, dict(queue_settings), extra_plugins=[("probe", probe_plugin)],
                                 environ={}).registry
    yield registry
    storage = registry["kloyst.queue"].huey.storage
    storage.conn.delete(storage.queue_key)
    registry["kloyst.engine"].dispose()


class Processes:
    """Kloyst processes of one test, each killed at teardown if the test left it running."""

    def __init__(self, settings: dict, directory: Path) -> None:
        self.settings = settings
        self.directory = directory
        self.started: list[subprocess.Popen] = []

    def start(self, mode: str, *, settings: dict | None = None, wait: bool = True) -> subprocess.Popen:
        """Start ``mode`` (WORKER, OUTBOX, ALL); with ``wait``, return once its /healthz says every loop runs."""
        port = free_port()
        process_settings = {**self.settings, **(settings or {}), "kloyst.metrics.port": str(port)}
        log = (self.directory / f"{mode.lower()}-{len(self.started)}.log").open("w")
        process = subprocess.Popen([sys.executable, PROBE], stdout=log, stderr=subprocess.STDOUT, cwd=self.directory,
                                   env=process_env(KLOYST_TEST_SETTINGS=json.dumps(process_settings),
                                                   SERVICE_TYPE=mode))
        self.started.append(process)
        if wait:
            wait_until(lambda: healthy(port) or process.poll() is not None, 60, f"{mode} to start")
            assert process.poll() is None, f"{mode} exited with {process.returncode}"
        return process

    def claim_and_die(self) -> dict:
        """A relay process that claims one batch and is SIGKILLed before publishing it; returns what it claimed."""
        done = subprocess.run([sys.executable, "-c", CLAIM_AND_DIE], capture_output=True, text=True, timeout=60,
                              cwd=self.directory, env=process_env(KLOYST_TEST_SETTINGS=json.dumps(self.settings)))
        assert done.returncode == -signal.SIGKILL, done.stderr
        return json.loads(done.stdout)

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


@pytest.fixture
def processes(queue_settings, kloyst_route, tmp_path):
    """Processes on the suite's database, reached directly or through PgBouncer (``kloyst_route``)."""
    routed = {**queue_settings, "kloyst.database.url": kloyst_route(queue_settings["kloyst.database.url"])}
    started = Processes(routed, tmp_path)
    yield started
    started.stop_all()


@pytest.fixture
def embedded_processes(queue_settings, tmp_path):
    """Processes whose settings the test gives in full (the embedded default: its own SQLite)."""
    started = Processes(queue_settings, tmp_path)
    yield started
    started.stop_all()


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def enqueue(registry, name: str, ns=(0,), **kwargs) -> list[int]:
    """One ``name`` task per ``n`` in ``ns``, committed together; the relay publishes them, as in production."""
    manager = transaction.TransactionManager(explicit=True)
    with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS, manager=manager) as db:
        # A tiny delay skips the after-commit fast path.
        events = [registry["kloyst.queue"].enqueue(db, manager, name, delay=0.001, n=n, **kwargs) for n in ns]
        db.flush()
        return [e.id for e in events]


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


def outbox_events(registry, ids) -> dict[int, OutboxEvent]:
    with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:
        return {e.id: e for e in db.scalars(select(OutboxEvent).where(OutboxEvent.id.in_(ids)))}


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def seconds_after(moment: float, event: OutboxEvent) -> float:
    return event.delivered_at.timestamp() - moment


def test_a_task_whose_worker_is_killed_runs_in_another_worker_within_10_s_and_takes_effect_once(
        producer, processes, tmp_path):
    workers = {p.pid: p for p in (processes.start("WORKER"), processes.start("WORKER"))}
    processes.start("OUTBOX")
    marker = tmp_path / "running"
    [event_id] = enqueue(producer, "probe.sleep", seconds=60, marker=str(marker))
    wait_until(marker.exists, 30, "the task to start in a worker")
    victim = workers[int(marker.read_text())]
    victim.send_signal(signal.SIGKILL)  # no graceful anything: huey's copy of the task is gone
    killed_at = time.time()
    victim.wait(timeout=10)

    wait_until(lambda: done(producer) == {0: 1}, 2 * RECOVERY_SECONDS, "the task to run again")
    event = outbox_events(producer, [event_id])[event_id]
    assert seconds_after(killed_at, event) < RECOVERY_SECONDS
    assert int(marker.read_text()) != victim.pid, "the other worker ran it"
    assert event.status == OutboxStatus.DELIVERED and event.attempts == 2
    time.sleep(1)
    assert done(producer) == {0: 1}


def test_tasks_lost_with_a_flushed_redis_are_all_delivered_within_10_s_and_once(producer, processes, tmp_path):
    processes.start("WORKER")  # two threads, both kept busy below so that the queue fills
    processes.start("OUTBOX")
    markers = [tmp_path / "a", tmp_path / "b"]
    sleepers = [enqueue(producer, "probe.sleep", ns=[f"sleep-{m.name}"], seconds=4, marker=str(m))[0]
                for m in markers]
    wait_until(lambda: all(m.exists() for m in markers), 30, "both worker threads to be busy")
    ids = enqueue(producer, "probe.record", ns=range(20))
    queue = producer["kloyst.queue"]
    wait_until(lambda: queue.depth() == 20, 30, "the relay to publish the 20 tasks")
    queue.huey.storage.conn.flushdb()  # everything queued is gone
    flushed_at = time.time()

    wait_until(lambda: sum(done(producer).values()) == 22, 2 * RECOVERY_SECONDS, "all the tasks to run")
    delivered = outbox_events(producer, ids)
    assert max(seconds_after(flushed_at, e) for e in delivered.values()) < RECOVERY_SECONDS
    assert done(producer) == {**{n: 1 for n in range(20)}, "sleep-a": 1, "sleep-b": 1}
    assert {e.status for e in delivered.values()} == {OutboxStatus.DELIVERED}
    # The two running while Redis was flushed were locked by their workers: never taken back.
    assert {e.attempts for e in outbox_events(producer, sleepers).values()} == {1}


def test_a_relay_killed_between_claim_and_publish_has_its_batch_published_again_within_10_s(
        producer, processes):
    processes.start("WORKER")
    relay = processes.start("OUTBOX")
    relay.send_signal(signal.SIGSTOP)  # the live relay looks away while another one claims and dies
    try:
        ids = enqueue(producer, "probe.record", ns=range(5))
        claimed = processes.claim_and_die()
        died_at = time.time()
    finally:
        relay.send_signal(signal.SIGCONT)
    assert sorted(claimed["events"]) == sorted(ids)

    wait_until(lambda: sum(done(producer).values()) == 5, 2 * RECOVERY_SECONDS, "the claimed tasks to run")
    delivered = outbox_events(producer, ids)
    assert max(seconds_after(died_at, e) for e in delivered.values()) < RECOVERY_SECONDS
    assert done(producer) == {n: 1 for n in range(5)}
    assert {e.attempts for e in delivered.values()} == {2}
    assert {e.batch_id for e in delivered.values()} != {claimed["batch"]}


def test_the_same_task_delivered_twice_by_two_workers_takes_effect_once(producer, processes):
    [event_id] = enqueue(producer, "probe.record")
    relay = Relay(producer)
    batch, rows = relay.claim()
    queue = producer["kloyst.queue"]
    for _ in range(3):  # as if three relays had published it after crashes
        queue.publish_deliveries([(r.id, r.vendor_id, r.topic) for r in rows], batch)
    processes.start("WORKER")
    processes.start("WORKER")
    wait_until(lambda: queue.depth() == 0 and done(producer) == {0: 1}, 30, "the duplicates to be consumed")
    time.sleep(0.5)
    assert done(producer) == {0: 1}


def test_a_sigterm_ed_worker_finishes_the_task_in_hand_and_nobody_runs_it_again(producer, processes, tmp_path):
    worker = processes.start("WORKER")
    marker = tmp_path / "running"
    [event_id] = enqueue(producer, "probe.sleep", seconds=2, marker=str(marker))
    assert publish_all(producer) == 1
    wait_until(marker.exists, 30, "the task to start")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert done(producer) == {0: 1}
    event = outbox_events(producer, [event_id])[event_id]
    assert event.status == OutboxStatus.DELIVERED and event.attempts == 1


def test_a_sigterm_ed_relay_leaves_nothing_claimed_behind(producer, processes):
    relay = processes.start("OUTBOX")  # no worker: the queue fills to max_queue_depth and the relay waits
    enqueue(producer, "probe.record", ns=range(3000))
    queue = producer["kloyst.queue"]
    depth = producer.settings["kloyst.outbox.max_queue_depth"]
    wait_until(lambda: queue.depth() >= depth, 60, "the queue to fill")
    relay.send_signal(signal.SIGTERM)
    assert relay.wait(timeout=30) == 0
    with session_scope(producer["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:
        unpublished = db.scalar(
            select(func.count()).select_from(OutboxEvent).join(OutboxBatch, OutboxBatch.id == OutboxEvent.batch_id)
            .where(OutboxEvent.status == OutboxStatus.LEASED, OutboxBatch.published_at.is_(None)))
        leased = db.scalar(select(func.count()).where(OutboxEvent.status == OutboxStatus.LEASED))
    assert unpublished == 0, "every claimed batch was published and recorded before the relay stopped"
    assert leased == queue.depth()


def test_the_embedded_default_recovers_a_task_its_own_sigkill_interrupted_as_soon_as_it_restarts(
        embedded_processes, kloyst_settings, tmp_path):
    import probe_plugin

    settings = {**kloyst_settings, "kloyst.database.url": f"sqlite:///{tmp_path}/kloyst.sqlite",
                "kloyst.redis.url": "", "kloyst.queue.backend": "sqlite", "kloyst.queue.immediate": "false",
                "kloyst.queue.sqlite_path": str(tmp_path / "queue.sqlite"), "kloyst.log.dir": str(tmp_path / "log"),
                "kloyst.http.port": str(free_port())}
    local = make_configurator({"here": str(tmp_path)}, settings, extra_plugins=[("probe", probe_plugin)],
                              environ={}).registry
    migrate.upgrade(local["kloyst.plugin_manager"], local["kloyst.engine"])
    try:
        everything = embedded_processes.start("ALL", settings=settings)
        marker = tmp_path / "running"
        [event_id] = enqueue(local, "probe.sleep", seconds=60, marker=str(marker))
        wait_until(marker.exists, 30, "the task to start")
        everything.send_signal(signal.SIGKILL)
        everything.wait(timeout=10)
        assert done(local) == {}

        embedded_processes.start("ALL", settings={**settings, "kloyst.http.port": str(free_port())})
        restarted_at = time.time()
        wait_until(lambda: done(local) == {0: 1}, 2 * RECOVERY_SECONDS, "the task to run again")
        event = outbox_events(local, [event_id])[event_id]
        assert seconds_after(restarted_at, event) < RECOVERY_SECONDS / 2
        assert event.attempts == 2
    finally:
        local["kloyst.engine"].dispose()
