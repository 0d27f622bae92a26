"""``GET|POST /webhook/whatsapp``: the handshake, raw-byte signatures, a 200 only once stored (docs/operations.md).

The commit behind the 200, its grouping and its failures, with real commits: test_webhooks_durability.py.
"""

import json
import logging

import pytest
import webtest
from webhooks_support import APP_SECRET, deliveries, envelope, post, sign, status, statuses

from kloyst.http.tweens import SECURITY_HEADERS
from kloyst.webhooks import MAX_BODY_BYTES, WEBHOOK_PATH
from kloyst.webhooks.drainer import drain_once
from kloyst_plugins.messages.models import MessageStatus

VERIFY = {"hub.mode": "subscribe", "hub.verify_token": "test-verify-token", "hub.challenge": "1158201444"}


def test_verification_with_our_token_echoes_the_challenge_as_text(testapp):
    response = testapp.get(WEBHOOK_PATH, VERIFY, status=200)
    assert response.text == "1158201444"
    assert response.content_type == "text/plain"


def test_verification_with_a_wrong_token_is_403(testapp):
    response = testapp.get(WEBHOOK_PATH, {**VERIFY, "hub.verify_token": "guess"}, status=403)
    assert response.json["error"]["code"] == "invalid_verify_token"


@pytest.mark.parametrize("missing", ["hub.mode", "hub.challenge"])
def test_verification_without_subscribe_mode_or_challenge_is_400_saying_what_is_needed(testapp, missing):
    params = {key: value for key, value in VERIFY.items() if key != missing}
    response = testapp.get(WEBHOOK_PATH, params, status=400)
    assert "hub.mode=subscribe" in response.json["error"]["message"]


def test_a_signed_post_is_answered_200_once_its_delivery_is_stored_and_the_drainer_applies_it(testapp, registry, db,
                                                                                             build):
    line = build.line()
    message = build.message(line)
    body = statuses(line, status(message.wamid, "read"))
    response = post(testapp, body)
    assert response.json == {"ok": True}
    [stored] = deliveries(db)  # in the database by the time the answer came
    assert (stored.body, stored.processed_at) == (body, None)
    assert drain_once(registry) == 1
    [applied] = deliveries(db)
    assert applied.processed_at is not None and applied.error is None
    assert build.reload(message).status == MessageStatus.READ.value


def test_metas_retry_of_the_same_bytes_is_answered_200_and_stored_once(testapp, db, build):
    body = statuses(build.line(), status("wamid.retried", "sent"))
    post(testapp, body)
    post(testapp, body)
    assert [stored.body for stored in deliveries(db)] == [body]


@pytest.mark.parametrize("signature", [
    None,  # no header at all
    "",
    sign(b"another body"),
    "sha256=" + "0" * 64,
    "sha1=" + "0" * 40,
    "sha256=not-hex-\u00e9",
])
def test_a_missing_wrong_or_sha1_signature_is_401_and_nothing_is_stored(testapp, registry, db, build, signature):
    body = statuses(build.line(), status("wamid.x", "sent"))
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    response = testapp.post(WEBHOOK_PATH, body, headers=headers, status=401)
    assert response.json["error"]["code"] == "invalid_signature"
    assert "WWW-Authenticate" not in response.headers
    assert deliveries(db) == []


def test_a_sha1_signature_is_refused_with_a_message_naming_sha256(testapp, build):
    body = statuses(build.line(), status("wamid.x", "sent"))
    response = post(testapp, body, signature="sha1=" + "0" * 40, status=401)
    assert "sha256=" in response.json["error"]["message"]


def test_an_emoji_body_signed_over_its_raw_bytes_is_valid_and_reserialised_json_would_not_be(testapp, registry, db,
                                                                                            build):
    line = build.line()
    body = envelope(line, {"contacts": [{"profile": {"name": "Zoë 😀"}, "wa_id": "12025550123"}],
                           "messages": [{"from": "12025550123", "id": "wamid.emoji", "timestamp": "1700000000",
                                         "type": "text", "text": {"body": "Olá 😀 café"}}]})
    assert b"\\ud83d\\ude00" in body  # Meta escapes non-ASCII, as json.dumps does by default
    reserialised = json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False).encode()
    assert reserialised != body
    # The bug this guards against: verifying a re-serialised body instead of the bytes received.
    post(testapp, body, signature=sign(reserialised), status=401)
    post(testapp, body, signature=sign(body), status=200)
    drain_once(registry)
    [stored] = deliveries(db)
    assert stored.body == body


def test_a_body_over_metas_3_mb_is_413_and_not_stored(testapp, db):
    body = b"{" + b" " * MAX_BODY_BYTES + b"}"
    response = testapp.post(WEBHOOK_PATH, body, headers={"X-Hub-Signature-256": sign(body, APP_SECRET)},
                            content_type="application/json", status=413)
    assert response.json["error"]["code"] == "payload_too_large"
    assert deliveries(db) == []


def test_the_answer_carries_the_security_headers_a_request_id_and_a_network_log_line(testapp, build, caplog):
    body = statuses(build.line(), status("wamid.x", "sent"))
    with caplog.at_level(logging.INFO, logger="kloyst.network"):
        response = testapp.post(WEBHOOK_PATH, body, headers={"X-Hub-Signature-256": sign(body),
                                                             "X-Request-ID": "meta-delivery-0001"})
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    assert response.headers["X-Request-ID"] == "meta-delivery-0001"
    [line] = [r for r in caplog.records if r.name == "kloyst.network"]
    assert (line.route, line.status, line.request_id, line.bytes_in) == ("webhooks.whatsapp", 200,
                                                                        "meta-delivery-0001", len(body))


def test_a_delivery_that_cannot_be_stored_is_503_so_that_meta_retries(testapp, db, db_connection, build):
    # The test's transaction is what the committer writes in: a failed statement there stands for a database
    # that refuses the insert (the real refusals, on real commits, are in test_webhooks_durability.py).
    db_connection.exec_driver_sql("ALTER TABLE webhook_delivery ADD CONSTRAINT test_refuses_all CHECK (false) "
                                  "NOT VALID")
    response = post(testapp, statuses(build.line(), status("wamid.x", "sent")), status=503)
    assert response.json["error"]["code"] == "service_unavailable"
    db_connection.exec_driver_sql("ALTER TABLE webhook_delivery DROP CONSTRAINT test_refuses_all")
    assert deliveries(db) == []


def test_other_methods_on_the_webhook_path_go_to_the_router(testapp):
    response = testapp.put(WEBHOOK_PATH, b"{}", status=405)
    assert response.json["error"]["details"]["allowed"] == ["GET", "HEAD", "POST"]


def test_the_routed_post_view_is_the_same_receiver(wsgi_app, db, db_connection, build):
    """What answers a POST when the app runs under another execution policy (Pyramid's default)."""
    from pyramid.router import default_execution_policy

    body = statuses(build.line(), status("wamid.routed", "sent"))
    for signature, expected in ((sign(b"other"), 401), (sign(body), 200)):
        request = webtest.TestRequest.blank(WEBHOOK_PATH, method="POST", body=body,
                                            headers={"X-Hub-Signature-256": signature})
        response = request.get_response(lambda environ, start: default_execution_policy(environ, wsgi_app)(
            environ, start))
        assert response.status_int == expected
    assert [stored.body for stored in deliveries(db)] == [body]
