"""The core's metrics move when the thing they count happens: requests, webhooks, the outbox, the queue.

Values are read the way a scrape reads them (``Metrics.value``), with the shared, scrape-time
gauges exported as an OUTBOX or ALL process exports them. The application is shared by the
whole run, so counters are compared before and after.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from prometheus_client import generate_latest
from webhooks_support import post, sign, status, statuses

from kloyst import metrics as kmetrics
from kloyst.db import utcnow
from kloyst.metrics.collectors import QueueDepth
from kloyst.outbox.models import OutboxEvent, OutboxStatus
from kloyst.queue import Queue, build_huey
from kloyst.webhooks.drainer import drain_once

DURATION_COUNT = "kloyst_http_request_duration_seconds_count"


@pytest.fixture
def metrics(registry):
    return kmetrics.of(registry).export_shared()


def test_the_app_has_its_own_metrics_registry_not_prometheus_clients_global_one(registry):
    from prometheus_client import REGISTRY

    metrics = kmetrics.of(registry)
    assert metrics.registry is not REGISTRY
    assert REGISTRY.get_sample_value(DURATION_COUNT, {"route": "ops.healthz", "method": "GET", "status": "200"}) \
        is None


def test_an_api_request_is_timed_under_its_route_name_method_and_status(testapp, metrics):
    labels = {"route": "ops.healthz", "method": "GET", "status": "200"}
    before = metrics.value(DURATION_COUNT, **labels)
    before_inf = metrics.value("kloyst_http_request_duration_seconds_bucket", **labels, le="+Inf")
    testapp.get("/healthz")
    assert metrics.value(DURATION_COUNT, **labels) == before + 1
    assert metrics.value("kloyst_http_request_duration_seconds_bucket", **labels, le="+Inf") == before_inf + 1
    assert metrics.value("kloyst_http_request_duration_seconds_sum", **labels) > 0


def test_an_error_is_counted_under_its_status_and_a_request_of_a_routed_path_under_the_route(testapp, metrics,
                                                                                              owner):
    labels = {"route": "auth.me", "method": "GET", "status": "401"}
    before = metrics.value(DURATION_COUNT, **labels)
    testapp.get("/v1/auth/me", status=401)
    assert metrics.value(DURATION_COUNT, **labels) == before + 1
    ok = {"route": "auth.me", "method": "GET", "status": "200"}
    before_ok = metrics.value(DURATION_COUNT, **ok)
    testapp.get("/v1/auth/me", headers=owner.headers)
    assert metrics.value(DURATION_COUNT, **ok) == before_ok + 1


def test_paths_no_route_matched_share_one_series_so_raw_paths_never_become_labels(testapp, metrics):
    labels = {"route": "unmatched", "method": "GET", "status": "404"}
    before = metrics.value(DURATION_COUNT, **labels)
    marker = uuid.uuid4().hex
    testapp.get(f"/v1/no-such-{marker}/1", status=404)
    testapp.get(f"/v1/no-such-{marker}/2", status=404)
    assert metrics.value(DURATION_COUNT, **labels) == before + 2
    assert marker not in generate_latest(metrics.registry).decode()


def test_a_method_outside_the_usual_set_is_labelled_other(testapp, metrics):
    labels = {"route": "ops.healthz", "method": "OTHER"}
    before = sum(metrics.value(DURATION_COUNT, **labels, status=code) for code in ("404", "405"))
    testapp.request("/healthz", method="BREW", status="*")
    assert sum(metrics.value(DURATION_COUNT, **labels, status=code) for code in ("404", "405")) == before + 1


def test_webhook_posts_are_counted_by_outcome_and_timed_under_the_webhook_route(testapp, metrics, build):
    line = build.line()
    body = statuses(line, status("wamid.metrics-1", "sent"))
    outcomes = ("accepted", "invalid_signature")
    before = {o: metrics.value("kloyst_webhook_deliveries_received_total", outcome=o) for o in outcomes}
    timed = {"route": "webhooks.whatsapp", "method": "POST", "status": "200"}
    before_timed = metrics.value(DURATION_COUNT, **timed)
    post(testapp, body)
    post(testapp, body, signature=sign(b"another body"), status=401)
    after = {o: metrics.value("kloyst_webhook_deliveries_received_total", outcome=o) for o in outcomes}
    assert after == {o: before[o] + 1 for o in outcomes}
    assert metrics.value(DURATION_COUNT, **timed) == before_timed + 1


def test_the_webhook_backlog_shows_a_delivery_from_its_200_until_the_drainer_has_applied_it(testapp, registry,
                                                                                           metrics, build):
    line = build.line()
    backlog_before = metrics.value("kloyst_webhook_backlog")
    processed_before = metrics.value("kloyst_webhook_deliveries_drained_total", outcome="processed")
    post(testapp, statuses(line, status("wamid.metrics-2", "sent")))
    assert metrics.value("kloyst_webhook_backlog") == backlog_before + 1
    drain_once(registry)
    assert metrics.value("kloyst_webhook_backlog") == backlog_before
    assert metrics.value("kloyst_webhook_deliveries_drained_total", outcome="processed") == processed_before + 1


def test_a_malformed_delivery_is_counted_as_such_by_the_drainer(testapp, registry, metrics):
    before = metrics.value("kloyst_webhook_deliveries_drained_total", outcome="malformed")
    post(testapp, b'{"object": "whatsapp_business_account", "entry": "not a list"}')
    drain_once(registry)
    assert metrics.value("kloyst_webhook_deliveries_drained_total", outcome="malformed") == before + 1


def test_outbox_backlog_and_oldest_age_reflect_pending_events(db, metrics):
    pending_before = metrics.value("kloyst_outbox_pending_events")
    dead_before = metrics.value("kloyst_outbox_dead_events")
    now = utcnow()
    db.add_all([
        # Due for 90 s, in a vendor's line: the relay is that far behind.
        OutboxEvent(vendor_id=uuid.uuid4(), topic="metrics.test", available_at=now - dt.timedelta(seconds=90)),
        # A platform event, due now.
        OutboxEvent(vendor_id=None, topic="metrics.test", available_at=now),
        # Scheduled for later: pending, but nobody is late with it.
        OutboxEvent(vendor_id=uuid.uuid4(), topic="metrics.test", available_at=now + dt.timedelta(hours=1)),
        OutboxEvent(vendor_id=uuid.uuid4(), topic="metrics.test", status=OutboxStatus.DEAD, failures=10),
    ])
    db.commit()
    assert metrics.value("kloyst_outbox_pending_events") == pending_before + 3
    assert 90 <= metrics.value("kloyst_outbox_oldest_pending_age_seconds") < 90 + 60
    assert metrics.value("kloyst_outbox_dead_events") == dead_before + 1


def test_only_events_scheduled_for_later_make_no_age(db, metrics):
    db.query(OutboxEvent).filter(OutboxEvent.status == OutboxStatus.PENDING).delete()
    db.add(OutboxEvent(vendor_id=uuid.uuid4(), topic="metrics.test", available_at=utcnow() + dt.timedelta(hours=1)))
    db.commit()
    assert metrics.value("kloyst_outbox_pending_events") == 1
    assert metrics.value("kloyst_outbox_oldest_pending_age_seconds") == 0


def test_published_outbox_events_are_counted(registry, db, metrics, run_outbox):
    before = metrics.value("kloyst_outbox_published_events_total")
    db.add(OutboxEvent(vendor_id=None, topic="metrics.unknown-topic", available_at=utcnow()))
    db.commit()
    run_outbox()
    assert metrics.value("kloyst_outbox_published_events_total") >= before + 1


def test_queue_depth_is_what_waits_in_redis(registry, kloyst_redis_url, redis_client):
    huey = build_huey({"kloyst.queue.backend": "redis", "kloyst.queue.name": "metrics-test",
                       "kloyst.queue.immediate": False, "kloyst.redis.url": kloyst_redis_url})
    queue = Queue(huey, registry)
    depth = QueueDepth({"kloyst.queue": queue})
    assert [s.value for f in depth.collect() for s in f.samples] == [0]
    queue.publish_deliveries([(1, None, "metrics.test"), (2, str(uuid.uuid4()), "metrics.test")], 7)
    assert [s.value for f in depth.collect() for s in f.samples] == [2]


def test_a_failing_scrape_time_read_exports_nothing_and_the_rest_is_still_served(registry, metrics, monkeypatch,
                                                                                 caplog):
    from kloyst.metrics import collectors

    monkeypatch.setattr(collectors, "_PENDING_COUNT", collectors.text("SELECT count(*) FROM no_such_table"))
    metrics.expire_shared()
    text = generate_latest(metrics.registry).decode()
    assert "kloyst_outbox_pending_events" not in text
    assert "kloyst_http_request_duration_seconds" in text and "kloyst_queue_depth" in text
    assert "reading outbox failed" in caplog.text


def test_a_scrape_time_read_is_cached_for_its_interval(db, metrics):
    [outbox] = [c for c in metrics.shared_collectors if type(c).__name__ == "OutboxGauges"]
    outbox.expire()
    first = {s.name: s.value for f in outbox.collect() for s in f.samples}
    db.add(OutboxEvent(vendor_id=None, topic="metrics.test", available_at=utcnow()))
    db.commit()
    assert {s.name: s.value for f in outbox.collect() for s in f.samples} == first  # within min_interval
    outbox.expire()
    again = {s.name: s.value for f in outbox.collect() for s in f.samples}
    assert again["kloyst_outbox_pending_events"] == first["kloyst_outbox_pending_events"] + 1


def test_the_build_info_names_the_version_and_the_service_mode(registry, metrics):
    import kloyst

    assert metrics.value("kloyst_build_info", version=kloyst.__version__,
                         service=registry.settings["kloyst.service_type"]) == 1
