"""The drainer: each body applied once, per vendor, through the vendor's enabled plugins; failures retried, bounded."""

import datetime as dt
import logging
import threading
import uuid

import pytest
from sqlalchemy import func, select, update
from webhooks_support import PLUGINS, Line, deliveries, envelope, meta_id, post, status, statuses

from kloyst.db import tenancy, utcnow
from kloyst.outbox import OutboxEvent
from kloyst.webhooks import deliveries as delivery_rows
from kloyst.webhooks.drainer import LEASE_SECONDS, Drainer, drain_once
from kloyst.webhooks.models import WebhookDelivery
from kloyst_plugins.messages import webhooks as messages_webhooks
from kloyst_plugins.messages.models import MessageStatus, MessageStatusEvent
from kloyst_plugins.waba.models import PhoneNumber


def _make_due(db) -> None:
    db.execute(update(WebhookDelivery).values(next_attempt_at=utcnow()))
    db.commit()


def test_the_same_delivery_twice_has_one_effect(testapp, registry, db, build):
    line = build.line()
    message = build.message(line)
    body = statuses(line, status(message.wamid, "delivered"))
    post(testapp, body)
    post(testapp, body)  # Meta retries with the same bytes
    drain_once(registry)
    post(testapp, body)  # ... also after the first copy was applied
    drain_once(registry)
    assert len(deliveries(db)) == 1
    with tenancy.unscoped(db):
        assert db.scalar(select(func.count()).select_from(MessageStatusEvent)
                         .where(MessageStatusEvent.wamid == message.wamid)) == 1
    assert build.reload(message).status == MessageStatus.DELIVERED.value


def test_a_change_for_a_number_nobody_holds_is_acknowledged_dropped_and_logged(testapp, registry, db, caplog):
    stranger = Line(uuid.uuid4(), PhoneNumber(meta_phone_number_id=meta_id()), meta_id())
    post(testapp, statuses(stranger, status("wamid.stranger", "read")), status=200)
    with caplog.at_level(logging.WARNING, logger="kloyst.webhooks.drainer"):
        drain_once(registry)
    assert f"phone number {stranger.meta_phone_number_id}: no vendor holds them; dropped" in caplog.text
    [delivery] = deliveries(db)
    assert delivery.processed_at is not None and delivery.error is None
    with tenancy.unscoped(db):
        assert db.scalar(select(func.count()).select_from(MessageStatusEvent)) == 0


def test_a_failing_delivery_is_retried_later_without_holding_back_the_others(testapp, registry, db, build,
                                                                            monkeypatch):
    line = build.line()
    good, bad = build.message(line), build.message(line)
    apply_statuses = messages_webhooks.apply_statuses

    def flaky(ctx, updates):
        if any(update.wamid == bad.wamid for update in updates):
            raise RuntimeError("database hiccup")
        apply_statuses(ctx, updates)

    monkeypatch.setattr(messages_webhooks, "apply_statuses", flaky)
    post(testapp, statuses(line, status(bad.wamid, "delivered")))
    post(testapp, statuses(line, status(good.wamid, "delivered")))
    drain_once(registry)  # both in one batch: the vendor's transaction fails, then each delivery alone
    assert build.reload(good).status == MessageStatus.DELIVERED.value
    assert build.reload(bad).status == MessageStatus.SENT.value
    failed, done = deliveries(db)
    assert done.processed_at is not None
    assert failed.processed_at is None and failed.attempts == 1
    assert failed.error == "RuntimeError: database hiccup"
    assert failed.next_attempt_at > utcnow()
    assert drain_once(registry) == 0  # not due yet

    monkeypatch.setattr(messages_webhooks, "apply_statuses", apply_statuses)
    _make_due(db)
    drain_once(registry)
    assert build.reload(bad).status == MessageStatus.DELIVERED.value
    retried = deliveries(db)[0]
    assert retried.processed_at is not None and retried.error is None


def test_a_delivery_failing_every_attempt_is_left_processed_with_its_error(testapp, registry, db, build,
                                                                          monkeypatch, caplog):
    monkeypatch.setitem(registry.settings, "kloyst.webhooks.max_attempts", 2)

    def broken(ctx, updates):
        raise ValueError("cannot apply")

    monkeypatch.setattr(messages_webhooks, "apply_statuses", broken)
    line = build.line()
    post(testapp, statuses(line, status(build.message(line).wamid, "read")))
    drain_once(registry)
    assert deliveries(db)[0].processed_at is None
    _make_due(db)
    with caplog.at_level(logging.ERROR, logger="kloyst.webhooks.drainer"):
        drain_once(registry)
    [given_up] = deliveries(db)
    assert (given_up.attempts, given_up.error) == (2, "ValueError: cannot apply")
    assert given_up.processed_at is not None
    assert "failed 2 times; giving up" in caplog.text


@pytest.mark.parametrize("body, problem", [(b'{"hello": "world"}', "no entry list"), (b"not json", "not JSON")])
def test_a_signed_body_that_is_not_an_envelope_keeps_its_error_and_is_not_retried(testapp, registry, db, body,
                                                                                 problem):
    post(testapp, body)
    drain_once(registry)
    [delivery] = deliveries(db)
    assert delivery.processed_at is not None
    assert problem in delivery.error


def test_another_products_webhook_is_processed_without_effect(testapp, registry, db):
    post(testapp, b'{"object": "page", "entry": [{"id": "1", "changes": [{"field": "feed", "value": {}}]}]}')
    drain_once(registry)
    [delivery] = deliveries(db)
    assert delivery.processed_at is not None and delivery.error is None


def test_deliveries_its_process_stores_are_handed_to_the_drainer_already_claimed(testapp, registry, db, build):
    line = build.line()
    message = build.message(line)
    drainer = Drainer(registry)
    committer = registry["kloyst.webhook_receiver"].committer
    committer.attach(drainer)
    try:
        post(testapp, statuses(line, status(message.wamid, "read")))
    finally:
        committer.detach(drainer)
    [stored] = deliveries(db)
    assert stored.next_attempt_at > utcnow()  # under this drainer's lease: no other drainer's claim takes it
    assert drain_once(registry) == 0
    assert drainer.drain_once() == 1  # from its hand, without a claim
    assert build.reload(message).status == MessageStatus.READ.value
    assert deliveries(db)[0].processed_at is not None


def test_a_stopping_drainer_gives_back_what_it_holds_for_the_others_at_once(testapp, registry, db, build):
    line = build.line()
    message = build.message(line)
    drainer = Drainer(registry)
    committer = registry["kloyst.webhook_receiver"].committer
    committer.attach(drainer)
    post(testapp, statuses(line, status(message.wamid, "delivered")))
    stop = threading.Event()
    stop.set()
    drainer.run(stop)  # stopped before a pass: what it holds goes back
    assert deliveries(db)[0].next_attempt_at <= utcnow()
    assert drain_once(registry) == 1
    assert build.reload(message).status == MessageStatus.DELIVERED.value
    post(testapp, statuses(line, status(message.wamid, "read")))  # the stopped drainer no longer takes any
    assert drain_once(registry) == 1


def test_a_drainer_leaves_alone_what_another_drainer_holds_under_its_lease(registry, db, build):
    line = build.line()
    message = build.message(line)
    delivery_rows.store(db, [(statuses(line, status(message.wamid, "delivered")), utcnow())],
                        next_attempt_at=utcnow() + dt.timedelta(seconds=LEASE_SECONDS))
    db.commit()
    assert drain_once(registry) == 0
    assert build.reload(message).status == MessageStatus.SENT.value


def test_a_delivery_whose_claim_ran_out_is_applied_by_the_next_drainer(registry, db, build):
    line = build.line()
    message = build.message(line)
    # Stored by a drainer that died before applying it; its lease ended a second ago.
    delivery_rows.store(db, [(statuses(line, status(message.wamid, "delivered")), utcnow())],
                        next_attempt_at=utcnow() - dt.timedelta(seconds=1))
    db.commit()
    assert drain_once(registry) == 1
    assert build.reload(message).status == MessageStatus.DELIVERED.value


def test_a_plugin_applies_a_field_of_its_own_only_for_vendors_that_enabled_it(testapp, registry, db, build):
    with_probe = build.line("With probe", plugins=(*PLUGINS, "probe"))
    without = build.line("Without probe")
    post(testapp, envelope(with_probe, {"n": 1}, field="probe_field"))
    post(testapp, envelope(without, {"n": 2}, field="probe_field"))
    drain_once(registry)
    recorded = db.scalars(select(OutboxEvent).where(OutboxEvent.topic == "probe.done")).all()
    assert [(event.payload["n"], event.vendor_id) for event in recorded] == [(1, with_probe.vendor_id)]
    assert recorded[0].payload["meta_waba_id"] == with_probe.meta_waba_id
