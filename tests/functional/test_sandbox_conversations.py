"""The sandbox holds conversations as Meta does: simulated customers, BSUIDs, the service window, media, read receipts.

Over real HTTP, with a webhook receiver that keeps every signed body the sandbox posts.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import urllib3

from kloyst.sandbox.cli import add_commands
from kloyst.sandbox import SandboxServer, SandboxState
from kloyst.sandbox.embedded import DEMO_NUMBERS, DEMO_WABA_ID, seed, start_embedded
from kloyst.sandbox.receiver import WebhookReceiver
from kloyst.sandbox.state import Behaviour, Template
from kloyst.testing.processes import free_port

APP_SECRET = "conversations-test-secret"
FAST, SLOW = DEMO_NUMBERS[0][0], DEMO_NUMBERS[1][0]
AUTH = {"Authorization": "Bearer sandbox-token", "Content-Type": "application/json"}
PHONE = "+4917100000001"
JPEG = b"\xff\xd8\xff\xe0" + b"sandbox-jpeg" * 50
DAY = 24 * 3600


@pytest.fixture
def sandbox():
    state = SandboxState(app_secret=APP_SECRET, behaviour=Behaviour(latency_ms=0, webhook_batch=1))
    seed(state)
    state.add_template(DEMO_WABA_ID, Template(id="300000000000009", name="login_code", language="en_US",
                                              category="AUTHENTICATION", components=[
                                                  {"type": "BODY", "text": "{{1}} is your code."}]))
    server = SandboxServer(state).start()
    server.http = urllib3.PoolManager(maxsize=8, retries=False)
    yield server
    server.close()


@pytest.fixture
def receiver(sandbox):
    receiver = WebhookReceiver()
    sandbox.state.behaviour.webhook_url = receiver.url
    yield receiver
    receiver.close()


def kloyst_main(argv: list[str]) -> int:
    """``kloyst <argv>`` with the sandbox's commands, as the core plugin registers them."""
    parser = argparse.ArgumentParser(prog="kloyst")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


def call(server, method, path, body=None, headers=AUTH, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    response = server.http.request(method, server.url + path, headers=headers, body=data)
    return response.status, json.loads(response.data) if response.headers.get("Content-Type") == "application/json" \
        else response.data


def control(server, action, body=None):
    status, data = call(server, "POST" if body is not None else "GET", f"/_sandbox/{action}", body, headers={})
    assert status == 200, data
    return data


def inbound(server, **fields):
    return control(server, "customers/inbound", {"phone_number_id": FAST, **fields})


def send(server, body, number=FAST):
    return call(server, "POST", f"/v23.0/{number}/messages", body)


def text(to=PHONE, body="Thanks for writing!", recipient=None):
    address = {"to": to} if recipient is None else {"recipient": recipient}
    return {"messaging_product": "whatsapp", "recipient_type": "individual", **address, "type": "text",
            "text": {"body": body}}


def template(name="order_update", to=PHONE, recipient=None):
    address = {"to": to} if recipient is None else {"recipient": recipient}
    params = {"order_update": [("header", ["A-1"]), ("body", ["Ann", "Monday"])], "welcome": [],
              "login_code": [("body", ["123456"])]}[name]
    components = [{"type": kind, "parameters": [{"type": "text", "text": v} for v in values]}
                  for kind, values in params]
    if name == "welcome":
        components = [{"type": "body", "parameters": [{"type": "text", "text": "Ann",
                                                       "parameter_name": "first_name"}]}]
    return {"messaging_product": "whatsapp", **address, "type": "template",
            "template": {"name": name, "language": {"code": "en_US"}, "components": components}}


def wamid_of(answer):
    status, data = answer
    assert status == 200, data
    return data["messages"][0]["id"]


def statuses_of(receiver, wamid, count, timeout=10.0):
    deadline = time.monotonic() + timeout
    while len(found := [s for s in receiver.statuses() if s["id"] == wamid]) < count:
        assert time.monotonic() < deadline, receiver.values()
        time.sleep(0.02)
    return found


def value_of(receiver, wamid, status):
    """The whole webhook ``value`` that carried this message's ``status``."""
    return next(v for v in receiver.values() for s in v.get("statuses", ()) if s["id"] == wamid
                and s["status"] == status)


def assert_meta_error(answer, code, http_status=400):
    status, data = answer
    assert status == http_status, data
    assert data["error"]["code"] == code and data["error"]["message"].startswith(f"(#{code}) "), data
    return data["error"]


# --- the customer-service window ---------------------------------------------------------------------------


def test_a_free_form_message_to_a_customer_who_never_wrote_fails_with_131047_in_its_status_webhook(sandbox, receiver):
    wamid = wamid_of(send(sandbox, text()))  # Meta accepts it ...
    time.sleep(0.3)
    (failed,) = statuses_of(receiver, wamid, 1)  # ... and it fails, with no "sent" before
    assert failed["status"] == "failed" and failed["errors"][0]["code"] == 131047
    assert "24 hours" in failed["errors"][0]["error_data"]["details"]
    assert failed["recipient_id"] == PHONE.lstrip("+")
    assert "recipient_user_id" not in failed  # a failed send to a phone number carries no BSUID
    assert "contacts" not in value_of(receiver, wamid, "failed")  # nor does a failed status webhook
    assert receiver.signed(APP_SECRET)
    assert len(statuses_of(receiver, wamid, 1)) == 1


def test_an_inbound_message_opens_the_window_and_a_reply_inside_it_is_delivered_free(sandbox, receiver):
    answer = inbound(sandbox, **{"from": PHONE}, text="Where is my order?", name="Ada")
    wamid = wamid_of(send(sandbox, text()))
    statuses = statuses_of(receiver, wamid, 3)
    assert [s["status"] for s in statuses] == ["sent", "delivered", "read"]
    assert all(s["recipient_user_id"] == answer["user_id"] and s["recipient_id"] == PHONE.lstrip("+")
               for s in statuses)
    assert statuses[0]["pricing"] == {"billable": False, "pricing_model": "PMP", "category": "service",
                                      "type": "free_customer_service"}
    assert value_of(receiver, wamid, "sent")["contacts"] == [{"wa_id": PHONE.lstrip("+"),
                                                              "user_id": answer["user_id"]}]


@pytest.mark.parametrize(("ago", "outcome"), [(DAY - 60, "sent"), (DAY + 60, "failed")])
def test_the_window_is_open_until_24_hours_after_the_last_inbound_message(sandbox, receiver, ago, outcome):
    answer = inbound(sandbox, **{"from": PHONE}, text="hi", timestamp=int(time.time()) - ago)
    assert answer["window_open_until"] == int(time.time()) - ago + DAY
    wamid = wamid_of(send(sandbox, text()))
    assert statuses_of(receiver, wamid, 1)[0]["status"] == outcome


def test_a_later_inbound_message_moves_the_window_on(sandbox, receiver):
    inbound(sandbox, **{"from": PHONE}, text="first", timestamp=int(time.time()) - DAY - 600)
    inbound(sandbox, **{"from": PHONE}, text="again", timestamp=int(time.time()) - 600)
    assert statuses_of(receiver, wamid_of(send(sandbox, text())), 1)[0]["status"] == "sent"


def test_the_window_belongs_to_one_business_number(sandbox, receiver):
    inbound(sandbox, **{"from": PHONE}, text="hi")  # to FAST
    wamid = wamid_of(send(sandbox, text(), number=SLOW))
    assert statuses_of(receiver, wamid, 1)[0]["errors"][0]["code"] == 131047


def test_templates_are_delivered_outside_the_window_and_charged(sandbox, receiver):
    for name, category in (("order_update", "utility"), ("welcome", "marketing")):
        statuses = statuses_of(receiver, wamid_of(send(sandbox, template(name))), 3)
        assert [s["status"] for s in statuses] == ["sent", "delivered", "read"]
        assert statuses[0]["pricing"] == {"billable": True, "pricing_model": "PMP", "category": category,
                                          "type": "regular"}


def test_a_utility_template_inside_the_window_is_free_and_a_marketing_one_is_charged(sandbox, receiver):
    inbound(sandbox, **{"from": PHONE}, text="hi")
    utility = statuses_of(receiver, wamid_of(send(sandbox, template("order_update"))), 1)[0]
    marketing = statuses_of(receiver, wamid_of(send(sandbox, template("welcome"))), 1)[0]
    assert utility["pricing"] == {"billable": False, "pricing_model": "PMP", "category": "utility",
                                  "type": "free_customer_service"}
    assert marketing["pricing"]["billable"] is True and marketing["pricing"]["type"] == "regular"


def test_windows_are_listed_and_can_be_moved_without_a_webhook(sandbox, receiver):
    opened = control(sandbox, "windows", {"phone_number_id": FAST, "from": PHONE,
                                          "last_inbound_at": time.time() - 60})
    (window,) = control(sandbox, "windows")["windows"]
    assert window["open"] and window["user_id"] == opened["user_id"]
    assert window["open_until"] == pytest.approx(time.time() - 60 + DAY, abs=5)
    assert statuses_of(receiver, wamid_of(send(sandbox, text())), 1)[0]["status"] == "sent"
    control(sandbox, "windows", {"phone_number_id": FAST, "from": PHONE, "last_inbound_at": 0})
    assert statuses_of(receiver, wamid_of(send(sandbox, text())), 1)[0]["status"] == "failed"
    assert receiver.messages() == []  # moving a window posts nothing


def test_the_window_can_be_switched_off(sandbox, receiver):
    control(sandbox, "config", {"enforce_window": False})
    assert statuses_of(receiver, wamid_of(send(sandbox, text())), 1)[0]["status"] == "sent"


# --- customers: phone numbers, BSUIDs, usernames -------------------------------------------------------------


def test_an_inbound_message_carries_the_bsuid_and_the_phone(sandbox, receiver):
    answer = inbound(sandbox, **{"from": PHONE}, text="Hello", name="Ada")
    (value,) = receiver.values() if receiver.wait_for(1) else ()
    assert value["contacts"] == [{"profile": {"name": "Ada"}, "wa_id": PHONE.lstrip("+"), "user_id": answer["user_id"]}]
    assert answer["user_id"].startswith("DE.") and answer["wa_id"] == PHONE.lstrip("+")
    (message,) = value["messages"]
    assert message == {"from": PHONE.lstrip("+"), "from_user_id": answer["user_id"], "id": answer["id"],
                       "timestamp": message["timestamp"], "type": "text", "text": {"body": "Hello"}}


def test_a_username_customer_who_has_not_shared_the_phone_reaches_the_business_without_it(sandbox, receiver):
    answer = inbound(sandbox, username="ada.lovelace", name="Ada", text="Hi, it's me")
    receiver.wait_for(1)
    (value,) = receiver.values()
    assert value["contacts"] == [{"profile": {"name": "Ada", "username": "ada.lovelace"},
                                  "user_id": answer["user_id"]}]
    assert "from" not in value["messages"][0] and value["messages"][0]["from_user_id"] == answer["user_id"]
    assert answer["wa_id"] is None and answer["user_id"].startswith("US.")


def test_a_reply_to_a_bsuid_goes_with_recipient_and_its_statuses_carry_the_bsuid_and_username(sandbox, receiver):
    answer = inbound(sandbox, username="ada.lovelace", text="Hi")
    status, data = send(sandbox, text(recipient=answer["user_id"]))
    assert status == 200
    assert data["contacts"] == [{"input": answer["user_id"], "user_id": answer["user_id"]}]
    statuses = statuses_of(receiver, data["messages"][0]["id"], 3)
    assert all(s["recipient_user_id"] == answer["user_id"] and "recipient_id" not in s for s in statuses)
    contacts = {s["status"]: value_of(receiver, s["id"], s["status"])["contacts"] for s in statuses}
    assert contacts["sent"] == [{"user_id": answer["user_id"]}]
    assert contacts["read"] == [{"profile": {"username": "ada.lovelace"}, "user_id": answer["user_id"]}]


def test_a_customer_with_a_known_but_withheld_phone_keeps_it_out_of_webhooks(sandbox, receiver):
    answer = inbound(sandbox, **{"from": PHONE}, username="ada.l", phone_shared=False, text="hi")
    receiver.wait_for(1)
    assert "wa_id" not in receiver.values()[0]["contacts"][0] and "from" not in receiver.messages()[0]
    assert answer["wa_id"] is None
    # sent to the phone number, Meta knows it: the statuses carry the number and the BSUID it belongs to
    statuses = statuses_of(receiver, wamid_of(send(sandbox, text())), 3)
    assert statuses[0]["recipient_id"] == PHONE.lstrip("+") and statuses[0]["recipient_user_id"] == answer["user_id"]


def test_a_bsuid_given_with_a_phone_links_them(sandbox, receiver):
    inbound(sandbox, **{"from": PHONE}, user_id="DE.7777", parent_user_id="DE.ENT.8888", text="hi")
    status, data = send(sandbox, text(recipient="DE.ENT.8888"))  # the parent BSUID reaches the same customer
    assert status == 200
    statuses = statuses_of(receiver, data["messages"][0]["id"], 3)
    assert statuses[0]["recipient_user_id"] == "DE.7777" and statuses[0]["recipient_id"] == PHONE.lstrip("+")
    assert statuses[0]["parent_recipient_user_id"] == "DE.ENT.8888"
    assert control(sandbox, "customers")["customers"][0]["phone"] == PHONE.lstrip("+")


def test_to_wins_over_recipient_when_both_are_given(sandbox):
    status, data = send(sandbox, {**template(), "recipient": "US.123"})
    assert status == 200 and data["contacts"] == [{"input": PHONE, "wa_id": PHONE.lstrip("+")}]


def test_an_authentication_template_to_a_bsuid_is_refused_with_131062(sandbox):
    error = assert_meta_error(send(sandbox, template("login_code", recipient="US.13491208655302741918")), 131062)
    assert "phone number" in error["error_data"]["details"]
    assert send(sandbox, template("login_code"))[0] == 200
    assert send(sandbox, template("order_update", recipient="US.13491208655302741918"))[0] == 200


@pytest.mark.parametrize("recipient", ["13491208655302741918", "us.123", "US.", "US.12-34", 42])
def test_a_malformed_bsuid_recipient_is_100(sandbox, recipient):
    error = assert_meta_error(send(sandbox, text(recipient=recipient)), 100)
    assert "business-scoped user ID" in error["error_data"]["details"]


# --- inbound message types --------------------------------------------------------------------------------


def test_every_inbound_type_arrives_shaped_as_metas(sandbox, receiver):
    business = wamid_of(send(sandbox, template()))
    inbound(sandbox, **{"from": PHONE}, type="button", button={"payload": "STOP", "text": "Stop promotions"},
            context={"id": business})
    inbound(sandbox, **{"from": PHONE}, type="interactive",
            interactive={"type": "button_reply", "id": "yes", "title": "Yes"})
    inbound(sandbox, **{"from": PHONE}, type="interactive",
            interactive={"type": "list_reply", "id": "s", "title": "Small", "description": "250 ml"})
    inbound(sandbox, **{"from": PHONE}, type="location",
            location={"latitude": 52.52, "longitude": 13.405, "name": "Office", "address": "Berlin"})
    inbound(sandbox, **{"from": PHONE}, type="reaction", reaction={"message_id": business, "emoji": "👍"})
    deadline = time.monotonic() + 10
    while len(receiver.messages()) < 5:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    button, reply, choice, location, reaction = sorted(receiver.messages(), key=lambda m: ["button", "interactive",
                                                       "location", "reaction"].index(m["type"]))
    assert button["button"] == {"payload": "STOP", "text": "Stop promotions"}
    assert button["context"] == {"from": "15550000001", "id": business}
    assert {reply["interactive"]["type"], choice["interactive"]["type"]} == {"button_reply", "list_reply"}
    lists = reply if reply["interactive"]["type"] == "list_reply" else choice
    assert lists["interactive"]["list_reply"] == {"id": "s", "title": "Small", "description": "250 ml"}
    assert location["location"] == {"latitude": 52.52, "longitude": 13.405, "name": "Office", "address": "Berlin"}
    assert reaction["reaction"] == {"message_id": business, "emoji": "👍"}


@pytest.mark.parametrize(("fields", "complaint"), [
    ({"phone_number_id": "199"}, "phone_number_id"),
    ({"text": "no customer"}, "name the customer"),
    ({"from": "12", "text": "x"}, "from must be a phone number"),
    ({"from": PHONE, "type": "sticker"}, "media must be an object"),
    ({"from": PHONE, "type": "image", "media": {"data_base64": "not base64!", "mime_type": "image/jpeg"}},
     "base64"),
    ({"from": PHONE, "type": "image", "media": {"data_base64": "AAAA", "mime_type": "application/pdf"}},
     "not a supported image type"),
    ({"from": PHONE, "type": "location", "location": {"latitude": 91, "longitude": 0}}, "latitude"),
    ({"from": PHONE, "type": "poll"}, "type must be one of"),
    ({"from": PHONE, "text": ""}, "text must be a non-empty string"),
    ({"user_id": "US.ENT.1", "text": "x"}, "user_id must be"),
    ({"username": "a", "text": "x"}, "username must be"),
    ({"from": PHONE, "text": "x", "timestamp": "yesterday"}, "timestamp"),
])
def test_a_bad_simulated_message_is_400_saying_what_to_fix(sandbox, receiver, fields, complaint):
    status, data = call(sandbox, "POST", "/_sandbox/customers/inbound", {"phone_number_id": FAST, **fields},
                        headers={})
    assert status == 400 and complaint in data["error"], data
    assert receiver.deliveries == [] and control(sandbox, "customers")["customers"] == []


# --- media ------------------------------------------------------------------------------------------------


def upload(server, data=JPEG, mime_type="image/jpeg", filename="photo.jpg", product="whatsapp", number=FAST):
    fields = {"file": (filename, data, mime_type), "type": mime_type}
    if product:
        fields["messaging_product"] = product
    body, content_type = urllib3.encode_multipart_formdata(fields)
    return call(server, "POST", f"/v23.0/{number}/media", raw=body,
                headers={"Authorization": "Bearer t", "Content-Type": content_type})


def download(server, url, token="t"):
    response = server.http.request("GET", url, headers={"Authorization": f"Bearer {token}"} if token else {})
    return response.status, response.data, response.headers.get("Content-Type")


def test_inbound_media_downloads_through_its_media_id_with_the_token(sandbox, receiver):
    answer = inbound(sandbox, **{"from": PHONE}, type="image",
                     media={"data_base64": base64.b64encode(JPEG).decode(), "mime_type": "image/jpeg",
                            "caption": "my receipt"})
    receiver.wait_for(1)
    image = receiver.messages()[0]["image"]
    assert image == {"mime_type": "image/jpeg", "sha256": base64.b64encode(hashlib.sha256(JPEG).digest()).decode(),
                     "id": answer["media_id"], "caption": "my receipt"}
    status, info = call(sandbox, "GET", f"/v23.0/{answer['media_id']}")
    assert status == 200 and info["mime_type"] == "image/jpeg" and info["file_size"] == str(len(JPEG))
    assert info["sha256"] == hashlib.sha256(JPEG).hexdigest() and info["messaging_product"] == "whatsapp"
    assert download(sandbox, info["url"]) == (200, JPEG, "image/jpeg")
    assert download(sandbox, info["url"], token=None)[0] == 401
    assert download(sandbox, info["url"].replace("hash=", "hash=0"))[0] == 404


def test_uploaded_media_is_sent_by_id_and_deleted(sandbox, receiver):
    status, data = upload(sandbox, b"%PDF-1.4 invoice", "application/pdf", "invoice.pdf")
    assert status == 200, data
    media_id = data["id"]
    inbound(sandbox, **{"from": PHONE}, text="send me the invoice")
    document = {"messaging_product": "whatsapp", "to": PHONE, "type": "document",
                "document": {"id": media_id, "filename": "invoice.pdf"}}
    assert statuses_of(receiver, wamid_of(send(sandbox, document)), 3)[0]["status"] == "sent"
    info = call(sandbox, "GET", f"/v23.0/{media_id}")[1]
    status, body, content_type = download(sandbox, info["url"])
    assert (status, body, content_type) == (200, b"%PDF-1.4 invoice", "application/pdf")
    assert call(sandbox, "DELETE", f"/v23.0/{media_id}") == (200, {"success": True})
    assert_meta_error(call(sandbox, "GET", f"/v23.0/{media_id}"), 100)
    assert_meta_error(send(sandbox, document), 131009)


def test_a_media_message_by_link_needs_an_http_url(sandbox):
    inbound(sandbox, **{"from": PHONE}, text="hi")
    image = {"messaging_product": "whatsapp", "to": PHONE, "type": "image"}
    assert send(sandbox, {**image, "image": {"link": "https://example.com/a.jpg"}})[0] == 200
    assert_meta_error(send(sandbox, {**image, "image": {"link": "file:///etc/passwd"}}), 131009)
    assert_meta_error(send(sandbox, {**image, "image": {}}), 131008)


@pytest.mark.parametrize(("data", "mime_type", "product", "code"), [
    (JPEG, "image/gif", "whatsapp", 100),  # not a type Meta takes
    (b"x" * (5 * 1024 * 1024 + 1), "image/jpeg", "whatsapp", 131053),  # images are at most 5 MB
    (b"", "image/jpeg", "whatsapp", 131053),
    (JPEG, "image/jpeg", None, 100),  # messaging_product is required
])
def test_an_upload_meta_refuses_is_refused(sandbox, data, mime_type, product, code):
    assert_meta_error(upload(sandbox, data, mime_type, product=product), code)


def test_an_upload_must_be_multipart_and_to_a_known_number(sandbox):
    assert_meta_error(call(sandbox, "POST", f"/v23.0/{FAST}/media", {"messaging_product": "whatsapp"}), 100)
    assert_meta_error(upload(sandbox, number="199999999999999"), 100)


def test_media_and_its_url_expire(sandbox):
    control(sandbox, "config", {"media_url_ttl_seconds": 1})
    media_id = upload(sandbox)[1]["id"]
    url = call(sandbox, "GET", f"/v23.0/{media_id}")[1]["url"]
    time.sleep(1.1)
    assert download(sandbox, url)[0] == 404  # the URL has expired ...
    fresh = call(sandbox, "GET", f"/v23.0/{media_id}")[1]["url"]
    assert download(sandbox, fresh)[1] == JPEG  # ... a new one works
    control(sandbox, "config", {"media_ttl_seconds": 0.5})
    time.sleep(0.6)
    error = assert_meta_error(call(sandbox, "GET", f"/v23.0/{media_id}"), 100)
    assert error["error_subcode"] == 33
    assert download(sandbox, fresh)[0] == 404


# --- read receipts --------------------------------------------------------------------------------------------


def test_mark_as_read_answers_success_and_is_recorded(sandbox):
    answer = inbound(sandbox, **{"from": PHONE}, text="hi")
    read = {"messaging_product": "whatsapp", "status": "read", "message_id": answer["id"]}
    assert send(sandbox, read) == (200, {"success": True})
    assert send(sandbox, {**read, "typing_indicator": {"type": "text"}}) == (200, {"success": True})
    reads = control(sandbox, "reads")["reads"]
    assert [(r["message_id"], r["typing_indicator"]) for r in reads] == [(answer["id"], False), (answer["id"], True)]
    assert_meta_error(send(sandbox, {**read, "message_id": None}), 131008)
    assert_meta_error(send(sandbox, {**read, "message_id": "not-a-wamid"}), 100)
    assert_meta_error(send(sandbox, read, number="199999999999999"), 100)


# --- business profile, phone number, WABA, templates, versions ------------------------------------------


def test_business_profile_is_read_and_updated(sandbox):
    status, data = call(sandbox, "GET", f"/v23.0/{FAST}/whatsapp_business_profile")
    assert status == 200 and data["data"][0]["messaging_product"] == "whatsapp" and data["data"][0]["vertical"]
    update = {"messaging_product": "whatsapp", "about": "Open 9-5", "vertical": "RETAIL"}
    assert call(sandbox, "POST", f"/v23.0/{FAST}/whatsapp_business_profile", update) == (200, {"success": True})
    status, data = call(sandbox, "GET", f"/v23.0/{FAST}/whatsapp_business_profile?fields=about,vertical")
    assert data == {"data": [{"messaging_product": "whatsapp", "about": "Open 9-5", "vertical": "RETAIL"}]}
    assert_meta_error(call(sandbox, "GET", f"/v23.0/{FAST}/whatsapp_business_profile?fields=shoe_size"), 100)
    assert_meta_error(call(sandbox, "POST", f"/v23.0/{FAST}/whatsapp_business_profile",
                           {**update, "vertical": "SPACE"}), 100)


def test_a_phone_number_and_a_waba_answer_their_default_and_requested_fields(sandbox):
    status, number = call(sandbox, "GET", f"/v23.0/{FAST}")
    assert status == 200 and set(number) == {"id", "display_phone_number", "verified_name", "quality_rating",
                                             "code_verification_status"}
    status, number = call(sandbox, "GET", f"/v23.0/{FAST}?fields=throughput,platform_type")
    assert number == {"id": FAST, "throughput": {"level": "HIGH"}, "platform_type": "CLOUD_API"}
    status, waba = call(sandbox, "GET", f"/v23.0/{DEMO_WABA_ID}")
    assert status == 200 and set(waba) == {"id", "name", "timezone_id", "message_template_namespace"}
    status, waba = call(sandbox, "GET", f"/v23.0/{DEMO_WABA_ID}?fields=currency,account_review_status")
    assert waba == {"id": DEMO_WABA_ID, "currency": "USD", "account_review_status": "APPROVED"}
    error = assert_meta_error(call(sandbox, "GET", f"/v23.0/{DEMO_WABA_ID}?fields=nope"), 100)
    assert "nonexisting field (nope)" in error["message"] + error["error_data"]["details"]
    assert assert_meta_error(call(sandbox, "GET", "/v23.0/123456"), 100)["error_subcode"] == 33


def test_template_listing_honours_filters_fields_and_summary(sandbox):
    def names(query):
        status, data = call(sandbox, "GET", f"/v23.0/{DEMO_WABA_ID}/message_templates?{query}")
        assert status == 200, data
        return sorted(t["name"] for t in data["data"])

    assert names("") == ["login_code", "order_update", "welcome"]
    assert names("category=MARKETING,AUTHENTICATION") == ["login_code", "welcome"]
    assert names("name=ORDER") == ["order_update"]
    assert names("content=ships") == ["order_update"]
    assert names("name_or_content=code") == ["login_code"]
    assert names("status=REJECTED") == []
    assert names("language=en_US&status=APPROVED") == ["login_code", "order_update", "welcome"]
    status, data = call(sandbox, "GET", f"/v23.0/{DEMO_WABA_ID}/message_templates?fields=name,status"
                                        "&summary=total_count,message_template_limit&category=UTILITY&limit=1")
    assert data["data"] == [{"id": "300000000000001", "name": "order_update", "status": "APPROVED"}]
    assert data["summary"] == {"total_count": 1, "message_template_limit": 250}
    assert call(sandbox, "GET", "/v23.0/300000000000001?fields=name,category") == (
        200, {"id": "300000000000001", "name": "order_update", "category": "UTILITY"})
    assert_meta_error(call(sandbox, "GET", f"/v23.0/{DEMO_WABA_ID}/message_templates?fields=colour"), 100)
    assert_meta_error(call(sandbox, "GET", f"/v23.0/{DEMO_WABA_ID}/message_templates?summary=everything"), 100)


@pytest.mark.parametrize("version", ["v99.9", "v12.0", "v23"])
def test_only_the_graph_versions_meta_serves_are_accepted(sandbox, version):
    status, data = call(sandbox, "POST", f"/{version}/{FAST}/messages", template())
    assert status == 400 and "Unknown path components" in data["error"]["message"]
    assert control(sandbox, "stats")["accepted"] == 0


def test_the_versions_kloyst_and_current_clients_use_are_served(sandbox):
    assert {v: call(sandbox, "POST", f"/{v}/{FAST}/messages", template())[0] for v in ("v23.0", "v26.0")} == {
        "v23.0": 200, "v26.0": 200}


# --- the inbound command line, standalone and embedded --------------------------------------------------


def test_kloyst_sandbox_inbound_writes_to_a_running_sandbox(sandbox, receiver, tmp_path, capsys):
    assert kloyst_main(["sandbox", "inbound", "--url", sandbox.url, "--from", PHONE, "--name", "Ada",
                        "--text", "Is it in stock?"]) == 0
    answer = json.loads(capsys.readouterr().out)
    photo = tmp_path / "receipt.jpg"
    photo.write_bytes(JPEG)
    assert kloyst_main(["sandbox", "inbound", "--url", sandbox.url, "--number", SLOW, "--username", "ada.l",
                        "--image", str(photo), "--caption", "receipt"]) == 0
    media_id = json.loads(capsys.readouterr().out)["media_id"]
    assert kloyst_main(["sandbox", "inbound", "--url", sandbox.url, "--from", PHONE, "--reply", "yes=Yes"]) == 0
    assert kloyst_main(["sandbox", "inbound", "--url", sandbox.url, "--from", PHONE, "--location", "52.5,13.4"]) == 0
    assert kloyst_main(["sandbox", "inbound", "--url", sandbox.url, "--from", PHONE, "--button", "STOP"]) == 0
    capsys.readouterr()
    receiver.wait_for(5)
    assert receiver.signed(APP_SECRET)
    kinds = [(m["type"], m.get("from")) for m in receiver.messages()]
    assert sorted(kinds, key=str) == sorted([("text", PHONE.lstrip("+")), ("image", None),
                                             ("interactive", PHONE.lstrip("+")), ("location", PHONE.lstrip("+")),
                                             ("button", PHONE.lstrip("+"))], key=str)
    assert receiver.messages()[0]["id"] == answer["id"]
    info = call(sandbox, "GET", f"/v23.0/{media_id}")[1]
    assert download(sandbox, info["url"])[1] == JPEG


def test_kloyst_sandbox_inbound_says_what_is_wrong(sandbox, capsys):
    assert kloyst_main(["sandbox", "inbound", "--url", sandbox.url, "--text", "who am I"]) == 2
    assert "--from, --user-id or --username" in capsys.readouterr().err
    assert kloyst_main(["sandbox", "inbound", "--url", sandbox.url, "--number", "42", "--from", PHONE]) == 1
    assert "phone_number_id '42'" in capsys.readouterr().err
    assert kloyst_main(["sandbox", "inbound", "--url", f"http://127.0.0.1:{free_port()}", "--from", PHONE]) == 1
    assert "no sandbox at" in capsys.readouterr().err


def test_the_embedded_sandbox_of_make_run_takes_simulated_customers_too(capsys):
    port = free_port()
    embedded = start_embedded({"kloyst.meta.graph_url": f"http://127.0.0.1:{port}", "kloyst.http.host": "127.0.0.1",
                               "kloyst.http.port": free_port(), "kloyst.meta.app_secret": APP_SECRET})
    receiver = WebhookReceiver()
    try:
        embedded.state.behaviour.update({"latency_ms": 0, "webhook_url": receiver.url})
        embedded.http = urllib3.PoolManager(retries=False)
        # a vendor's own sandbox WABA comes into being on its first Graph call, as `make run` does it
        assert call(embedded, "GET", "/v23.0/200000000000002/phone_numbers")[0] == 200
        assert kloyst_main(["sandbox", "inbound", "--url", embedded.url, "--number", "1000000000000021",
                            "--from", PHONE, "--text", "hello"]) == 0
        receiver.wait_for(1)
        assert receiver.values()[0]["metadata"]["phone_number_id"] == "1000000000000021"
        assert receiver.signed(APP_SECRET)
        reply = text()
        assert call(embedded, "POST", "/v23.0/1000000000000021/messages", reply)[0] == 200
        deadline = time.monotonic() + 10
        while len(receiver.statuses()) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert [s["status"] for s in receiver.statuses()] == ["sent", "delivered", "read"]
    finally:
        receiver.close()
        embedded.close()
    capsys.readouterr()


def test_the_kloyst_sandbox_process_takes_customers_from_the_kloyst_sandbox_inbound_command():
    """Both commands as a reader runs them: `kloyst sandbox <ini>` in its own process, the customer from another."""
    kloyst = str(Path(sys.executable).with_name("kloyst"))
    ini = Path(__file__).resolve().parents[2] / "development.ini"
    receiver = WebhookReceiver()
    process = subprocess.Popen([kloyst, "sandbox", str(ini), "--port", str(free_port()), "--latency-ms", "0",
                                "--webhook-url", receiver.url], stdout=subprocess.PIPE, text=True)
    try:
        url = json.loads(process.stdout.readline())["url"]
        wrote = subprocess.run([kloyst, "sandbox", "inbound", "--url", url, "--username", "ada.lovelace",
                                "--name", "Ada", "--text", "Hello from the command line"],
                               capture_output=True, text=True, timeout=60)
        assert wrote.returncode == 0, wrote.stderr
        answer = json.loads(wrote.stdout)
        receiver.wait_for(1)
        (value,) = receiver.values()
        assert value["messages"][0]["id"] == answer["id"] and "from" not in value["messages"][0]
        assert value["contacts"][0]["profile"] == {"name": "Ada", "username": "ada.lovelace"}
    finally:
        process.terminate()
        process.wait(timeout=10)
        receiver.close()
