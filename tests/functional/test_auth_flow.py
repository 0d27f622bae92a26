"""The sign-up → verify → sign-in → refresh life cycle, end to end over HTTP."""

import re

from kloyst.testing import TEST_PASSWORD


def _token_from(message) -> str:
    body = message.get_content()
    return re.search(r"token=([A-Za-z0-9_-]{20,})", body).group(1)


def signup(testapp, email="owner@example.com", password=TEST_PASSWORD):
    return testapp.post_json("/v1/auth/signup", {"vendor_name": "Acme", "name": "Olga", "email": email,
                                                  "password": password}, status=202)


def test_signup_verify_login_refresh_and_reuse_kills_the_family(testapp, run_outbox, mailbox):
    signup(testapp)

    login = {"email": "owner@example.com", "password": TEST_PASSWORD}
    refused = testapp.post_json("/v1/auth/login", login, status=403).json
    assert refused["error"]["code"] == "email_not_verified"

    assert run_outbox() >= 1
    [message] = mailbox.to("owner@example.com")
    testapp.post_json("/v1/auth/verify-email", {"token": _token_from(message)}, status=200)

    tokens = testapp.post_json("/v1/auth/login", login, status=200).json
    me = testapp.get("/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}).json
    assert me["user"]["email"] == "owner@example.com"
    assert me["vendor"]["name"] == "Acme"

    rotated = testapp.post_json("/v1/auth/refresh", {"refresh_token": tokens["refresh_token"]}, status=200).json
    assert rotated["refresh_token"] != tokens["refresh_token"]

    reuse = testapp.post_json("/v1/auth/refresh", {"refresh_token": tokens["refresh_token"]}, status=401).json
    assert reuse["error"]["code"] == "invalid_refresh_token"
    # The reuse revoked the whole family: the newest token is dead too.
    testapp.post_json("/v1/auth/refresh", {"refresh_token": rotated["refresh_token"]}, status=401)
