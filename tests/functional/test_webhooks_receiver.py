"""``GET|POST /webhook/whatsapp``: the handshake, signatures over raw bytes, a fast and durable 200 (RELIABILITY A6)."""

import json
import logging

import pytest
import redis
import sqlalchemy as sa
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


def test_a_signed_post_is_200_queued_in_redis_and_stored_by_the_drainer(testapp, registry, db, build):
    line = build.line()
    body = statuses(line, status("wamid.unknown-1", "sent"))
    response = post(testapp, body)
    assert response.json == {"ok": True}
    assert registry["kloyst.webhook_inbox"].depth() == 1
    assert deliveries(db) == []  # the request wrote nothing to the database
    assert drain_once(registry) == 1
    [stored] = deliveries(db)
    assert stored.body == body
    assert stored.processed_at is not None and stored.error is None


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
    assert registry["kloyst.webhook_inbox"].depth() == 0
    drain_once(registry)
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


def test_a_locked_database_does_not_hold_up_the_200_and_the_work_waits_in_redis(testapp, registry, db,
                                                                                db_connection, build):
    line = build.line()
    message = build.message(line)
    # Should the request touch the table, it fails in a second instead of answering 200.
    db_connection.execute(sa.text("SET lock_timeout = '1s'"))
    blocker = registry["kloyst.engine"].connect()
    try:
        lock = blocker.begin()
        blocker.execute(sa.text("LOCK TABLE webhook_delivery IN ACCESS EXCLUSIVE MODE"))
        post(testapp, statuses(line, status(message.wamid, "delivered")), status=200)
        assert registry["kloyst.webhook_inbox"].depth() == 1
        lock.rollback()
    finally:
        blocker.close()
    db_connection.execute(sa.text("SET lock_timeout = 0"))
    drain_once(registry)
    assert build.reload(message).status == MessageStatus.DELIVERED.value


def test_without_redis_the_request_writes_the_delivery_row_for_the_drainer(testapp, registry, db, build,
                                                                          monkeypatch):
    monkeypatch.setitem(registry, "kloyst.webhook_inbox", None)  # the embedded default
    line = build.line()
    message = build.message(line)
    body = statuses(line, status(message.wamid, "read"))
    post(testapp, body)
    post(testapp, body)  # Meta's retry of the same bytes: still one row
    [stored] = deliveries(db)
    assert stored.processed_at is None
    assert drain_once(registry) == 1
    assert deliveries(db)[0].processed_at is not None
    assert build.reload(message).status == MessageStatus.READ.value


def test_a_body_over_metas_3_mb_is_413_and_not_stored(testapp, registry):
    body = b"{" + b" " * MAX_BODY_BYTES + b"}"
    response = testapp.post(WEBHOOK_PATH, body, headers={"X-Hub-Signature-256": sign(body, APP_SECRET)},
                            content_type="application/json", status=413)
    assert response.json["error"]["code"] == "payload_too_large"
    assert registry["kloyst.webhook_inbox"].depth() == 0


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


def test_an_unreachable_inbox_is_503_so_that_meta_retries(testapp, registry, build, monkeypatch):
    def down(body, received_at):
        raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(registry["kloyst.webhook_inbox"], "push", down)
    response = post(testapp, statuses(build.line(), status("wamid.x", "sent")), status=503)
    assert response.json["error"]["code"] == "service_unavailable"


def test_other_methods_on_the_webhook_path_go_to_the_router(testapp):
    response = testapp.put(WEBHOOK_PATH, b"{}", status=405)
    assert response.json["error"]["details"]["allowed"] == ["GET", "HEAD", "POST"]


def test_the_routed_post_view_is_the_same_receiver(wsgi_app, registry, db, db_connection, build):
    """What answers a POST when the app runs under another execution policy (Pyramid's default)."""
    from pyramid.router import default_execution_policy

    body = statuses(build.line(), status("wamid.routed", "sent"))
    for signature, expected in ((sign(b"other"), 401), (sign(body), 200)):
        request = webtest.TestRequest.blank(WEBHOOK_PATH, method="POST", body=body,
                                            headers={"X-Hub-Signature-256": signature})
        response = request.get_response(lambda environ, start: default_execution_policy(environ, wsgi_app)(
            environ, start))
        assert response.status_int == expected
    assert registry["kloyst.webhook_inbox"].depth() == 1
