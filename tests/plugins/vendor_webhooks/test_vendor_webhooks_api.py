"""The endpoints API (validation, no server-side request forgery, a secret shown once and rotated), the
delivery log and redelivery, and the event feed (order, cursor, types, decrypted inbound messages)."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from sqlalchemy import select

from kloyst.api import events, Outbox, utcnow
from kloyst.db import tenancy
from kloyst_plugins.messages.models import InboundMessage
from kloyst_plugins.messages.webhooks import INBOUND_FIELD
from kloyst_plugins.vendor_webhooks.models import WebhookDelivery, WebhookEndpoint
from kloyst_plugins.vendor_webhooks.sealing import endpoint_secrets
from kloyst_plugins.waba.access import encrypt_waba_token
from kloyst_plugins.waba.models import PhoneNumber, Waba

PLUGINS = ("contacts", "waba", "templates", "wallet", "pricing", "messages", "vendor_webhooks")
PUBLIC = "https://93.184.215.14/kloyst-events"  # an IP literal: registration needs no DNS in the test


@pytest.fixture
def shop(accounts, enable_plugin):
    account = accounts.vendor("Hooks Co")
    for name in PLUGINS:
        enable_plugin(account, name)
    return account


def create(testapp, account, status=201, **body):
    body = {"url": PUBLIC, "event_types": ["ContactCreated"], **body}
    return testapp.post_json("/v1/webhook-endpoints", body, headers=account.headers, status=status).json


def record(db, run_outbox, vendor_id, *items: events.Event) -> None:
    events.record_events(Outbox(db), vendor_id, items)
    db.commit()
    run_outbox()


def test_creating_an_endpoint_shows_its_secret_once(testapp, shop, db, registry):
    answer = create(testapp, shop, event_types=["ContactCreated", "MessageReceived", "ContactCreated"],
                    description="CRM sync")
    endpoint = answer["endpoint"]
    assert answer["secret"].startswith("whsec_") and len(answer["secret"]) > 40
    assert endpoint["event_types"] == ["ContactCreated", "MessageReceived"] and endpoint["enabled"] is True
    shown = testapp.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=shop.headers).json
    assert "secret" not in shown["endpoint"] and shown["endpoint"]["url"] == PUBLIC
    row = db.get(WebhookEndpoint, uuid.UUID(endpoint["id"]))
    assert answer["secret"].encode() not in row.secret_enc  # sealed at rest
    cipher = registry["kloyst.cipher"]
    assert endpoint_secrets(cipher, shop.vendor_id, row.secret_enc, None, None) == (answer["secret"],)


@pytest.mark.parametrize(("url", "says"), [
    ("http://93.184.215.14/hook", "must use https://"),
    ("ftp://93.184.215.14/hook", "must start with https://"),
    ("https://user:pass@93.184.215.14/hook", "must not carry a user name or password"),
    ("https://127.0.0.1/hook", "127.0.0.1 is a loopback address"),
    ("https://localhost:8443/hook", "is a loopback address"),
    ("https://[::1]/hook", "::1 is a loopback address"),
    ("https://[::ffff:127.0.0.1]/hook", "127.0.0.1 is a loopback address"),
    ("https://10.0.0.5/hook", "10.0.0.5 is a private address"),
    ("https://192.168.1.20/hook", "is a private address"),
    ("https://169.254.169.254/latest/meta-data", "169.254.169.254 is a private address"),
    ("https://224.0.0.1/hook", "is a multicast address"),
    ("https://0.0.0.0/hook", "is a"),
    ("https://240.0.0.1/hook", "is a"),
    ("https://100.64.0.1/hook", "100.64.0.1 is not a public address"),
    ("https://no-such-host.invalid/hook", "does not resolve"),
    ("https:///hook", "has no host"),
])
def test_an_endpoint_that_could_reach_inside_kloyst_is_refused(testapp, shop, url, says):
    """The staging rule (staging.ini sets nothing: https only, public addresses only)."""
    answer = create(testapp, shop, status=422, url=url)
    assert answer["error"]["code"] == "unsafe_url"
    assert says in answer["error"]["message"], answer["error"]["message"]


def test_loopback_over_http_is_allowed_where_the_embedded_default_allows_it_and_private_still_is_not(
        testapp, shop, registry, monkeypatch):
    monkeypatch.setitem(registry.settings, "vendor_webhooks.allow_http", True)
    monkeypatch.setitem(registry.settings, "vendor_webhooks.allow_loopback", True)
    assert create(testapp, shop, url="http://127.0.0.1:9999/hook")["endpoint"]["url"] == "http://127.0.0.1:9999/hook"
    assert "is a private address" in create(testapp, shop, status=422, url="http://10.1.2.3/hook")["error"]["message"]


def test_unknown_event_types_are_refused_with_the_known_ones_named(testapp, shop):
    answer = create(testapp, shop, status=422, event_types=["ContactCreated", "MessageExploded"])
    assert answer["error"]["code"] == "unknown_event_type"
    assert "MessageExploded" in answer["error"]["message"] and "MessageReceived" in answer["error"]["message"]
    create(testapp, shop, status=422, event_types=[])


def test_patch_checks_what_it_changes_and_rotation_keeps_the_old_secret_signing_for_a_while(testapp, shop, db,
                                                                                          registry):
    created = create(testapp, shop)
    path = f"/v1/webhook-endpoints/{created['endpoint']['id']}"
    patched = testapp.patch_json(path, {"enabled": False, "event_types": ["*"]}, headers=shop.headers).json
    assert patched["endpoint"]["enabled"] is False and patched["endpoint"]["event_types"] == ["*"]
    refused = testapp.patch_json(path, {"url": "https://10.0.0.1/x"}, headers=shop.headers, status=422).json
    assert refused["error"]["details"]["fields"][0]["field"] == "url"
    rotated = testapp.post_json(path + "/rotate-secret", {}, headers=shop.headers).json
    assert rotated["secret"] != created["secret"]
    assert rotated["endpoint"]["previous_secret_expires_at"] is not None
    row = db.get(WebhookEndpoint, uuid.UUID(created["endpoint"]["id"]))
    db.refresh(row)
    assert endpoint_secrets(registry["kloyst.cipher"], shop.vendor_id, row.secret_enc, row.previous_secret_enc,
                            row.previous_secret_expires_at) == (rotated["secret"], created["secret"])
    testapp.delete(path, headers=shop.headers, status=204)
    testapp.get(path, headers=shop.headers, status=404)


def test_endpoints_are_listed_newest_first_with_a_cursor(testapp, shop):
    ids = [create(testapp, shop)["endpoint"]["id"] for _ in range(3)]
    first = testapp.get("/v1/webhook-endpoints?limit=2", headers=shop.headers).json
    second = testapp.get(f"/v1/webhook-endpoints?limit=2&cursor={first['next_cursor']}", headers=shop.headers).json
    assert [e["id"] for e in first["items"] + second["items"]] == ids[::-1] and second["next_cursor"] is None


def test_a_vendor_may_register_only_so_many_endpoints(testapp, shop, registry, monkeypatch):
    monkeypatch.setitem(registry.settings, "vendor_webhooks.max_endpoints", 2)
    create(testapp, shop)
    create(testapp, shop)
    assert create(testapp, shop, status=409)["error"]["code"] == "too_many_endpoints"


def test_each_subscribed_event_becomes_a_delivery_in_the_endpoints_log_and_can_be_redelivered(
        testapp, shop, db, run_outbox):
    endpoint_id = create(testapp, shop, event_types=["ContactOptedOut"])["endpoint"]["id"]
    contact = uuid.uuid4()
    record(db, run_outbox, shop.vendor_id, events.ContactCreated(contact_id=contact, source="api"),
           events.ContactOptedOut(contact_id=contact, source="api"))
    log = testapp.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries", headers=shop.headers).json
    (item,) = log["items"]
    assert item["event_type"] == "ContactOptedOut" and item["status"] == "PENDING" and item["attempts"] == 0
    assert item["event_id"].startswith("evt_") and item["next_attempt_at"] is not None
    delivery = db.get(WebhookDelivery, uuid.UUID(item["id"]))
    delivery.status, delivery.next_attempt_at, delivery.last_error = "DEAD", None, "HTTP 500"
    db.commit()
    assert testapp.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries?status=DEAD",
                       headers=shop.headers).json["items"][0]["id"] == item["id"]
    again = testapp.post_json(f"/v1/webhook-deliveries/{item['id']}/redeliver", {}, headers=shop.headers).json
    assert again["delivery"]["status"] == "PENDING" and again["delivery"]["next_attempt_at"] is not None
    db.refresh(delivery)
    delivery.status = "DEAD"
    db.commit()
    assert testapp.post_json(f"/v1/webhook-endpoints/{endpoint_id}/redeliver", {},
                             headers=shop.headers).json == {"redelivered": 1}
    assert testapp.post_json(f"/v1/webhook-endpoints/{endpoint_id}/redeliver", {},
                             headers=shop.headers).json == {"redelivered": 0}


def test_a_redelivered_domain_event_is_recorded_once(testapp, shop, db, registry):
    from kloyst_plugins.vendor_webhooks import feed

    create(testapp, shop, event_types=["*"])
    event = events.DomainEvent(id=424242, name="ContactCreated", vendor_id=shop.vendor_id,
                               payload={"contact_id": str(uuid.uuid4()), "source": "api"}, occurred_at=utcnow())
    assert feed.record(event, db) is not None
    assert feed.record(event, db) is None
    with tenancy.unscoped(db):
        assert len(db.scalars(select(WebhookDelivery)).all()) == 1


def test_the_feed_gives_the_vendors_events_in_order_page_by_page_and_an_empty_poll_keeps_the_cursor(
        testapp, shop, accounts, enable_plugin, db, run_outbox):
    other = accounts.vendor("Other Co")
    for name in PLUGINS:
        enable_plugin(other, name)
    contacts = [uuid.uuid4() for _ in range(5)]
    record(db, run_outbox, shop.vendor_id, *(events.ContactCreated(contact_id=c, source="api") for c in contacts))
    record(db, run_outbox, other.vendor_id, events.ContactCreated(contact_id=uuid.uuid4(), source="api"))
    record(db, run_outbox, shop.vendor_id, events.ContactOptedOut(contact_id=contacts[0], source="api"))
    seen, cursor = [], None
    for _ in range(5):
        query = "/v1/events?limit=2" + (f"&after={cursor}" if cursor else "")
        page = testapp.get(query, headers=shop.headers).json
        seen += page["items"]
        cursor = page["next_cursor"]
        if not page["items"]:
            break
    assert [e["data"]["contact_id"] for e in seen] == [str(c) for c in contacts] + [str(contacts[0])]
    assert [e["type"] for e in seen] == ["ContactCreated"] * 5 + ["ContactOptedOut"]
    assert {e["vendor_id"] for e in seen} == {str(shop.vendor_id)} and len({e["id"] for e in seen}) == 6
    empty = testapp.get(f"/v1/events?after={cursor}", headers=shop.headers).json
    assert empty == {"items": [], "next_cursor": cursor}
    record(db, run_outbox, shop.vendor_id, events.ContactOptedIn(contact_id=contacts[0], source="api"))
    assert [e["type"] for e in testapp.get(f"/v1/events?after={cursor}", headers=shop.headers).json["items"]] == [
        "ContactOptedIn"]


def test_the_feed_filters_by_type_and_moves_past_what_did_not_match(testapp, shop, db, run_outbox):
    contact = uuid.uuid4()
    record(db, run_outbox, shop.vendor_id, *(events.ContactCreated(contact_id=uuid.uuid4(), source="api")
                                             for _ in range(3)), events.ContactOptedOut(contact_id=contact, source="x"))
    page = testapp.get("/v1/events?types=ContactOptedOut,ContactOptedIn", headers=shop.headers).json
    assert [e["type"] for e in page["items"]] == ["ContactOptedOut"]
    record(db, run_outbox, shop.vendor_id, events.ContactCreated(contact_id=uuid.uuid4(), source="api"))
    later = testapp.get(f"/v1/events?types=ContactOptedOut&after={page['next_cursor']}", headers=shop.headers).json
    assert later["items"] == [] and later["next_cursor"] != page["next_cursor"]  # past the ContactCreated
    refused = testapp.get("/v1/events?types=Nope", headers=shop.headers, status=422).json
    assert refused["error"]["details"]["fields"][0]["field"] == "types"
    assert testapp.get("/v1/events?after=garbage!", headers=shop.headers,
                       status=422).json["error"]["code"] == "invalid_cursor"


def test_a_received_message_carries_its_content_decrypted_for_the_vendor(testapp, shop, db, registry, run_outbox):
    cipher = registry["kloyst.cipher"]
    with tenancy.unscoped(db):
        token_enc, kid = encrypt_waba_token(cipher, shop.vendor_id, "token")
        waba = Waba(vendor_id=shop.vendor_id, meta_waba_id="102290129340398", name="W", access_token_enc=token_enc,
                    enc_kid=kid)
        db.add(waba)
        db.flush()
        number = PhoneNumber(vendor_id=shop.vendor_id, meta_phone_number_id="106540352242922", waba_id=waba.id,
                             display_phone_number="+1 555 010 0000", throughput_mps=80)
        db.add(number)
        db.flush()
        message = {"from": "15550100001", "id": "wamid.inbound-1", "timestamp": "1764940000", "type": "text",
                   "text": {"body": "Is my order on its way?"}}
        inbound = InboundMessage(vendor_id=shop.vendor_id, wamid=message["id"], phone_number_id=number.id,
                                 sender_hash=b"h" * 32, type="text",
                                 content_enc=cipher.encrypt(json.dumps(message), vendor_id=shop.vendor_id,
                                                            field=INBOUND_FIELD),
                                 enc_kid=cipher.active_kid, sent_at=utcnow() - dt.timedelta(seconds=5))
        db.add(inbound)
        db.flush()
    record(db, run_outbox, shop.vendor_id, events.MessageReceived(
        inbound_id=inbound.id, wamid=inbound.wamid, phone_number_id=number.id, contact_id=None, type="text",
        sent_at=inbound.sent_at, opt_out=False))
    (item,) = testapp.get("/v1/events?types=MessageReceived", headers=shop.headers).json["items"]
    assert item["data"]["message"] == message and item["data"]["inbound_id"] == str(inbound.id)
