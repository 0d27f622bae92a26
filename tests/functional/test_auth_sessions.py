"""An access token ends with its session (issue 15, finding 3).

Each event that ends a session must end the access tokens issued in it *at once*, not when
they expire ten minutes later: sign-out, a refresh-token reuse (the family is revoked), a
password change or reset, a disable and a role change. Each test first shows the token works,
so the 401 after the event is the event's doing. A token that claims a lifetime longer than
the configured access TTL is refused however well it is signed.
"""

from __future__ import annotations

import time

import jwt
import pytest

from kloyst.testing import TEST_PASSWORD

ME = "/v1/auth/me"
NEW_PASSWORD = "another long passphrase 42"


def sign_in(testapp, email: str, password: str = TEST_PASSWORD) -> dict:
    return testapp.post_json("/v1/auth/login", {"email": email, "password": password}, status=200).json


def me(testapp, access_token: str, status: int):
    return testapp.get(ME, headers={"Authorization": f"Bearer {access_token}"}, status=status)


def assert_ended(testapp, access_token: str) -> None:
    assert me(testapp, access_token, 401).json["error"]["code"] == "invalid_token"


@pytest.fixture
def session(testapp, owner) -> dict:
    pair = sign_in(testapp, owner.user.email)
    me(testapp, pair["access_token"], 200)
    return pair


def test_sign_out_ends_the_sessions_access_token_at_once(testapp, owner, session):
    other_device = sign_in(testapp, owner.user.email)
    testapp.post_json("/v1/auth/logout", {"refresh_token": session["refresh_token"]}, status=204)
    assert_ended(testapp, session["access_token"])
    me(testapp, other_device["access_token"], 200)  # only the session signed out of ends


def test_a_refresh_token_reuse_ends_every_access_token_of_the_family(testapp, session):
    rotated = testapp.post_json("/v1/auth/refresh", {"refresh_token": session["refresh_token"]}, status=200).json
    me(testapp, rotated["access_token"], 200)
    testapp.post_json("/v1/auth/refresh", {"refresh_token": session["refresh_token"]}, status=401)
    assert_ended(testapp, session["access_token"])
    assert_ended(testapp, rotated["access_token"])


def test_a_password_change_ends_every_session_but_answers_a_new_one(testapp, owner, session):
    other_device = sign_in(testapp, owner.user.email)
    changed = testapp.post_json("/v1/auth/password/change",
                                {"current_password": TEST_PASSWORD, "new_password": NEW_PASSWORD},
                                headers={"Authorization": f"Bearer {session['access_token']}"}, status=200).json
    assert_ended(testapp, session["access_token"])
    assert_ended(testapp, other_device["access_token"])
    testapp.post_json("/v1/auth/refresh", {"refresh_token": other_device["refresh_token"]}, status=401)
    me(testapp, changed["access_token"], 200)
    sign_in(testapp, owner.user.email, NEW_PASSWORD)


def test_a_password_change_needs_the_current_password(testapp, owner, session):
    refused = testapp.post_json("/v1/auth/password/change",
                                {"current_password": "not the password", "new_password": NEW_PASSWORD},
                                headers={"Authorization": f"Bearer {session['access_token']}"}, status=422).json
    assert [f["field"] for f in refused["error"]["details"]["fields"]] == ["current_password"]
    me(testapp, session["access_token"], 200)


def test_a_password_reset_ends_every_access_token(testapp, owner, session, run_outbox, mailbox):
    testapp.post_json("/v1/auth/password/forgot", {"email": owner.user.email}, status=202)
    run_outbox()
    [message] = mailbox.to(owner.user.email)
    token = message.get_content().split("token=", 1)[1].split()[0]
    testapp.post_json("/v1/auth/password/reset", {"token": token, "password": NEW_PASSWORD}, status=200)
    assert_ended(testapp, session["access_token"])


def test_disabling_a_user_ends_their_access_tokens_at_once(testapp, accounts, db, owner):
    member = accounts.user(owner.vendor)
    db.commit()
    pair = sign_in(testapp, member.user.email)
    me(testapp, pair["access_token"], 200)
    testapp.patch_json(f"/v1/vendor/users/{member.user.id}", {"disabled": True}, headers=owner.headers, status=200)
    assert_ended(testapp, pair["access_token"])


def test_a_role_change_ends_the_users_access_tokens_at_once(testapp, accounts, db, owner):
    member = accounts.user(owner.vendor)
    db.commit()
    pair = sign_in(testapp, member.user.email)
    me(testapp, pair["access_token"], 200)
    testapp.patch_json(f"/v1/vendor/users/{member.user.id}", {"role": "admin"}, headers=owner.headers, status=200)
    assert_ended(testapp, pair["access_token"])
    # Signing in again gives a token with the new role.
    assert me(testapp, sign_in(testapp, member.user.email)["access_token"], 200).json["user"]["role"] == "admin"


def _signed(registry, session_token: str, **changes) -> str:
    """The session's own access token, its claims changed and signed again with Kloyst's key."""
    kid, key = next(iter(registry.settings["kloyst.jwt.signing_keys"].items()))
    claims = jwt.decode(session_token, options={"verify_signature": False})
    claims.update(changes)
    return jwt.encode(claims, key, algorithm="HS256", headers={"kid": kid, "typ": "at+jwt"})


def test_a_token_living_longer_than_the_access_ttl_is_refused(testapp, registry, session):
    ttl = registry.settings["kloyst.jwt.access_ttl_seconds"]
    leeway = registry.settings["kloyst.jwt.leeway_seconds"]
    now = int(time.time())
    me(testapp, _signed(registry, session["access_token"], iat=now, nbf=now, exp=now + ttl), 200)
    assert_ended(testapp, _signed(registry, session["access_token"], iat=now, nbf=now, exp=now + 365 * 86400))
    assert_ended(testapp, _signed(registry, session["access_token"], iat=now, nbf=now, exp=now + ttl + leeway + 1))


def test_a_token_without_a_session_is_refused(testapp, registry, session):
    claims = jwt.decode(session["access_token"], options={"verify_signature": False})
    del claims["sid"]
    kid, key = next(iter(registry.settings["kloyst.jwt.signing_keys"].items()))
    assert_ended(testapp, jwt.encode(claims, key, algorithm="HS256", headers={"kid": kid, "typ": "at+jwt"}))
