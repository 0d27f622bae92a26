"""The Meta sandbox over real HTTP: Meta's shapes, validation codes, limits, injected faults and signed webhooks."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import urllib3

from kloyst.sandbox import SandboxServer, SandboxState
from kloyst.sandbox.cli import add_commands
from kloyst.sandbox.retries import backoff
from kloyst.sandbox.state import Behaviour, PhoneNumber
from kloyst.testing.pytest_plugin import reset_sandbox

APP_SECRET = "sandbox-test-app-secret"
WABA = "200000000000001"
FAST = "100000000000001"  # 1,000 mps
SLOW = "100000000000002"  # 80 mps
# Meta's official OpenAPI document (MIT, docs/meta/LICENSE-business-messaging-api.txt), kept in the repository.
OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "meta" / "business-messaging-api_v23.0.yaml"
AUTH = {"Authorization": "Bearer sandbox-token", "Content-Type": "application/json"}


def start_sandbox(webhook_threads: int = 4) -> SandboxServer:
    """A sandbox with a 1,000-mps and an 80-mps number and two templates, serving on a free port.

    Its customer-service window is off: these tests send free-form text to thousands of numbers
    to exercise limits and webhook delivery. The window is on by default and has its own tests
    (test_sandbox_conversations.py).
    """
    state = SandboxState(app_secret=APP_SECRET, behaviour=Behaviour(latency_ms=0, enforce_window=False))
    state.add_number(PhoneNumber(id=FAST, waba_id=WABA, display_phone_number="+1 555-000-0001", throughput=1000))
    state.add_number(PhoneNumber(id=SLOW, waba_id=WABA, display_phone_number="+1 555-000-0002", throughput=80))
    server = SandboxServer(state, webhook_threads=webhook_threads).start()
    server.http = urllib3.PoolManager(maxsize=64, retries=False)
    control(server, "templates", {"waba_id": WABA, "name": "order_update", "language": "en_US",
                                  "category": "UTILITY", "components": [
                                      {"type": "HEADER", "format": "TEXT", "text": "Order {{1}}"},
                                      {"type": "BODY", "text": "Hi {{1}}, your order ships on {{2}}."}]})
    control(server, "templates", {"waba_id": WABA, "name": "welcome", "language": "en_US", "category": "MARKETING",
                                  "parameter_format": "NAMED",
                                  "components": [{"type": "BODY", "text": "Hello {{first_name}}!"}]})
    return server


@pytest.fixture
def sandbox():
    server = start_sandbox()
    yield server
    server.close()


def call(server, method, path, body=None, headers=AUTH):
    response = server.http.request(method, server.url + path, headers=headers,
                                   body=json.dumps(body).encode() if body is not None else None)
    return response.status, json.loads(response.data)


def control(server, action, body=None):
    status, data = call(server, "POST" if body is not None else "GET", f"/_sandbox/{action}", body, headers={})
    assert status == 200, data
    return data


def send(server, body, number=FAST):
    return call(server, "POST", f"/v23.0/{number}/messages", body)


def text(to="+4917100000001", body="Hello"):
    return {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to, "type": "text",
            "text": {"body": body, "preview_url": False}}


def order_update(to="4917100000001", body_params=("Ada", "Monday"), name="order_update"):
    return {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to, "type": "template",
            "template": {"name": name, "language": {"code": "en_US", "policy": "deterministic"}, "components": [
                {"type": "header", "parameters": [{"type": "text", "text": "A-17"}]},
                {"type": "body", "parameters": [{"type": "text", "text": value} for value in body_params]}]}}


def assert_meta_error(status, data, code, http_status=400):
    assert status == http_status, data
    error = data["error"]
    assert error["code"] == code
    assert error["message"].startswith(f"(#{code}) ")
    assert error["type"] == "OAuthException"
    assert error["error_data"]["messaging_product"] == "whatsapp" and error["error_data"]["details"]
    assert error["fbtrace_id"]


def _close_all_of(node) -> None:
    """Meta closes each ``allOf`` part with ``additionalProperties: false``, which under JSON Schema rejects
    the properties of the other parts (and Meta's own examples). The closure it means is
    ``unevaluatedProperties: false`` on the whole: rewrite it so, keeping the check strict."""
    if isinstance(node, dict):
        parts = node.get("allOf")
        if isinstance(parts, list) and any(isinstance(p, dict) and p.get("additionalProperties") is False
                                           for p in parts):
            for part in parts:
                if isinstance(part, dict):
                    part.pop("additionalProperties", None)
            node["unevaluatedProperties"] = False
        for value in node.values():
            _close_all_of(value)
    elif isinstance(node, list):
        for value in node:
            _close_all_of(value)


@pytest.fixture(scope="module")
def openapi():
    import yaml
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    document = yaml.safe_load(OPENAPI.read_text())
    _close_all_of(document)
    registry = Registry().with_resource("urn:meta", Resource.from_contents(document, default_specification=DRAFT202012))

    def validator(pointer: str):
        return Draft202012Validator({"$ref": "urn:meta#" + pointer}, registry=registry)

    return document, validator


def test_text_send_answers_with_metas_response_shape_and_a_wamid(sandbox):
    status, data = send(sandbox, text("+4917100000001"))
    assert status == 200
    assert data["messaging_product"] == "whatsapp"
    assert data["contacts"] == [{"input": "+4917100000001", "wa_id": "4917100000001"}]
    assert data["messages"][0]["id"].startswith("wamid.")


def test_template_send_with_matching_parameters_is_accepted(sandbox):
    status, data = send(sandbox, order_update())
    assert status == 200, data
    assert data["messages"][0]["message_status"] == "accepted"


def test_send_and_error_shapes_validate_against_metas_openapi_document(sandbox, openapi):
    document, validator = openapi
    operation = document["paths"]["/{Version}/{Phone-Number-ID}/messages"]["post"]
    request_schema = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].removeprefix("#")
    response_schema = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].removeprefix("#")
    mapping = document["components"]["schemas"][request_schema.rsplit("/", 1)[1]]["discriminator"]["mapping"]
    for body in (text(), order_update()):
        # Message is a oneOf discriminated by "type"; jsonschema has no discriminator, so follow it by hand.
        validator(mapping[body["type"]].removeprefix("#")).validate(body)
        status, data = send(sandbox, body)
        assert status == 200
        validator(response_schema).validate(data)
    for body in (order_update(name="nope"), order_update(body_params=("only one",)), text(to="12")):
        status, data = send(sandbox, body)
        assert status >= 400
        validator("/components/schemas/GraphAPIError").validate(data)
    status, data = call(sandbox, "POST", f"/v23.0/{FAST}/messages", text(), headers={})
    validator("/components/schemas/GraphAPIError").validate(data)


def test_missing_or_wrong_bearer_token_is_401_with_code_190(sandbox):
    status, data = call(sandbox, "POST", f"/v23.0/{FAST}/messages", text(), headers={})
    assert_meta_error(status, data, 190, 401)
    control(sandbox, "config", {"access_token": "the-one"})
    assert_meta_error(*send(sandbox, text()), 190, 401)
    status, _ = call(sandbox, "POST", f"/v23.0/{FAST}/messages", text(),
                     headers={"Authorization": "Bearer the-one"})
    assert status == 200


def test_unknown_template_is_132001(sandbox):
    assert_meta_error(*send(sandbox, order_update(name="no_such_template")), 132001, 404)


def test_template_in_another_language_is_132001(sandbox):
    body = order_update()
    body["template"]["language"]["code"] = "de"
    assert_meta_error(*send(sandbox, body), 132001, 404)


def test_wrong_parameter_count_is_132000(sandbox):
    assert_meta_error(*send(sandbox, order_update(body_params=("Ada",))), 132000)
    assert_meta_error(*send(sandbox, order_update(body_params=("Ada", "Monday", "extra"))), 132000)


def test_named_parameters_must_carry_the_templates_names(sandbox):
    def welcome(name):
        return {"messaging_product": "whatsapp", "to": "4917100000001", "type": "template",
                "template": {"name": "welcome", "language": {"code": "en_US"}, "components": [
                    {"type": "body", "parameters": [{"type": "text", "parameter_name": name, "text": "Ada"}]}]}}

    assert send(sandbox, welcome("first_name"))[0] == 200
    assert_meta_error(*send(sandbox, welcome("last_name")), 132000)


def test_malformed_template_components_are_100(sandbox):
    body = order_update()
    body["template"]["components"][1]["parameters"] = 5
    assert_meta_error(*send(sandbox, body), 100)
    body["template"]["components"] = "body"
    assert_meta_error(*send(sandbox, body), 100)


def test_paused_template_is_132015(sandbox):
    control(sandbox, "templates", {"waba_id": WABA, "name": "paused_one", "language": "en_US", "status": "PAUSED",
                                   "components": [{"type": "BODY", "text": "Hi"}]})
    body = order_update(name="paused_one")
    body["template"]["components"] = []
    assert_meta_error(*send(sandbox, body), 132015)


@pytest.mark.parametrize("to", ["12", "not-a-number", "+0049171", "4917100000001234567"])
def test_malformed_recipient_is_100(sandbox, to):
    assert_meta_error(*send(sandbox, text(to=to)), 100)


def test_missing_recipient_is_131008(sandbox):
    body = text()
    del body["to"]
    assert_meta_error(*send(sandbox, body), 131008)


def test_undeliverable_recipient_is_131026(sandbox):
    control(sandbox, "undeliverable", {"recipients": ["+4917199999999"]})
    assert_meta_error(*send(sandbox, text(to="4917199999999")), 131026)
    assert send(sandbox, text(to="4917100000001"))[0] == 200


def test_unknown_phone_number_id_is_100_with_subcode_33(sandbox):
    status, data = send(sandbox, text(), number="199999999999999")
    assert_meta_error(status, data, 100)
    assert data["error"]["error_subcode"] == 33


def test_invalid_json_is_100(sandbox):
    response = sandbox.http.request("POST", f"{sandbox.url}/v23.0/{FAST}/messages", body=b"{nope", headers=AUTH)
    assert_meta_error(response.status, json.loads(response.data), 100)


def _burst(sandbox, number, count, workers=32):
    bodies = [text(to=f"49171{i:08d}") for i in range(count)]
    with ThreadPoolExecutor(workers) as pool:
        return [status for status, _ in pool.map(lambda body: send(sandbox, body, number), bodies)]


def _most_in_any_second(sandbox, number):
    times = sorted(s["admitted"] for s in control(sandbox, "sends")["sends"] if s["phone_number_id"] == number)
    most, start = 0, 0
    for end, moment in enumerate(times):
        while times[start] <= moment - 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def test_a_1000_mps_number_gets_130429_beyond_1000_sends_in_a_second(sandbox):
    started = time.monotonic()
    statuses = _burst(sandbox, FAST, 1100)
    elapsed = time.monotonic() - started
    assert set(statuses) <= {200, 429}
    assert _most_in_any_second(sandbox, FAST) <= 1000
    if elapsed < 1.0:  # all 1,100 inside one second: 100 must have been refused
        assert statuses.count(429) >= 100
    assert control(sandbox, "stats")["throughput_exceeded"] == statuses.count(429)


def test_an_80_mps_number_gets_130429_beyond_80_sends_in_a_second(sandbox):
    statuses = _burst(sandbox, SLOW, 120, workers=16)
    assert statuses.count(429) >= 1
    assert _most_in_any_second(sandbox, SLOW) <= 80
    status, data = send(sandbox, text(to="4917188888888"), number=SLOW)
    if status == 429:
        assert_meta_error(status, data, 130429, 429)
        assert data["error"]["is_transient"] is True
    time.sleep(1.05)
    assert send(sandbox, text(to="4917188888889"), number=SLOW)[0] == 200


def test_pair_rate_limit_is_131056_for_that_recipient_only(sandbox):
    control(sandbox, "config", {"pair_burst": 2, "pair_interval_seconds": 60})
    assert send(sandbox, text(to="4917100000001"))[0] == 200
    assert send(sandbox, text(to="4917100000001"))[0] == 200
    assert_meta_error(*send(sandbox, text(to="4917100000001")), 131056)
    assert send(sandbox, text(to="4917100000002"))[0] == 200
    assert send(sandbox, text(to="4917100000001"), number=SLOW)[0] == 200  # the pair is per business number


def test_pair_rate_limit_refills_over_time(sandbox):
    control(sandbox, "config", {"pair_burst": 1, "pair_interval_seconds": 0.2})
    assert send(sandbox, text())[0] == 200
    assert send(sandbox, text())[0] == 400
    time.sleep(0.25)
    assert send(sandbox, text())[0] == 200


def test_injected_failures_come_back_with_their_code(sandbox):
    control(sandbox, "config", {"failure_rates": {"131000": 1.0}})
    assert_meta_error(*send(sandbox, text()), 131000, 500)
    control(sandbox, "config", {"failure_rates": {"131016": 0.5}})
    statuses = [send(sandbox, text(to=f"49171{i:08d}"))[0] for i in range(200)]
    assert 40 < statuses.count(503) < 160 and statuses.count(200) == 200 - statuses.count(503)
    assert control(sandbox, "stats")["errors"]["131016"] == statuses.count(503)


def test_latency_is_applied_to_every_graph_call(sandbox):
    control(sandbox, "config", {"latency_ms": 150})
    started = time.monotonic()
    assert send(sandbox, text())[0] == 200
    assert time.monotonic() - started >= 0.15


def test_sends_are_recorded_per_recipient_and_per_number(sandbox):
    send(sandbox, text(to="4917100000001"))
    send(sandbox, order_update(to="+4917100000001"))
    send(sandbox, text(to="4917100000002"), number=SLOW)
    send(sandbox, order_update(name="missing"))
    stats = control(sandbox, "stats")
    assert stats["accepted"] == 3
    assert stats["by_recipient"] == {"4917100000001": 2, "4917100000002": 1}
    assert stats["by_number"] == {FAST: 2, SLOW: 1}
    assert stats["errors"] == {"132001": 1}
    sends = control(sandbox, "sends")["sends"]
    assert [(s["type"], s["template"]) for s in sends] == [("text", None), ("template", "order_update"),
                                                           ("text", None)]
    control(sandbox, "reset", {})
    assert control(sandbox, "stats")["accepted"] == 0


class _Receiver:
    """A webhook receiver on ``port`` (0: a free one) that keeps every body it took and every one it refused."""

    def __init__(self, port: int = 0):
        self.deliveries: list[tuple[dict, bytes]] = []
        self.refused: list[tuple[dict, bytes]] = []
        self.refuse = 0  # answer this many next deliveries with 500, as a receiver having a bad moment
        self.refuse_while = lambda raw: False  # answer 503 to every delivery this says so of, as a receiver down
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.arrived:
                    status = 200
                    if receiver.refuse > 0:
                        receiver.refuse -= 1
                        status = 500
                    elif receiver.refuse_while(raw):
                        status = 503
                    (receiver.deliveries if status == 200 else receiver.refused).append((dict(self.headers), raw))
                    receiver.arrived.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/webhook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def wait_for(self, count, timeout=10.0):
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.deliveries) >= count, timeout), self.deliveries
        return list(self.deliveries)

    def statuses(self):
        return [status for _, raw in self.deliveries for entry in json.loads(raw)["entry"]
                for change in entry["changes"] for status in change["value"].get("statuses", [])]


@pytest.fixture
def receiver(sandbox):
    receiver = _Receiver()
    control(sandbox, "config", {"webhook_url": receiver.url, "webhook_batch": 1})
    yield receiver
    receiver.close()


def _valid_signature(headers, raw):
    expected = "sha256=" + hmac.new(APP_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["X-Hub-Signature-256"], expected)


def test_status_webhooks_arrive_signed_in_order_sent_delivered_read(sandbox, receiver):
    body = order_update()
    body["biz_opaque_callback_data"] = "message-42"
    wamid = send(sandbox, body)[1]["messages"][0]["id"]
    deliveries = receiver.wait_for(3)
    assert all(_valid_signature(headers, raw) for headers, raw in deliveries)
    assert not _valid_signature(deliveries[0][0], deliveries[0][1] + b" ")
    envelope = json.loads(deliveries[0][1])
    assert envelope["object"] == "whatsapp_business_account" and envelope["entry"][0]["id"] == WABA
    value = envelope["entry"][0]["changes"][0]["value"]
    assert envelope["entry"][0]["changes"][0]["field"] == "messages"
    assert value["metadata"] == {"display_phone_number": "15550000001", "phone_number_id": FAST}
    statuses = receiver.statuses()
    assert [s["status"] for s in statuses] == ["sent", "delivered", "read"]
    assert {s["id"] for s in statuses} == {wamid}
    assert statuses[0]["recipient_id"] == "4917100000001"
    assert statuses[0]["biz_opaque_callback_data"] == "message-42"
    assert statuses[0]["pricing"] == {"billable": True, "pricing_model": "PMP", "category": "utility",
                                      "type": "regular"}


def webhooks_once(sandbox, settled, timeout=5.0) -> dict:
    """The sandbox's webhook counts once ``settled(counts)`` holds; it counts a POST after reading the answer."""
    deadline = time.monotonic() + timeout
    while not settled(counts := control(sandbox, "stats")["webhooks"]):
        assert time.monotonic() < deadline, counts
        time.sleep(0.02)
    return counts


def test_a_refused_webhook_is_retried_like_meta_does(sandbox, receiver):
    receiver.refuse = 2
    send(sandbox, text())
    receiver.wait_for(3)
    # The two refused statuses come again after the third: a retry does not hold back later statuses.
    assert sorted(s["status"] for s in receiver.statuses()) == ["delivered", "read", "sent"]
    assert webhooks_once(sandbox, lambda counts: counts["posted"] == 3) == {
        "posted": 3, "failed": 0, "retrying": 0, "pending": 0, "retries": 2, "dropped": 0}


def test_configured_share_of_messages_fail_in_the_webhook_with_a_real_code(sandbox, receiver):
    control(sandbox, "config", {"status_failure_rates": {"131049": 1.0}})
    send(sandbox, text())
    receiver.wait_for(2)
    statuses = receiver.statuses()
    assert [s["status"] for s in statuses] == ["sent", "failed"]
    assert statuses[1]["errors"][0]["code"] == 131049
    assert statuses[1]["errors"][0]["title"] and statuses[1]["errors"][0]["error_data"]["details"]


def test_webhooks_can_be_duplicated_and_out_of_order(sandbox, receiver):
    control(sandbox, "config", {"duplicate_rate": 1.0, "out_of_order_rate": 1.0})
    send(sandbox, text())
    receiver.wait_for(4)
    order = [s["status"] for s in receiver.statuses()]
    assert len(order) == 4 and sorted(set(order)) == ["delivered", "read", "sent"]
    assert max(order.count(status) for status in order) == 2  # one status delivered twice
    assert order.index("read") < order.index("delivered") < order.index("sent")


def test_each_message_keeps_its_status_order_with_many_in_flight(sandbox, receiver):
    control(sandbox, "config", {"webhook_batch": 50})
    wamids = {send(sandbox, text(to=f"49171{i:08d}"))[1]["messages"][0]["id"] for i in range(60)}
    deadline = time.monotonic() + 10
    while len(receiver.statuses()) < 180 and time.monotonic() < deadline:
        time.sleep(0.05)
    seen: dict[str, list[str]] = {}
    for status in receiver.statuses():
        seen.setdefault(status["id"], []).append(status["status"])
    assert set(seen) == wamids
    assert all(order == ["sent", "delivered", "read"] for order in seen.values())


def test_inbound_text_message_webhook_can_be_injected(sandbox, receiver):
    wamid = control(sandbox, "inbound", {"phone_number_id": FAST, "from": "+4917100000009", "text": "STOP",
                                         "name": "Ada"})["id"]
    headers, raw = receiver.wait_for(1)[0]
    assert _valid_signature(headers, raw)
    value = json.loads(raw)["entry"][0]["changes"][0]["value"]
    user_id = value["contacts"][0]["user_id"]
    assert value["contacts"] == [{"profile": {"name": "Ada"}, "wa_id": "4917100000009", "user_id": user_id}]
    assert user_id.startswith("DE.")  # a business-scoped user id, with the country of +49
    assert value["messages"][0]["id"] == wamid
    assert value["messages"][0]["from"] == "4917100000009"
    assert value["messages"][0]["from_user_id"] == user_id
    assert value["messages"][0]["type"] == "text" and value["messages"][0]["text"] == {"body": "STOP"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _delivered_once_each(receiver) -> Counter:
    return Counter((status["id"], status["status"]) for status in receiver.statuses())


def test_statuses_refused_while_the_receiver_is_down_all_arrive_once_it_is_back(sandbox):
    port = _free_port()  # nothing listens there yet: every POST is refused a connection
    control(sandbox, "config", {"webhook_url": f"http://127.0.0.1:{port}/webhook", "webhook_batch": 1,
                                "webhook_retry_max_interval_seconds": 0.2})
    wamids = [send(sandbox, text(to=f"49171000000{i:02d}"))[1]["messages"][0]["id"] for i in range(5)]
    webhooks_once(sandbox, lambda counts: counts["retries"] >= 30)  # every POST refused at least three times
    receiver = _Receiver(port)
    try:
        counts = webhooks_once(sandbox, lambda counts: counts["posted"] == 15)
        assert counts["failed"] == 0 and counts["retrying"] == 0 and counts["dropped"] == 0
        delivered = _delivered_once_each(receiver)
        assert set(delivered) == {(wamid, status) for wamid in wamids for status in ("sent", "delivered", "read")}
        assert set(delivered.values()) == {1}
    finally:
        receiver.close()


def test_statuses_answered_503_for_a_while_arrive_once_as_the_same_signed_bytes(sandbox, receiver):
    control(sandbox, "config", {"webhook_retry_max_interval_seconds": 0.2})
    receiver.refuse_while = lambda raw: True
    send(sandbox, text(), number=FAST)
    send(sandbox, text(), number=SLOW)
    webhooks_once(sandbox, lambda counts: counts["retrying"] == 6 and counts["retries"] >= 12)
    receiver.refuse_while = lambda raw: False
    assert webhooks_once(sandbox, lambda counts: counts["posted"] == 6)["failed"] == 0
    assert set(_delivered_once_each(receiver).values()) == {1} and len(receiver.deliveries) == 6
    delivered = {raw: headers["X-Hub-Signature-256"] for headers, raw in receiver.deliveries}
    assert all(delivered[raw] == headers["X-Hub-Signature-256"] for headers, raw in receiver.refused)
    assert set(delivered) == {raw for _, raw in receiver.refused}


def test_a_webhook_still_failing_past_the_retry_horizon_is_given_up_and_counted(sandbox, receiver, caplog):
    control(sandbox, "config", {"webhook_retry_horizon_seconds": 1.0, "webhook_retry_max_interval_seconds": 0.2})
    receiver.refuse_while = lambda raw: True
    started = time.monotonic()
    send(sandbox, text())
    counts = webhooks_once(sandbox, lambda counts: counts["failed"] == 3)
    assert time.monotonic() - started >= 1.0
    assert counts["posted"] == 0 and counts["retrying"] == 0 and counts["retries"] >= 6
    attempts = Counter(raw for _, raw in receiver.refused)  # the same three bodies, each tried again and again
    assert len(attempts) == 3 and min(attempts.values()) >= 3
    assert sum("gave up on a webhook" in r.getMessage() for r in caplog.records) == 3


def test_fresh_webhooks_keep_flowing_while_another_is_being_retried():
    sandbox = start_sandbox(webhook_threads=1)
    receiver = _Receiver()
    try:
        control(sandbox, "config", {"webhook_url": receiver.url, "webhook_batch": 1,
                                    "webhook_retry_max_interval_seconds": 0.2})
        receiver.refuse_while = lambda raw: b"4917100000666" in raw
        send(sandbox, text(to="4917100000666"))
        webhooks_once(sandbox, lambda counts: counts["retrying"] == 3 and counts["retries"] >= 3)
        sent_at = time.monotonic()
        wamid = send(sandbox, text(to="4917100000001"))[1]["messages"][0]["id"]
        receiver.wait_for(3, timeout=2.0)
        assert time.monotonic() - sent_at < 1.0
        assert {(s["id"], s["status"]) for s in receiver.statuses()} == {
            (wamid, "sent"), (wamid, "delivered"), (wamid, "read")}
        counts = control(sandbox, "stats")["webhooks"]
        assert counts["retrying"] == 3 and counts["failed"] == 0
    finally:
        sandbox.close()
        receiver.close()


def test_a_retry_due_after_the_webhook_url_was_removed_is_dropped(sandbox):
    control(sandbox, "config", {"webhook_url": f"http://127.0.0.1:{_free_port()}/webhook", "webhook_batch": 1,
                                "webhook_retry_max_interval_seconds": 0.2})
    send(sandbox, text())
    webhooks_once(sandbox, lambda counts: counts["retrying"] == 3)
    control(sandbox, "config", {"webhook_url": None})
    counts = webhooks_once(sandbox, lambda counts: counts["dropped"] == 3)
    assert counts["retrying"] == 0 and counts["failed"] == 0 and counts["posted"] == 0


def test_resetting_the_test_sandbox_drops_retries_so_they_never_reach_the_next_tests_receiver(sandbox):
    receiver = _Receiver()
    try:
        control(sandbox, "config", {"webhook_url": f"http://127.0.0.1:{_free_port()}/webhook", "webhook_batch": 1,
                                    "webhook_retry_max_interval_seconds": 0.3})
        send(sandbox, text())
        webhooks_once(sandbox, lambda counts: counts["retrying"] == 3)
        reset_sandbox(sandbox)  # what the meta_sandbox fixture does before the next test
        control(sandbox, "config", {"webhook_url": receiver.url})  # the next test's app, at once
        time.sleep(1.0)
        assert receiver.deliveries == []
        assert control(sandbox, "stats")["webhooks"]["retrying"] == 0
    finally:
        receiver.close()


def test_closing_the_sandbox_does_not_wait_out_the_retry_horizon():
    threads_before = set(threading.enumerate())
    sandbox = start_sandbox()
    control(sandbox, "config", {"webhook_url": f"http://127.0.0.1:{_free_port()}/webhook"})
    send(sandbox, text())
    webhooks_once(sandbox, lambda counts: counts["retrying"] >= 1)
    started = time.monotonic()
    sandbox.close()
    assert time.monotonic() - started < 2.0
    assert not [thread for thread in set(threading.enumerate()) - threads_before
                if thread.name.startswith("sandbox-webhook")]


def test_retry_settings_are_read_and_set_through_the_config_api(sandbox):
    config = control(sandbox, "config")
    assert config["webhook_retry_horizon_seconds"] == 3600.0
    assert config["webhook_retry_max_interval_seconds"] == 5.0
    config = control(sandbox, "config", {"webhook_retry_horizon_seconds": "90",
                                         "webhook_retry_max_interval_seconds": 1})
    assert config["webhook_retry_horizon_seconds"] == 90.0 and config["webhook_retry_max_interval_seconds"] == 1.0
    status, answer = call(sandbox, "POST", "/_sandbox/config", {"webhook_retry_horizon_seconds": -1}, headers={})
    assert status == 400 and "webhook_retry_horizon_seconds" in answer["error"]


@pytest.mark.parametrize("failed_attempts, shortest, longest", [(1, 0.375, 0.5), (2, 0.75, 1.0), (3, 1.5, 2.0),
                                                                (5, 3.75, 5.0), (10_000, 3.75, 5.0)])
def test_retry_pauses_start_at_half_a_second_and_double_up_to_the_maximum(failed_attempts, shortest, longest):
    pauses = [backoff(failed_attempts, max_interval=5.0) for _ in range(200)]
    assert shortest <= min(pauses) and max(pauses) <= longest
    assert len(set(pauses)) > 1  # jittered


def test_accepted_sends_are_grouped_per_number_and_recipient_with_duplicates_counted(sandbox):
    first = send(sandbox, {**text(to="+4917100000001"), "biz_opaque_callback_data": "message-1"})[1]
    again = send(sandbox, {**text(to="4917100000001"), "biz_opaque_callback_data": "message-1"})[1]
    other = send(sandbox, order_update(to="4917100000002"))[1]
    slow = send(sandbox, text(to="4917100000001"), number=SLOW)[1]
    assert send(sandbox, order_update(name="missing"))[0] == 404  # refused: not accepted
    accepted = control(sandbox, "accepted")
    first_send, second_send = accepted["numbers"][FAST]["4917100000001"]
    assert (first_send["id"], second_send["id"]) == (first["messages"][0]["id"], again["messages"][0]["id"])
    assert first_send["at"] <= second_send["at"]
    assert first_send["opaque"] == second_send["opaque"] == "message-1"
    assert first_send["status_acked_at"] is None and first_send["template"] is None
    assert accepted["numbers"][FAST]["4917100000002"] == [
        {"id": other["messages"][0]["id"], "at": accepted["numbers"][FAST]["4917100000002"][0]["at"],
         "opaque": None, "status_acked_at": None, "template": "order_update"}]
    assert [s["id"] for s in accepted["numbers"][SLOW]["4917100000001"]] == [slow["messages"][0]["id"]]
    counts = {"sends": 4, "recipients": 3, "recipients_sent_twice": 1, "duplicate_sends": 1}
    assert {key: accepted[key] for key in counts} == counts

    duplicates = control(sandbox, "accepted?duplicates=true")
    assert duplicates == {"numbers": {FAST: {"4917100000001": [first_send, second_send]}}, **counts}
    assert control(sandbox, f"accepted?phone_number_id={SLOW}") == {
        "numbers": {SLOW: accepted["numbers"][SLOW]}, "sends": 1, "recipients": 1, "recipients_sent_twice": 0,
        "duplicate_sends": 0}
    assert control(sandbox, f"accepted?phone_number_id={SLOW}&duplicates=true")["numbers"] == {}
    status, answer = call(sandbox, "GET", "/_sandbox/accepted?duplicates=yes", headers={})
    assert status == 400 and "duplicates" in answer["error"]


def test_status_acked_at_stays_none_while_the_receiver_refuses_and_keeps_its_first_2xx(sandbox, receiver):
    control(sandbox, "config", {"webhook_retry_max_interval_seconds": 0.2})
    receiver.refuse_while = lambda raw: True
    wamid = send(sandbox, text())[1]["messages"][0]["id"]
    webhooks_once(sandbox, lambda counts: counts["retries"] >= 6)
    [record] = control(sandbox, "accepted")["numbers"][FAST]["4917100000001"]
    assert record["id"] == wamid and record["status_acked_at"] is None
    answering_from = time.time()
    receiver.refuse_while = lambda raw: False
    webhooks_once(sandbox, lambda counts: counts["posted"] == 3)
    [record] = control(sandbox, "accepted")["numbers"][FAST]["4917100000001"]
    assert answering_from <= record["status_acked_at"] <= time.time()
    # The same statuses acknowledged again later leave the first acknowledgement's time in place.
    sandbox.webhooks.message_accepted(sandbox.state.numbers[FAST], "4917100000001", wamid, None, None)
    webhooks_once(sandbox, lambda counts: counts["posted"] == 6)
    assert control(sandbox, "accepted")["numbers"][FAST]["4917100000001"] == [record]


def test_templates_are_listed_with_cursor_paging(sandbox):
    for i in range(5):
        status, created = call(sandbox, "POST", f"/v23.0/{WABA}/message_templates", {
            "name": f"promo_{i}", "category": "MARKETING", "language": "en_US",
            "components": [{"type": "BODY", "text": "Sale {{1}}", "example": {"body_text": [["10%"]]}}]})
        assert status == 200 and created["status"] == "APPROVED" and created["category"] == "MARKETING"
    names, path = [], f"/v23.0/{WABA}/message_templates?limit=3"
    while path:
        status, page = call(sandbox, "GET", path)
        assert status == 200
        names += [t["name"] for t in page["data"]]
        assert set(page["paging"]["cursors"]) == {"before", "after"}
        path = page["paging"].get("next", "").removeprefix(sandbox.url)
    assert names == ["order_update", "welcome"] + [f"promo_{i}" for i in range(5)]
    status, page = call(sandbox, "GET", f"/v23.0/{WABA}/message_templates?name=promo_3")
    assert [t["name"] for t in page["data"]] == ["promo_3"]
    assert page["data"][0]["components"][0]["text"] == "Sale {{1}}"


def test_a_created_template_can_be_sent(sandbox):
    call(sandbox, "POST", f"/v23.0/{WABA}/message_templates", {
        "name": "promo", "category": "MARKETING", "language": "en_US",
        "components": [{"type": "BODY", "text": "Sale {{1}}"}]})
    body = {"messaging_product": "whatsapp", "to": "4917100000001", "type": "template",
            "template": {"name": "promo", "language": {"code": "en_US"},
                         "components": [{"type": "body", "parameters": [{"type": "text", "text": "10%"}]}]}}
    assert send(sandbox, body)[0] == 200


@pytest.mark.parametrize("template", [
    {"name": "Bad Name", "category": "MARKETING", "language": "en_US", "components": [{"type": "BODY", "text": "x"}]},
    {"name": "ok", "category": "SPAM", "language": "en_US", "components": [{"type": "BODY", "text": "x"}]},
    {"name": "ok", "category": "UTILITY", "language": "en_US", "components": [{"type": "FOOTER", "text": "x"}]},
    {"name": "order_update", "category": "UTILITY", "language": "en_US", "components": [{"type": "BODY", "text": "x"}]},
])
def test_invalid_or_duplicate_template_creation_is_100(sandbox, template):
    assert_meta_error(*call(sandbox, "POST", f"/v23.0/{WABA}/message_templates", template), 100)


def test_phone_numbers_are_listed_with_their_throughput(sandbox):
    status, page = call(sandbox, "GET", f"/v23.0/{WABA}/phone_numbers")
    assert status == 200
    assert {n["id"]: n["throughput"]["level"] for n in page["data"]} == {FAST: "HIGH", SLOW: "STANDARD"}
    assert {"display_phone_number", "verified_name", "quality_rating"} <= set(page["data"][0])
    assert_meta_error(*call(sandbox, "GET", "/v23.0/299999999999999/phone_numbers"), 100)


@pytest.mark.slow
def test_100_ms_of_latency_does_not_serialize_concurrent_sends(sandbox):
    """250 keep-alive clients in flight for 2 s: latency is waited per request, not in line, and the
    number's window is never exceeded.

    How fast the sandbox goes (over 1,000 sends/s here) is a benchmark's figure, not a test's: this
    test only asserts what holds on a busy machine too — far more than the 10/s one-at-a-time 100 ms
    requests would give, and never more than 1,000 admitted in any second.
    """
    control(sandbox, "config", {"latency_ms": 100})
    import http.client

    host, port = sandbox.httpd.server_address[:2]
    stop = time.monotonic() + 2.0
    counts: list[tuple[int, int]] = []

    def client(worker: int) -> None:
        connection, answered, accepted = http.client.HTTPConnection(host, port, timeout=10), 0, 0
        while time.monotonic() < stop:
            connection.request("POST", f"/v23.0/{FAST}/messages",
                               json.dumps(text(to=f"4917{worker:03d}{answered:06d}")), AUTH)
            response = connection.getresponse()
            response.read()
            answered += 1
            accepted += response.status == 200
        connection.close()
        counts.append((answered, accepted))

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(250)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    answered, accepted = (sum(column) for column in zip(*counts))
    assert answered / elapsed >= 250, f"{answered / elapsed:.0f} answers/s: requests are waiting in line"
    assert accepted > 0
    assert _most_in_any_second(sandbox, FAST) <= 1000


def test_kloyst_sandbox_command_serves_numbers_of_any_throughput_with_its_retry_settings():
    port = _free_port()
    ini = Path(__file__).resolve().parents[2] / "development.ini"
    process = subprocess.Popen([str(Path(sys.executable).with_name("kloyst")), "sandbox", str(ini), "--port", str(port),
                                "--latency-ms", "0", "--number", "100000000000007:150", "--number", "100000000000008",
                                "--webhook-retry-seconds", "60", "--webhook-retry-max-interval", "2"],
                               stdout=subprocess.PIPE, text=True)
    try:
        banner = json.loads(process.stdout.readline())
        assert banner["phone_numbers"] == {"100000000000007": 150, "100000000000008": 1000}
        http = urllib3.PoolManager()
        response = http.request("POST", f"{banner['url']}/v23.0/100000000000007/messages",
                                body=json.dumps(text()).encode(), headers=AUTH)
        assert response.status == 200 and json.loads(response.data)["messages"][0]["id"].startswith("wamid.")
        numbers = json.loads(http.request("GET", f"{banner['url']}/v23.0/{WABA}/phone_numbers", headers=AUTH).data)
        assert {n["id"]: n["throughput"]["level"] for n in numbers["data"]} == {
            "100000000000007": "STANDARD", "100000000000008": "HIGH"}
        config = json.loads(http.request("GET", f"{banner['url']}/_sandbox/config").data)
        assert config["webhook_retry_horizon_seconds"] == 60.0
        assert config["webhook_retry_max_interval_seconds"] == 2.0
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize("number", ["100000000000007:0", "100000000000007:-5", "100000000000007:1.5",
                                    "100000000000007:fast", "abc:80"])
def test_kloyst_sandbox_command_refuses_a_throughput_that_is_not_a_positive_whole_number(number, capsys):
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["sandbox", "development.ini", "--number", number])
    assert "PHONE_NUMBER_ID[:MPS]" in capsys.readouterr().err


def _operation_schema(document, validator, path, method, status="200"):
    """The validator of an operation's JSON answer in Meta's document (inline schemas resolved in place)."""
    content = document["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
    if "$ref" in content:
        return validator(content["$ref"].removeprefix("#"))
    from jsonschema import Draft202012Validator

    return Draft202012Validator(content)


def test_media_profile_number_waba_and_template_answers_validate_against_metas_openapi_document(sandbox, openapi):
    document, validator = openapi
    fields, content_type = urllib3.encode_multipart_formdata({
        "messaging_product": "whatsapp", "type": "image/jpeg", "file": ("a.jpg", b"\xff\xd8\xff" * 40, "image/jpeg")})
    upload = sandbox.http.request("POST", f"{sandbox.url}/v23.0/{FAST}/media", body=fields,
                                  headers={"Authorization": "Bearer t", "Content-Type": content_type})
    media_id = json.loads(upload.data)["id"]
    answers = [
        ("/{Version}/{Phone-Number-ID}/media", "post", (upload.status, json.loads(upload.data))),
        ("/{Version}/{Media-ID}", "get", call(sandbox, "GET", f"/v23.0/{media_id}")),
        ("/{Version}/{Phone-Number-ID}", "get", call(sandbox, "GET", f"/v23.0/{FAST}")),
        ("/{Version}/{Phone-Number-ID}", "get",
         call(sandbox, "GET", f"/v23.0/{FAST}?fields=id,display_phone_number,name_status,code_verification_status")),
        ("/{Version}/{Phone-Number-ID}/whatsapp_business_profile", "get",
         call(sandbox, "GET", f"/v23.0/{FAST}/whatsapp_business_profile")),
        ("/{Version}/{Phone-Number-ID}/whatsapp_business_profile", "post",
         call(sandbox, "POST", f"/v23.0/{FAST}/whatsapp_business_profile",
              {"messaging_product": "whatsapp", "about": "Open 9-5"})),
        ("/{Version}/{WABA-ID}", "get", call(sandbox, "GET", f"/v23.0/{WABA}")),
        ("/{Version}/{WABA-ID}", "get", call(sandbox, "GET", f"/v23.0/{WABA}?fields=id,name,currency,country,"
                                                              "account_review_status,ownership_type,"
                                                              "business_verification_status,timezone_id")),
        ("/{Version}/{WABA-ID}/message_templates", "get",
         call(sandbox, "GET", f"/v23.0/{WABA}/message_templates?summary=total_count&fields=name,status")),
        ("/{Version}/{Media-ID}", "delete", call(sandbox, "DELETE", f"/v23.0/{media_id}")),
    ]
    for path, method, (status, data) in answers:
        assert status == 200, (path, data)
        _operation_schema(document, validator, path, method).validate(data)
    for status, data in (call(sandbox, "GET", f"/v23.0/{media_id}"), call(sandbox, "GET", "/v99.9/x"),
                         call(sandbox, "GET", f"/v23.0/{FAST}?fields=nope")):
        assert status == 400
        validator("/components/schemas/GraphAPIError").validate(data)


def _key_paths(node, prefix="") -> set[str]:
    """Every key path of a JSON value (``messages[].text.body``): its shape, without its values."""
    if isinstance(node, dict):
        return {path for key, value in node.items() for path in {prefix + key} | _key_paths(value, prefix + key + ".")}
    if isinstance(node, list):
        return {path for item in node for path in _key_paths(item, prefix.removesuffix(".") + "[].")}
    return set()


# What Meta's webhooks gained after the v23.0 document: business-scoped user ids (and the envelope's time).
BSUID_PATHS = {"contacts[].user_id", "contacts[].parent_user_id", "contacts[].profile.username",
               "messages[].from_user_id", "messages[].from_parent_user_id"}


def test_inbound_webhooks_have_the_shape_of_metas_webhook_examples(sandbox, receiver, openapi):
    """Meta's ``WebhookPayload`` schema rejects Meta's own examples (its incoming messages point at the outgoing
    message schemas), so the sandbox's inbound webhooks are held to the examples instead: the same key paths,
    plus only the BSUID fields Meta added since (BSUID-only shapes are pywa's to check, test_sandbox_pywa.py)."""
    document, _ = openapi
    examples = {name: example["value"]["entry"][0]["changes"][0]["value"] for name, example in
                document["paths"]["/whatsapp/webhooks"]["post"]["requestBody"]["content"]["application/json"][
                    "examples"].items()}
    image = {"data_base64": "/9j/4AAQ", "mime_type": "image/jpeg", "caption": "Taj Mahal"}
    location = {"latitude": 1.5, "longitude": 2.5, "name": "Philz", "address": "101 Forest Ave",
                "url": "https://philzcoffee.com/"}
    cases = {"Text Message": {"text": "hi"},
             "Image Message": {"type": "image", "media": image},
             "Location Message": {"type": "location", "location": location},
             "Button Message": {"type": "button", "button": {"payload": "STOP", "text": "Stop"}},
             "Interactive Button Reply Message": {"type": "interactive", "interactive": {
                 "type": "button_reply", "id": "y", "title": "Yes"}},
             "Interactive List Reply Message": {"type": "interactive", "interactive": {
                 "type": "list_reply", "id": "s", "title": "Small", "description": "250 ml"}},
             "Reaction Message": {"type": "reaction", "reaction": {"message_id": "wamid.X", "emoji": "👍"}}}
    for name, extra in cases.items():
        receiver.deliveries.clear()
        control(sandbox, "customers/inbound", {"phone_number_id": FAST, "from": "+4917100000001", **extra})
        (_, raw), = receiver.wait_for(1)
        envelope = json.loads(raw)
        assert _key_paths(envelope) - _key_paths({"entry": [{"changes": [{}]}]}) >= {
            "object", "entry[].id", "entry[].changes[].field", "entry[].changes[].value"}, name
        ours, metas = _key_paths(envelope["entry"][0]["changes"][0]["value"]), _key_paths(examples[name])
        assert metas <= ours, (name, metas - ours)
        assert ours - metas <= BSUID_PATHS, (name, ours - metas - BSUID_PATHS)
