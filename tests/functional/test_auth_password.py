"""Password reset, email verification and sign-in answers that reveal nothing (OWASP API2).

Mail goes through the outbox, so each test runs the relay (``run_outbox``) and reads the
file mailer's directory (``mailbox``), exactly as a user's inbox would receive it.
"""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import select, text, update

from kloyst.auth.models import OneTimeToken
from kloyst.auth.tokens import secret_hash
from kloyst.db import utcnow
from kloyst.testing import TEST_PASSWORD

NEW_PASSWORD = "a brand new passphrase 42"


def token_in(message) -> str:
    return re.search(r"token=([A-Za-z0-9_-]{20,})", message.get_content()).group(1)


def login(testapp, email: str, password: str, status: int = 200):
    return testapp.post_json("/v1/auth/login", {"email": email, "password": password}, status=status)


def forgot(testapp, email: str):
    return testapp.post_json("/v1/auth/password/forgot", {"email": email}, status=202)


def reset(testapp, token: str, password: str = NEW_PASSWORD, status: int = 200):
    return testapp.post_json("/v1/auth/password/reset", {"token": token, "password": password}, status=status)


def mailed_reset_token(testapp, run_outbox, mailbox, email: str) -> str:
    forgot(testapp, email)
    run_outbox()
    messages = mailbox.to(email)
    assert messages, f"no reset mail reached {email}"
    return token_in(messages[-1])


def test_reset_by_mail_replaces_the_password_and_ends_every_session(testapp, owner, run_outbox, mailbox):
    email = owner.user.email
    before = login(testapp, email, TEST_PASSWORD).json

    token = mailed_reset_token(testapp, run_outbox, mailbox, email)
    [message] = mailbox.to(email)
    assert "reset" in message["Subject"].lower()
    reset(testapp, token)

    assert login(testapp, email, TEST_PASSWORD, 401).json["error"]["code"] == "invalid_credentials"
    after = login(testapp, email, NEW_PASSWORD).json
    testapp.get("/v1/auth/me", headers={"Authorization": f"Bearer {after['access_token']}"}, status=200)
    # Sessions from before the reset are over: refresh families revoked, access tokens stale.
    testapp.post_json("/v1/auth/refresh", {"refresh_token": before["refresh_token"]}, status=401)
    testapp.get("/v1/auth/me", headers={"Authorization": f"Bearer {before['access_token']}"}, status=401)


def test_forgot_for_an_unknown_email_answers_the_same_and_sends_nothing(testapp, owner, run_outbox, mailbox):
    known = forgot(testapp, owner.user.email)
    unknown = forgot(testapp, "nobody-at-all@example.com")
    assert unknown.json == known.json
    run_outbox()
    assert mailbox.to("nobody-at-all@example.com") == []
    assert len(mailbox.to(owner.user.email)) == 1


def test_used_reset_token_is_refused(testapp, owner, run_outbox, mailbox):
    token = mailed_reset_token(testapp, run_outbox, mailbox, owner.user.email)
    reset(testapp, token)
    again = reset(testapp, token, "yet another passphrase 7", status=422).json
    assert again["error"]["code"] == "invalid_token"
    login(testapp, owner.user.email, NEW_PASSWORD)


def test_expired_reset_token_is_refused(testapp, owner, db, run_outbox, mailbox):
    token = mailed_reset_token(testapp, run_outbox, mailbox, owner.user.email)
    db.execute(update(OneTimeToken).where(OneTimeToken.token_hash == secret_hash(token))
               .values(expires_at=utcnow() - dt.timedelta(seconds=1)))
    db.commit()
    assert reset(testapp, token, status=422).json["error"]["code"] == "invalid_token"
    login(testapp, owner.user.email, TEST_PASSWORD)


def test_reset_token_expires_after_an_hour(testapp, owner, db, run_outbox, mailbox):
    token = mailed_reset_token(testapp, run_outbox, mailbox, owner.user.email)
    row = db.scalars(select(OneTimeToken).where(OneTimeToken.token_hash == secret_hash(token))).one()
    assert abs((row.expires_at - row.created_at) - dt.timedelta(hours=1)) < dt.timedelta(seconds=5)


def test_a_completed_reset_retires_the_other_mailed_links(testapp, owner, run_outbox, mailbox):
    first = mailed_reset_token(testapp, run_outbox, mailbox, owner.user.email)
    second = mailed_reset_token(testapp, run_outbox, mailbox, owner.user.email)
    assert first != second
    reset(testapp, second)
    reset(testapp, first, "attacker's passphrase 99", status=422)
    login(testapp, owner.user.email, NEW_PASSWORD)


def test_a_made_up_reset_token_is_refused(testapp):
    assert reset(testapp, "A" * 43, status=422).json["error"]["code"] == "invalid_token"


def test_too_short_a_new_password_is_refused_and_the_link_still_works(testapp, owner, run_outbox, mailbox):
    token = mailed_reset_token(testapp, run_outbox, mailbox, owner.user.email)
    refused = reset(testapp, token, "short", status=422).json
    assert refused["error"]["details"]["fields"][0]["field"] == "password"
    reset(testapp, token)


def signup(testapp, email: str):
    return testapp.post_json("/v1/auth/signup", {"vendor_name": "Fresh Co", "name": "Fiona", "email": email,
                                                  "password": TEST_PASSWORD}, status=202).json


def test_verification_link_cannot_reset_a_password(testapp, run_outbox, mailbox):
    signup(testapp, "fiona@example.com")
    run_outbox()
    [message] = mailbox.to("fiona@example.com")
    reset(testapp, token_in(message), status=422)


def test_resend_verification_mails_a_new_link_that_verifies(testapp, run_outbox, mailbox):
    signup(testapp, "fiona@example.com")
    run_outbox()
    mailbox.clear()

    answer = testapp.post_json("/v1/auth/verify-email/resend", {"email": "fiona@example.com"}, status=202).json
    run_outbox()
    [message] = mailbox.to("fiona@example.com")
    verified = testapp.post_json("/v1/auth/verify-email", {"token": token_in(message)}, status=200).json
    assert verified["user"]["email_verified"] is True
    login(testapp, "fiona@example.com", TEST_PASSWORD)

    # Once verified, or for an unknown address, the answer is the same and no mail goes out.
    mailbox.clear()
    for email in ("fiona@example.com", "nobody-at-all@example.com"):
        same = testapp.post_json("/v1/auth/verify-email/resend", {"email": email}, status=202).json
        assert same == answer
    run_outbox()
    assert mailbox.messages() == []


def test_a_used_verification_link_is_refused(testapp, run_outbox, mailbox):
    signup(testapp, "fiona@example.com")
    run_outbox()
    token = token_in(mailbox.to("fiona@example.com")[0])
    testapp.post_json("/v1/auth/verify-email", {"token": token}, status=200)
    testapp.post_json("/v1/auth/verify-email", {"token": token}, status=422)


def _without_request_id(response) -> dict:
    return {k: v for k, v in response.headers.items() if k.lower() not in ("x-request-id", "date")}


def test_unknown_email_and_wrong_password_get_the_identical_answer(testapp, owner):
    wrong_password = login(testapp, owner.user.email, "not the password at all", 401)
    unknown_email = login(testapp, "nobody-at-all@example.com", "not the password at all", 401)
    assert unknown_email.json == wrong_password.json
    assert unknown_email.json["error"]["code"] == "invalid_credentials"
    assert _without_request_id(unknown_email) == _without_request_id(wrong_password)


def test_a_disabled_user_gets_the_same_answer_as_a_wrong_password(testapp, owner, db):
    wrong_password = login(testapp, owner.user.email, "not the password at all", 401).json
    owner.user.disabled_at = utcnow()
    db.commit()
    assert login(testapp, owner.user.email, TEST_PASSWORD, 401).json == wrong_password


def test_email_case_does_not_matter_for_sign_in(testapp, owner):
    login(testapp, owner.user.email.upper(), TEST_PASSWORD)


def _table_text(db, table: str) -> str:
    return db.execute(text(f'SELECT coalesce(string_agg(t::text, E\'\\n\'), \'\') FROM "{table}" t')).scalar_one()


def test_one_time_tokens_are_stored_only_as_hashes(testapp, owner, db, run_outbox, mailbox):
    token = mailed_reset_token(testapp, run_outbox, mailbox, owner.user.email)
    stored = _table_text(db, "one_time_token")
    assert secret_hash(token).hex() in stored
    assert token not in stored
    for table in ("app_user", "vendor", "refresh_token"):
        assert token not in _table_text(db, table)


def test_no_table_keeps_a_mailed_token_in_plaintext_after_delivery(testapp, owner, db, run_outbox, mailbox):
    token = mailed_reset_token(testapp, run_outbox, mailbox, owner.user.email)
    db.expire_all()
    tables = db.scalars(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).all()
    leaking = [table for table in tables if token in _table_text(db, table)]
    assert leaking == []

