"""Sending a template message through POST /v1/messages, and reading messages back.

A send is checked whole before anything is written: every refusal below leaves no message
row and no ``messages.queued`` outbox event, so nothing can reach Meta.
"""

from __future__ import annotations

import json
import threading
import uuid

import pytest
import webtest
from sqlalchemy import select

from messaging_support import LANGUAGE, RECIPIENT, TEMPLATE, Messaging
from kloyst.db import tenancy
from kloyst.outbox import OutboxEvent
from kloyst_plugins.messages import dispatch
from kloyst_plugins.messages import views as message_views
from kloyst_plugins.messages.content import open_content
from kloyst_plugins.messages.models import MessageLog, MessageStatus
from kloyst_plugins.messages.services import MessageService

MESSAGES = "/v1/messages"


def send_body(vendor, **changes) -> dict:
    """A valid send from ``vendor``'s number; ``changes`` replace fields (``None`` removes one)."""
    body = {"phone_number_id": str(vendor.number.id), "to": RECIPIENT,
            "template": {"name": TEMPLATE, "language": LANGUAGE}, "parameters": {"body": ["Ann", "A-1"]}}
    body.update(changes)
    return {key: value for key, value in body.items() if value is not None}


def send(testapp, vendor, *, status=202, key: str | None = None, **changes):
    headers = {**vendor.headers, **({"Idempotency-Key": key} if key is not None else {})}
    return testapp.post_json(MESSAGES, send_body(vendor, **changes), headers=headers, status=status)


def queued(db, vendor_id) -> tuple[list[MessageLog], list[OutboxEvent]]:
    """The vendor's message rows and ``messages.queued`` events, as committed."""
    db.expire_all()
    with tenancy.unscoped(db):
        messages = list(db.scalars(select(MessageLog).where(MessageLog.vendor_id == vendor_id)))
        events = list(db.scalars(select(OutboxEvent).where(OutboxEvent.vendor_id == vendor_id,
                                                           OutboxEvent.topic == dispatch.QUEUED_TOPIC)))
    return messages, events


def assert_nothing_queued(db, vendor_id) -> None:
    assert queued(db, vendor_id) == ([], [])


def opened(registry, message: MessageLog) -> dict:
    return open_content(registry["kloyst.cipher"], message.vendor_id, message.content_enc)


def test_a_send_is_queued_with_its_doorbell_and_answered_202(testapp, db, registry, vendor, run_outbox):
    answer = send(testapp, vendor).json["message"]

    [message], [event] = queued(db, vendor.vendor_id)
    assert answer["id"] == str(message.id)
    assert answer["status"] == "QUEUED"
    assert answer["phone_number_id"] == str(vendor.number.id)
    assert answer["to"] == RECIPIENT
    assert answer["template"] == {"id": str(vendor.template.id), "name": TEMPLATE, "language": LANGUAGE,
                                  "category": "UTILITY"}
    assert answer["created_at"] and answer["wamid"] is None and answer["attempts"] == 0
    assert message.status == MessageStatus.QUEUED.value and message.status_rank == 0
    assert message.template_id == vendor.template.id and message.category == "UTILITY"
    assert message.recipient_hash == registry["kloyst.mobile_hasher"](vendor.vendor_id, RECIPIENT)
    assert message.country == "US" and message.contact_id is None and message.lease_until is None
    assert message.next_attempt_at is not None
    payload = opened(registry, message)
    assert payload["to"] == RECIPIENT
    assert payload["biz_opaque_callback_data"] == str(message.id)
    assert payload["template"]["name"] == TEMPLATE
    assert payload["template"]["components"] == [
        {"type": "body", "parameters": [{"type": "text", "text": "Ann"}, {"type": "text", "text": "A-1"}]}]
    assert RECIPIENT.encode() not in message.content_enc
    assert event.payload == {"phone_number_id": str(vendor.number.id)}

    dispatch.DOORBELL.wait(0)
    assert run_outbox() >= 1
    assert dispatch.DOORBELL.wait(0), "delivering messages.queued rings the local sender's doorbell"


def test_a_failure_after_queueing_rolls_back_the_message_and_its_doorbell(testapp, db, vendor, monkeypatch):
    def broken(message, service):
        raise RuntimeError("the response could not be built")

    monkeypatch.setattr(message_views, "message_json", broken)
    send(testapp, vendor, status=500)
    assert_nothing_queued(db, vendor.vendor_id)


def test_to_is_normalised_and_matched_to_the_contact_with_that_number(testapp, db, registry, messaging, vendor):
    contact = messaging.contact(vendor.vendor_id, RECIPIENT, name="Ann")
    answer = send(testapp, vendor, to="+1 (202) 555-0123").json["message"]
    assert answer["to"] == RECIPIENT and answer["contact_id"] == str(contact.id)
    [message], _ = queued(db, vendor.vendor_id)
    assert opened(registry, message)["to"] == RECIPIENT
    assert message.contact_id == contact.id and message.recipient_hash == contact.mobile_hash


@pytest.mark.parametrize(("to", "reason"), [
    ("+999123", "unknown country code"),
    ("2025550123", "unknown country code"),  # no +country code, and a send has no default country
    ("call me", "not a phone number"),
    ("+1 202 555 01", "not a valid number"),
])
def test_an_invalid_to_is_422_saying_why_and_queues_nothing(testapp, db, vendor, to, reason):
    error = send(testapp, vendor, to=to, status=422).json["error"]
    assert error["code"] == "invalid_phone"
    assert error["message"].startswith("to: ") and reason in error["message"]
    assert_nothing_queued(db, vendor.vendor_id)


@pytest.mark.parametrize("changes", [
    {"to": RECIPIENT, "contact_id": str(uuid.uuid4())},
    {"to": None},
])
def test_a_send_names_its_recipient_exactly_once(testapp, db, vendor, changes):
    error = send(testapp, vendor, status=422, **changes).json["error"]
    assert "either 'to'" in error["message"] and "or 'contact_id'" in error["message"]
    assert_nothing_queued(db, vendor.vendor_id)


def test_another_vendors_number_is_404_and_queues_nothing(testapp, db, messaging, vendor):
    other = messaging.sending_vendor("Other Co")
    error = send(testapp, vendor, phone_number_id=str(other.number.id), status=404).json["error"]
    assert error["message"] == "phone number not found"
    assert_nothing_queued(db, vendor.vendor_id)
    assert_nothing_queued(db, other.vendor_id)


def test_an_unknown_number_is_404(testapp, db, vendor):
    send(testapp, vendor, phone_number_id=str(uuid.uuid4()), status=404)
    assert_nothing_queued(db, vendor.vendor_id)


@pytest.mark.parametrize("status", ["FLAGGED", "RESTRICTED", "UNASSIGNED", "DELETED"])
def test_a_number_meta_has_not_in_service_is_409(testapp, db, messaging, vendor, status):
    number = messaging.number(vendor.waba, status=status)
    error = send(testapp, vendor, phone_number_id=str(number.id), status=409).json["error"]
    assert error["code"] == "phone_number_unavailable" and status in error["message"]
    assert_nothing_queued(db, vendor.vendor_id)


def test_a_contact_id_send_goes_to_the_contacts_decrypted_number(testapp, db, registry, messaging, vendor):
    contact = messaging.contact(vendor.vendor_id, "+447400123456", country="GB")
    answer = send(testapp, vendor, to=None, contact_id=str(contact.id)).json["message"]
    assert answer["to"] == "+447400123456" and answer["contact_id"] == str(contact.id)
    [message], [_] = queued(db, vendor.vendor_id)
    assert message.country == "GB" and message.recipient_hash == contact.mobile_hash
    assert opened(registry, message)["to"] == "+447400123456"


def test_another_vendors_contact_is_404_and_queues_nothing(testapp, db, messaging, vendor):
    other = messaging.vendor("Other Co")
    contact = messaging.contact(other.vendor_id)
    error = send(testapp, vendor, to=None, contact_id=str(contact.id), status=404).json["error"]
    assert error["message"] == "contact not found"
    assert_nothing_queued(db, vendor.vendor_id)


@pytest.mark.parametrize("by", ["contact_id", "to"])
def test_an_opted_out_contact_is_never_queued(testapp, db, messaging, vendor, by):
    contact = messaging.contact(vendor.vendor_id, opted_out=True)
    recipient = {"to": None, "contact_id": str(contact.id)} if by == "contact_id" else {"to": "+1 202-555-0123"}
    error = send(testapp, vendor, status=409, **recipient).json["error"]
    assert error["code"] == "contact_opted_out" and "contact opted out" in error["message"]
    assert_nothing_queued(db, vendor.vendor_id)


def test_a_template_of_another_waba_is_422_not_found(testapp, db, messaging, vendor):
    other_waba = messaging.waba(vendor.vendor_id)
    messaging.template(other_waba, name="other_waba_only")
    error = send(testapp, vendor, template={"name": "other_waba_only", "language": LANGUAGE},
                 status=422).json["error"]
    assert error["code"] == "template_not_found"
    assert_nothing_queued(db, vendor.vendor_id)


def test_another_vendors_copy_of_a_template_is_not_found(testapp, db, messaging, vendor):
    """Vendors sharing a WABA each keep their own copy of its templates; only one's own copy counts."""
    other = messaging.vendor("Other Co")
    other_waba = messaging.waba(other.vendor_id)
    template = messaging.template(other_waba, name="their_promo")
    with tenancy.unscoped(db):
        template.meta_waba_id = vendor.waba.meta_waba_id
        db.commit()
    send(testapp, vendor, template={"name": "their_promo", "language": LANGUAGE}, status=422)
    assert_nothing_queued(db, vendor.vendor_id)


@pytest.mark.parametrize("status", ["PENDING", "PAUSED", "REJECTED", "DISABLED"])
def test_a_template_that_is_not_approved_is_422(testapp, db, messaging, vendor, status):
    messaging.template(vendor.waba, name="not_yet", status=status)
    error = send(testapp, vendor, template={"name": "not_yet", "language": LANGUAGE}, status=422).json["error"]
    assert error["code"] == "template_not_approved" and status in error["message"]
    assert_nothing_queued(db, vendor.vendor_id)


@pytest.mark.parametrize(("parameters", "problem"), [
    ({"body": ["Ann"]}, "body: expected 2 parameters ({{1}}, {{2}}), got 1"),
    ({}, "body: expected 2 parameters ({{1}}, {{2}}), got 0"),
    ({"body": {"name": "Ann", "order": "A-1"}}, "this template uses positional parameters"),
    ({"body": ["Ann", "   "]}, "body parameter {{2}} is empty"),
    ({"body": ["Ann", "A-1"], "header": ["Hello"]}, "the template's header has no variables"),
    ({"body": ["Ann", "A-1"], "buttons": [{"sub_type": "url", "index": 0, "parameters": ["x"]}]},
     "the template has 0 buttons"),
])
def test_parameters_that_do_not_fit_the_template_are_422_listing_the_problems(testapp, db, vendor, parameters,
                                                                               problem):
    error = send(testapp, vendor, parameters=parameters, status=422).json["error"]
    assert error["code"] == "invalid_template_parameters"
    fields = error["details"]["fields"]
    assert {f["field"] for f in fields} == {"parameters"}
    assert any(problem in f["problem"] for f in fields), fields
    assert_nothing_queued(db, vendor.vendor_id)


def test_named_parameters_and_a_url_button_reach_the_payload(testapp, db, registry, messaging, vendor):
    messaging.template(vendor.waba, name="named", parameter_format="NAMED", body="Hi {{first_name}}",
                       buttons=[{"type": "URL", "text": "Track", "url": "https://t.example/{{1}}"}])
    parameters = {"body": {"first_name": "Ann"}, "buttons": [{"sub_type": "url", "index": 0, "parameters": ["A-1"]}]}
    send(testapp, vendor, template={"name": "named", "language": LANGUAGE}, parameters=parameters)
    [message], _ = queued(db, vendor.vendor_id)
    assert opened(registry, message)["template"]["components"] == [
        {"type": "body", "parameters": [{"type": "text", "text": "Ann", "parameter_name": "first_name"}]},
        {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": "A-1"}]}]


def test_variables_fill_the_template_from_the_contact(testapp, db, registry, messaging, vendor):
    contact = messaging.contact(vendor.vendor_id, name="Ann", attributes={"order": "A-7"})
    variables = {"1": {"field": "name"}, "2": {"field": "attributes.order"}}
    send(testapp, vendor, to=None, contact_id=str(contact.id), parameters=None, variables=variables)
    [message], _ = queued(db, vendor.vendor_id)
    assert opened(registry, message)["template"]["components"] == [
        {"type": "body", "parameters": [{"type": "text", "text": "Ann"}, {"type": "text", "text": "A-7"}]}]


def test_the_templates_stored_mapping_fills_a_contact_send_without_parameters(testapp, db, registry, messaging,
                                                                               vendor):
    messaging.template(vendor.waba, name="mapped", variable_mapping={
        "1": {"field": "name", "default": "there"}, "2": {"value": "your order"}})
    messaging.contact(vendor.vendor_id)  # no name: the default applies
    send(testapp, vendor, template={"name": "mapped", "language": LANGUAGE}, parameters=None)
    [message], _ = queued(db, vendor.vendor_id)
    body = opened(registry, message)["template"]["components"][0]["parameters"]
    assert [p["text"] for p in body] == ["there", "your order"]


def test_variables_for_a_number_that_is_no_contact_are_422(testapp, db, vendor):
    error = send(testapp, vendor, parameters=None, variables={"1": {"field": "name"}}, status=422).json["error"]
    assert error["code"] == "variables_need_contact"
    assert_nothing_queued(db, vendor.vendor_id)


def test_a_variable_the_contact_cannot_fill_is_422_naming_it(testapp, db, messaging, vendor):
    contact = messaging.contact(vendor.vendor_id)
    variables = {"1": {"field": "name"}, "2": {"value": "A-1"}}
    error = send(testapp, vendor, to=None, contact_id=str(contact.id), parameters=None, variables=variables,
                 status=422).json["error"]
    assert error["details"]["fields"] == [
        {"field": "variables", "problem": "body variable {{1}}: the contact has no name and the mapping gives no "
                                          "default"}]
    assert_nothing_queued(db, vendor.vendor_id)


def test_an_idempotent_retry_gets_the_same_message_and_queues_nothing_more(testapp, db, vendor):
    first = send(testapp, vendor, key="order-42")
    again = send(testapp, vendor, key="order-42")
    assert again.json == first.json
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    messages, events = queued(db, vendor.vendor_id)
    assert len(messages) == 1 and len(events) == 1
    assert messages[0].idempotency_key == "order-42" and len(messages[0].request_hash) == 64


def test_key_order_and_spacing_do_not_make_a_retry_different(testapp, db, vendor):
    send(testapp, vendor, key="same")
    body = send_body(vendor)
    reordered = json.dumps({"template": {"language": LANGUAGE, "name": TEMPLATE}, "parameters": body["parameters"],
                            "to": RECIPIENT, "phone_number_id": body["phone_number_id"]}, indent=3)
    testapp.post(MESSAGES, reordered, headers={**vendor.headers, "Idempotency-Key": "same"},
                 content_type="application/json", status=202)
    assert len(queued(db, vendor.vendor_id)[0]) == 1


def test_a_key_reused_with_different_parameters_is_422(testapp, db, vendor):
    first = send(testapp, vendor, key="order-42").json["message"]
    error = send(testapp, vendor, key="order-42", parameters={"body": ["Bob", "A-1"]}, status=422).json["error"]
    assert error["code"] == "idempotency_key_reused"
    assert error["message"].startswith("Idempotency-Key reused with different parameters")
    assert error["details"]["message_id"] == first["id"]
    assert len(queued(db, vendor.vendor_id)[0]) == 1


def test_a_refused_request_stores_nothing_under_its_key(testapp, db, vendor):
    send(testapp, vendor, key="retry-me", parameters={"body": ["Ann"]}, status=422)
    send(testapp, vendor, key="retry-me")
    assert len(queued(db, vendor.vendor_id)[0]) == 1


def test_keys_belong_to_one_vendor(testapp, db, messaging, vendor):
    other = messaging.sending_vendor("Other Co")
    mine = send(testapp, vendor, key="order-42").json["message"]
    theirs = send(testapp, other, key="order-42", parameters={"body": ["Zed", "Z-9"]}).json["message"]
    assert mine["id"] != theirs["id"]
    assert len(queued(db, vendor.vendor_id)[0]) == 1 and len(queued(db, other.vendor_id)[0]) == 1


def test_sends_without_a_key_are_never_deduplicated(testapp, db, vendor):
    send(testapp, vendor)
    send(testapp, vendor)
    assert len(queued(db, vendor.vendor_id)[0]) == 2


@pytest.mark.parametrize("key", ["", "k" * 256, "caf\u00e9", "tab\there"])
def test_a_malformed_idempotency_key_is_422(testapp, db, vendor, key):
    response = testapp.post_json(MESSAGES, send_body(vendor), status=422,
                                 headers={**vendor.headers, "Idempotency-Key": key.encode("latin-1").decode("latin-1")})
    assert response.json["error"]["code"] == "invalid_idempotency_key"
    assert_nothing_queued(db, vendor.vendor_id)


def test_a_255_character_key_is_accepted(testapp, vendor):
    send(testapp, vendor, key="k" * 255)


def test_two_concurrent_requests_with_one_key_make_one_message(committed_db, registry, wsgi_app, monkeypatch):
    vendor = Messaging(committed_db, registry).sending_vendor()
    # Both requests pass the "is this key known?" check before either inserts, so the unique
    # index (and the savepoint around the insert) is what has to settle it.
    real_by_key = MessageService._by_key
    meet = threading.Barrier(2, timeout=10)
    seen = threading.local()

    def by_key_after_both_looked(self, key):
        found = real_by_key(self, key)
        if not getattr(seen, "looked", False):
            seen.looked = True
            meet.wait()
        return found

    monkeypatch.setattr(MessageService, "_by_key", by_key_after_both_looked)
    answers = []

    def post() -> None:
        app = webtest.TestApp(wsgi_app, extra_environ={"REMOTE_ADDR": "203.0.113.9"})
        answers.append(app.post_json(MESSAGES, send_body(vendor), status="*",
                                     headers={**vendor.headers, "Idempotency-Key": "race"}))

    threads = [threading.Thread(target=post) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [a.status_int for a in answers] == [202, 202], [a.text for a in answers]
    assert answers[0].json["message"]["id"] == answers[1].json["message"]["id"]
    assert sorted(a.headers.get("Idempotent-Replayed", "") for a in answers) == ["", "true"]
    messages, events = queued(committed_db, vendor.vendor_id)
    assert len(messages) == 1 and len(events) == 1


def test_a_message_reads_back_with_its_progress(testapp, messaging, vendor):
    message = messaging.message(vendor.number, status=MessageStatus.FAILED, wamid="wamid.A1", error_code=131026,
                                error_message="Message undeliverable", retry_count=2, attempts=3,
                                pricing_category="utility", duplicate_sends=1)
    got = testapp.get(f"{MESSAGES}/{message.id}", headers=vendor.headers).json["message"]
    assert got["status"] == "FAILED" and got["wamid"] == "wamid.A1" and got["to"] == RECIPIENT
    assert (got["error_code"], got["error_message"]) == (131026, "Message undeliverable")
    assert (got["retry_count"], got["attempts"], got["duplicate_sends"]) == (2, 3, 1)
    assert got["pricing_category"] == "utility"


def test_another_vendors_message_is_404(testapp, messaging, vendor):
    other = messaging.sending_vendor("Other Co")
    message = messaging.message(other.number)
    testapp.get(f"{MESSAGES}/{message.id}", headers=vendor.headers, status=404)


def test_the_list_is_newest_first_in_pages(testapp, vendor):
    ids = [send(testapp, vendor).json["message"]["id"] for _ in range(5)]
    first = testapp.get(MESSAGES, {"limit": 3}, headers=vendor.headers).json
    second = testapp.get(MESSAGES, {"limit": 3, "cursor": first["next_cursor"]}, headers=vendor.headers).json
    assert [m["id"] for m in first["items"] + second["items"]] == ids[::-1]
    assert second["next_cursor"] is None


def test_the_list_filters_by_status_number_contact_and_campaign(testapp, messaging, vendor):
    other_number = messaging.number(vendor.waba)
    contact = messaging.contact(vendor.vendor_id)
    campaign_id = uuid.uuid4()
    queued_one = messaging.message(vendor.number)
    failed = messaging.message(vendor.number, status=MessageStatus.FAILED)
    elsewhere = messaging.message(other_number)
    to_contact = messaging.message(vendor.number, contact_id=contact.id)
    in_campaign = messaging.message(vendor.number, campaign_id=campaign_id)
    messaging.message(messaging.sending_vendor("Other Co").number)  # never listed

    def listed(**query) -> set[str]:
        return {m["id"] for m in testapp.get(MESSAGES, query, headers=vendor.headers).json["items"]}

    everything = {str(m.id) for m in (queued_one, failed, elsewhere, to_contact, in_campaign)}
    assert listed() == everything
    assert listed(status="FAILED") == {str(failed.id)}
    assert listed(phone_number_id=str(other_number.id)) == {str(elsewhere.id)}
    assert listed(contact_id=str(contact.id)) == {str(to_contact.id)}
    assert listed(campaign_id=str(campaign_id)) == {str(in_campaign.id)}
    assert listed(status="QUEUED", phone_number_id=str(vendor.number.id)) == {
        str(queued_one.id), str(to_contact.id), str(in_campaign.id)}


def test_an_unknown_status_filter_is_422(testapp, vendor):
    error = testapp.get(MESSAGES, {"status": "LOST"}, headers=vendor.headers, status=422).json["error"]
    assert error["details"]["fields"][0]["field"] == "status"


def test_the_api_is_404_until_the_vendor_enables_messages(testapp, accounts, enable_plugin):
    account = accounts.vendor("Not Yet Co")
    for plugin in ("contacts", "waba", "templates"):
        enable_plugin(account, plugin)
    testapp.get(MESSAGES, headers=account.headers, status=404)
    testapp.post_json(MESSAGES, {}, headers=account.headers, status=404)
    testapp.get("/v1/dead-letters", headers=account.headers, status=404)
