"""Retention in the deployments people run: an OUTBOX process on PostgreSQL and Redis (directly and through
PgBouncer), and the embedded default's one process on SQLite, each prune what has expired on their own timer and
stop cleanly on SIGTERM.

The rows are aged by hand (a week and a day old); ``RETENTION_INTERVAL_SECONDS=1`` makes the first pass
come a second after start-up instead of a minute.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import urllib.request
import uuid

import pytest
import sqlalchemy as sa
from e2e_support import http_json

from kloyst import testing
from kloyst.testing.deployment import Deployment, process_env, staging_settings
from kloyst.testing.processes import eventually, free_port
from kloyst.outbox.models import OutboxEvent
from kloyst.webhooks.models import WebhookDelivery

pytestmark = pytest.mark.slow

EXPIRED = 2_000  # delivered outbox events past their week: several batches of a smaller RETENTION_BATCH_SIZE


def _seed(engine: sa.Engine, expired: int = EXPIRED) -> None:
    """Expired and kept rows of the core's two policies, written as the relay and the drainer leave them.

    Ten processed deliveries (``processed_at = received_at``, a week and a day ago) and one not processed yet:
    only a drainer may take that one (on the embedded default it does, and the malformed body is its error).
    """
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=8)
    outbox, deliveries = OutboxEvent.__table__, WebhookDelivery.__table__
    event = {"vendor_id": None, "topic": "retention.test", "payload": {}, "attempts": 1, "failures": 0,
             "available_at": old, "created_at": old}
    with engine.begin() as connection:
        connection.execute(outbox.insert(), [{**event, "status": "delivered", "delivered_at": old}] * expired
                           + [{**event, "status": "dead", "delivered_at": None}])
        connection.execute(deliveries.insert(), [
            {"dedupe_key": hashlib.sha256(uuid.uuid4().bytes).digest(), "body": b"{}", "received_at": old,
             "next_attempt_at": old, "attempts": 0, "processed_at": old if n else None} for n in range(11)])


def _left(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return dict(connection.execute(sa.text(
            "SELECT 'delivered', count(*) FROM outbox_event WHERE status = 'delivered' UNION ALL "
            "SELECT 'dead', count(*) FROM outbox_event WHERE status = 'dead' UNION ALL "
            "SELECT 'processed', count(*) FROM webhook_delivery WHERE processed_at = received_at")).all())


def _wait_pruned(engine: sa.Engine, service_output, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _left(engine) == {"delivered": 0, "dead": 1, "processed": 0}:
            return
        time.sleep(0.5)
    raise AssertionError(f"not pruned within {timeout} s: {_left(engine)}\n{service_output()}")


def test_an_outbox_process_on_postgresql_prunes_on_its_timer_and_stops_cleanly(request, tmp_path, kloyst_redis_url,
                                                                               kloyst_route):
    worker = getattr(request.config, "workerinput", {}).get("workerid", "main")
    name = f"kloyst_retention_{worker}"
    database_url = testing.create_database(name)
    engine = sa.create_engine(database_url)
    deployment = Deployment.from_settings(tmp_path, staging_settings(
        kloyst_route(database_url), kloyst_redis_url, queue="retention",
        **{"kloyst.retention.interval_seconds": "1", "kloyst.retention.batch_size": "500"}))
    outbox = deployment.add("outbox", "OUTBOX")
    try:
        done = deployment.cli("db", "upgrade")
        assert done.returncode == 0, done.stdout + done.stderr
        _seed(engine)
        deployment.start()
        _wait_pruned(engine, outbox.tail)
        with engine.connect() as connection:  # OUTBOX runs no drainer: the unprocessed delivery is untouched
            assert connection.scalar(sa.text("SELECT count(*) FROM webhook_delivery WHERE processed_at IS NULL")) == 1
        assert http_json(f"http://127.0.0.1:{outbox.metrics_port}/healthz")[0] == 200
        metrics_url = f"http://127.0.0.1:{outbox.metrics_port}/metrics"
        urllib.request.urlopen(metrics_url, timeout=5).read()  # a series' first scrape shows it at 0
        scraped = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
        assert f'kloyst_retention_removed_rows_total{{policy="kloyst.outbox_events"}} {EXPIRED}.0' in scraped
        assert 'kloyst_retention_removed_rows_total{policy="messages.messages"} 0.0' in scraped
        assert deployment.stop() == {"outbox": 0}
        log = "".join(path.read_text() for path in (tmp_path / "log").glob("app-*.log"))
        assert f"retention: kloyst.outbox_events: {EXPIRED} older than 7 days" in log
        assert "retention: kloyst.webhook_deliveries: 10 older than 7 days" in log
    finally:
        deployment.kill_all()
        engine.dispose()
        testing.drop_database(name)


def test_an_outbox_process_killed_in_the_middle_of_a_pass_loses_nothing_and_the_next_pass_finishes(
        request, tmp_path, kloyst_redis_url):
    """SIGKILL while a pass is deleting: every batch is its own transaction, so what was not committed is still
    there, nothing that must stay went, and the restarted process prunes the rest."""
    worker = getattr(request.config, "workerinput", {}).get("workerid", "main")
    name = f"kloyst_retention_kill_{worker}"
    database_url = testing.create_database(name)
    engine = sa.create_engine(database_url)
    expired = 60_000
    deployment = Deployment.from_settings(tmp_path, staging_settings(
        database_url, kloyst_redis_url, queue="retention-kill",
        **{"kloyst.retention.interval_seconds": "1", "kloyst.retention.batch_size": "500"}))
    outbox = deployment.add("outbox", "OUTBOX")
    try:
        done = deployment.cli("db", "upgrade")
        assert done.returncode == 0, done.stdout + done.stderr
        _seed(engine, expired)
        deployment.start()
        in_the_middle = eventually(lambda: _left(engine), lambda left: left["delivered"] < expired,
                                   "the pass to start deleting", 60, pause=0.02)
        outbox.kill()
        after_kill = _left(engine)
        assert 0 < after_kill["delivered"] <= in_the_middle["delivered"], (in_the_middle, after_kill)
        assert after_kill["dead"] == 1
        with engine.connect() as connection:  # the delivery no drainer processed is never the pass's to take
            assert connection.scalar(sa.text("SELECT count(*) FROM webhook_delivery WHERE processed_at IS NULL")) == 1
        deployment.start()
        _wait_pruned(engine, outbox.tail)
        assert deployment.stop() == {"outbox": 0}
    finally:
        deployment.kill_all()
        engine.dispose()
        testing.drop_database(name)


def test_the_embedded_default_prunes_in_its_one_process(embedded_ini, start_kloyst):
    port = free_port()
    service = start_kloyst("run", str(embedded_ini), env=process_env(PORT=str(port),
                                                                      RETENTION_INTERVAL_SECONDS="1"))
    service.wait_for_http(f"http://127.0.0.1:{port}/healthz")
    engine = sa.create_engine(f"sqlite:///{embedded_ini.parent / 'var' / 'kloyst.sqlite'}",
                              connect_args={"timeout": 30})
    try:
        _seed(engine)
        _wait_pruned(engine, service.output)
    finally:
        engine.dispose()
    assert service.terminate() == 0
