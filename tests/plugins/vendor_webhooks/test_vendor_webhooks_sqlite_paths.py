"""The embedded default (SQLite, one process): endpoints on this machine are allowed there, events reach a
real local receiver signed, a failing attempt is retried, and the feed and the delivery log read the same."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
import webtest
from vendor_webhooks_support import FAST, PLUGINS, Receiver, wait_for

from kloyst import testing
from kloyst.api import events, Outbox
from kloyst.db import session_scope, tenancy
from kloyst.outbox.relay import relay_once
from kloyst_plugins.vendor_webhooks.deliverer import Deliverer


@pytest.fixture
def embedded(embedded_config):
    registry = embedded_config.registry
    # As development.ini says: a receiver on this machine, over http.
    registry.settings["vendor_webhooks.allow_http"] = True
    registry.settings["vendor_webhooks.allow_loopback"] = True
    factory = registry["kloyst.session_factory"]
    with session_scope(factory, vendor_id=tenancy.ALL_VENDORS) as db:
        account = testing.AccountFactory(db, registry["kloyst.access_tokens"]).vendor("Embedded Co")
        for plugin in PLUGINS:
            testing.enable_plugin(db, account.vendor_id, plugin)
    app = webtest.TestApp(embedded_config.make_wsgi_app(), extra_environ={"REMOTE_ADDR": "192.0.2.7"})
    return registry, app, account


def emit(registry, vendor_id, items) -> None:
    with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:
        events.record_events(Outbox(db), vendor_id, items)
    while relay_once(registry):
        pass


def test_on_the_embedded_default_events_reach_a_local_receiver_and_the_feed(embedded):
    registry, app, account = embedded
    receiver = Receiver().start()
    try:
        refused = app.post_json("/v1/webhook-endpoints", {"url": "http://10.0.0.8/x", "event_types": ["*"]},
                                headers=account.headers, status=422).json
        assert "private address" in refused["error"]["message"]
        created = app.post_json("/v1/webhook-endpoints", {"url": receiver.url("/e"), "event_types": ["*"]},
                                headers=account.headers, status=201).json
        receiver.secret("/e", created["secret"])
        receiver.behave("/e", status=503)  # the first attempts fail, then it recovers
        contacts = [uuid.uuid4() for _ in range(20)]
        emit(registry, account.vendor_id, [events.ContactCreated(contact_id=c, source="api") for c in contacts])
        deliverer = Deliverer(registry, dataclasses.replace(FAST, concurrency=4)).start()
        try:
            log_path = f"/v1/webhook-endpoints/{created['endpoint']['id']}/deliveries?limit=200"
            wait_for(lambda: any(d["last_status_code"] == 503
                                 for d in app.get(log_path, headers=account.headers).json["items"]), 10, "a 503")
            receiver.behave("/e", status=200)
            wait_for(lambda: len({r.event_id for r in receiver.events_at("/e")}) == 20, 20,
                     lambda: app.get(log_path, headers=account.headers).json["items"][:3])
            wait_for(lambda: {d["status"] for d in app.get(log_path, headers=account.headers).json["items"]}
                     == {"DELIVERED"}, 10, "every delivery recorded as delivered")
        finally:
            deliverer.stop(10)
        assert receiver.rejected == []
        assert sorted(r.body["data"]["contact_id"] for r in receiver.events_at("/e")) == sorted(map(str, contacts))
        feed = app.get("/v1/events?limit=200", headers=account.headers).json
        assert [e["data"]["contact_id"] for e in feed["items"]] == [str(c) for c in contacts]
        assert app.get(f"/v1/events?after={feed['next_cursor']}", headers=account.headers).json["items"] == []
    finally:
        receiver.stop()
