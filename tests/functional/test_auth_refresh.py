"""Refresh tokens: opaque, stored as SHA-256, rotated on every use, and a reuse revokes the family
(RFC 9700 §4.14.2)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select, text, update

from kloyst import testing
from kloyst.accounts.models import VendorStatus
from kloyst.auth import services
from kloyst.auth.models import RefreshToken
from kloyst.auth.tokens import secret_hash
from kloyst.db import Base, session_scope, tenancy, utcnow
from kloyst.testing import TEST_PASSWORD

REFRESH = "/v1/auth/refresh"


def login(testapp, account) -> dict:
    return testapp.post_json("/v1/auth/login", {"email": account.user.email, "password": TEST_PASSWORD},
                             status=200).json


def refresh(testapp, token: str, status: int) -> dict:
    return testapp.post_json(REFRESH, {"refresh_token": token}, status=status).json


def me(testapp, access_token: str, status: int = 200):
    return testapp.get("/v1/auth/me", headers={"Authorization": f"Bearer {access_token}"}, status=status)


def family_rows(db, token: str) -> list[RefreshToken]:
    db.expire_all()
    family = db.scalars(select(RefreshToken.family_id).where(RefreshToken.token_hash == secret_hash(token))).one()
    return list(db.scalars(select(RefreshToken).where(RefreshToken.family_id == family)
                           .order_by(RefreshToken.created_at)))


def test_refresh_rotates_the_token_and_the_new_access_token_works(testapp, owner, db):
    first = login(testapp, owner)
    second = refresh(testapp, first["refresh_token"], 200)
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["token_type"] == "Bearer" and second["expires_in"] > 0 and second["refresh_expires_in"] > 0
    assert me(testapp, second["access_token"]).json["user"]["id"] == str(owner.user.id)

    parent, child = family_rows(db, first["refresh_token"])
    assert parent.used_at is not None and parent.revoked_at is None
    assert child.parent_id == parent.id and child.used_at is None
    assert child.token_hash == secret_hash(second["refresh_token"])


def test_reused_refresh_token_revokes_the_whole_family(testapp, owner, db):
    first = login(testapp, owner)
    second = refresh(testapp, first["refresh_token"], 200)

    reuse = refresh(testapp, first["refresh_token"], 401)
    assert reuse["error"]["code"] == "invalid_refresh_token"
    # The newest token was never used, but it belongs to a family an attacker may hold.
    refresh(testapp, second["refresh_token"], 401)
    assert all(row.revoked_at is not None for row in family_rows(db, first["refresh_token"]))


def test_reuse_three_generations_back_still_revokes_the_newest(testapp, owner):
    tokens = [login(testapp, owner)["refresh_token"]]
    for _ in range(3):
        tokens.append(refresh(testapp, tokens[-1], 200)["refresh_token"])
    refresh(testapp, tokens[0], 401)
    refresh(testapp, tokens[-1], 401)


def test_reuse_in_one_family_leaves_the_users_other_sessions_alone(testapp, owner):
    phone, laptop = login(testapp, owner), login(testapp, owner)
    refresh(testapp, phone["refresh_token"], 200)
    refresh(testapp, phone["refresh_token"], 401)
    refresh(testapp, laptop["refresh_token"], 200)


def test_logout_kills_the_family(testapp, owner):
    first = login(testapp, owner)
    second = refresh(testapp, first["refresh_token"], 200)
    testapp.post_json("/v1/auth/logout", {"refresh_token": second["refresh_token"]}, status=204)
    refresh(testapp, second["refresh_token"], 401)
    refresh(testapp, first["refresh_token"], 401)


def test_logout_with_an_unknown_token_says_nothing_different(testapp):
    testapp.post_json("/v1/auth/logout", {"refresh_token": "x" * 43}, status=204)


def test_unknown_refresh_token_is_refused(testapp):
    assert refresh(testapp, "not-a-token-we-ever-issued-0123456789abcdef", 401)["error"]["code"] == \
        "invalid_refresh_token"


def test_expired_refresh_token_is_refused(testapp, owner, db):
    tokens = login(testapp, owner)
    db.execute(update(RefreshToken).where(RefreshToken.token_hash == secret_hash(tokens["refresh_token"]))
               .values(expires_at=utcnow() - dt.timedelta(seconds=1)))
    db.commit()
    refresh(testapp, tokens["refresh_token"], 401)


def test_refresh_token_lifetime_comes_from_the_settings(testapp, owner, db, registry):
    tokens = login(testapp, owner)
    [row] = family_rows(db, tokens["refresh_token"])
    ttl = registry.settings["kloyst.jwt.refresh_ttl_seconds"]
    assert abs((row.expires_at - row.created_at).total_seconds() - ttl) < 5
    assert abs(tokens["refresh_expires_in"] - ttl) < 5


def test_access_token_at_the_refresh_endpoint_is_refused(testapp, owner):
    tokens = login(testapp, owner)
    assert refresh(testapp, tokens["access_token"], 401)["error"]["code"] == "invalid_refresh_token"
    refresh(testapp, tokens["refresh_token"], 200)  # and it did no harm to the real one


def test_refresh_for_a_disabled_user_is_refused_and_the_family_revoked(testapp, owner, db):
    tokens = login(testapp, owner)
    owner.user.disabled_at = utcnow()
    db.commit()
    refresh(testapp, tokens["refresh_token"], 401)
    assert all(row.revoked_at is not None for row in family_rows(db, tokens["refresh_token"]))


def test_refresh_for_a_suspended_vendor_is_refused(testapp, owner, db):
    tokens = login(testapp, owner)
    owner.vendor.status = VendorStatus.SUSPENDED
    db.commit()
    refresh(testapp, tokens["refresh_token"], 401)


def _all_table_text(db) -> str:
    """Every row of every table as PostgreSQL's text form of the row (bytea shows as hex)."""
    db.flush()
    dumps = []
    for table in Base.metadata.sorted_tables:
        dumps.append(db.execute(text(f'SELECT coalesce(string_agg(t::text, E\'\\n\'), \'\') FROM "{table.name}" t'))
                     .scalar_one())
    return "\n".join(dumps)


def test_database_holds_no_plaintext_refresh_token(testapp, owner, db):
    first = login(testapp, owner)
    second = refresh(testapp, first["refresh_token"], 200)
    dump = _all_table_text(db)
    assert secret_hash(second["refresh_token"]).hex() in dump  # the dump does reach the token table
    for token in (first["refresh_token"], second["refresh_token"]):
        assert token not in dump


def test_concurrent_refreshes_with_one_token_let_exactly_one_through(committed_db, registry, monkeypatch):
    account = testing.AccountFactory(committed_db, registry["kloyst.access_tokens"]).vendor("Race Co")
    committed_db.commit()
    factory, settings, codec = registry["kloyst.session_factory"], registry.settings, registry["kloyst.access_tokens"]
    with session_scope(factory, vendor_id=tenancy.ALL_VENDORS) as session:
        user = session.get(type(account.user), account.user.id)
        secret = services.issue_tokens(session, settings, codec, user).refresh_token

    # Hold the winner inside its transaction for a while: without the row lock the other
    # refreshes would read the token as unused meanwhile and also succeed.
    real_issue = services.issue_tokens

    def slow_issue(*args, **kwargs):
        time.sleep(0.3)
        return real_issue(*args, **kwargs)

    monkeypatch.setattr(services, "issue_tokens", slow_issue)
    racers = 4
    start = threading.Barrier(racers)

    def attempt():
        start.wait()
        with session_scope(factory, vendor_id=tenancy.ALL_VENDORS) as session:
            pair = services.refresh(session, settings, codec, secret)
            return pair.refresh_token if pair else None

    with ThreadPoolExecutor(max_workers=racers) as pool:
        results = [f.result() for f in [pool.submit(attempt) for _ in range(racers)]]

    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    with session_scope(factory, vendor_id=tenancy.ALL_VENDORS) as session:
        rows = family_rows(session, secret)
    assert len(rows) == 2  # one child, never two
    # The losers were reuses of a used token: the family, the winner's new token included, is revoked.
    assert all(row.revoked_at is not None for row in rows)
