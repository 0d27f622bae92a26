"""Real WORKER processes (``kloyst run``, SERVICE_TYPE=WORKER, PostgreSQL and Redis) delivering to a real
receiver that verifies every signature: a worker SIGKILLed mid-delivery loses nothing — another worker takes
its deliveries back once its heartbeat stops, and only what it held can reach the receiver twice."""

from __future__ import annotations

import signal
import subprocess
import uuid

import pytest
from sqlalchemy import func, select
from vendor_webhooks_support import emit, endpoint, statuses, vendor, wait_for

from kloyst.db import tenancy
from kloyst.testing.deployment import KLOYST, process_env, write_ini
from kloyst_plugins.vendor_webhooks.models import WebhookDelivery

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_endpoints")]


@pytest.fixture
def start_worker(kloyst_settings, tmp_path):
    """``start_worker()``: ``kloyst run <ini>`` as a WORKER, on this test's database and its own Redis queue."""
    settings = {**kloyst_settings, "kloyst.queue.backend": "redis", "kloyst.queue.immediate": "false",
                "kloyst.queue.name": f"vw-{uuid.uuid4().hex[:8]}", "kloyst.log.dir": str(tmp_path / "log"),
                "messages.sender_enabled": "false", "vendor_webhooks.allow_http": "true",
                "vendor_webhooks.allow_loopback": "true", "vendor_webhooks.concurrency": "16",
                "vendor_webhooks.per_endpoint_concurrency": "8", "vendor_webhooks.retry_base_seconds": "0.2",
                "vendor_webhooks.retry_cap_seconds": "1"}
    ini = write_ini(tmp_path / "worker.ini", settings)
    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        log = (tmp_path / f"worker-{len(started)}.log").open("w")
        process = subprocess.Popen([KLOYST, "run", str(ini)], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
                                   env=process_env(SERVICE_TYPE="WORKER"))
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def delivering(db, endpoint_id) -> int:
    with tenancy.unscoped(db):
        count = db.scalar(select(func.count()).select_from(WebhookDelivery).where(
            WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.status == "DELIVERING"))
    db.commit()
    return count


def test_a_worker_killed_mid_delivery_loses_nothing(registry, committed_db, receiver, start_worker):
    shop = vendor(committed_db, registry, "Killed Co")
    hook, _ = endpoint(committed_db, registry, shop.vendor_id, receiver.url("/k"), receiver=receiver, path="/k")
    receiver.behave("/k", delay=0.1)  # 8 at a time: ~80 a second, so the kill lands mid-delivery
    total = 300
    emit(committed_db, registry, shop.vendor_id, total)
    first = start_worker()
    wait_for(lambda: len(receiver.events_at("/k")) >= 60 and delivering(committed_db, hook.id) > 0, 60,
             lambda: f"deliveries under way: {statuses(committed_db, hook.id)}")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    held = delivering(committed_db, hook.id)
    assert held > 0  # the dead worker held some: nobody else may send them until its heartbeat stops
    start_worker()
    wait_for(lambda: statuses(committed_db, hook.id) == {"DELIVERED": total}, 90,
             lambda: f"every delivery DELIVERED: {statuses(committed_db, hook.id)}")
    received = receiver.events_at("/k")
    ids = [r.event_id for r in received]
    assert len(set(ids)) == total and receiver.rejected == []
    assert len(ids) - total <= held  # twice only what was in flight at the kill
