"""On the embedded default (SQLite, where FOR UPDATE does nothing) a single-use token is still used once."""

import threading
import time

import pytest
from sqlalchemy import select

from kloyst.accounts.models import Role, User, Vendor
from kloyst.auth import services
from kloyst.auth.models import RefreshToken
from kloyst.auth.passwords import hash_password
from kloyst.db import session_scope, tenancy, utcnow


@pytest.fixture
def sqlite_registry(embedded_config):
    return embedded_config.registry


def test_two_overlapping_refreshes_of_one_token_are_one_use_and_one_reuse(sqlite_registry):
    factory, codec = sqlite_registry["kloyst.session_factory"], sqlite_registry["kloyst.access_tokens"]
    with session_scope(factory, vendor_id=tenancy.ALL_VENDORS) as db:
        vendor = Vendor(name="V")
        db.add(vendor)
        db.flush()
        user = User(vendor_id=vendor.id, email="o@example.com", password_hash=hash_password("x" * 12),
                    role=Role.OWNER, email_verified_at=utcnow())
        db.add(user)
        db.flush()
        token = services.issue_tokens(db, sqlite_registry.settings, codec, user).refresh_token

    results = []
    together = threading.Barrier(2)

    def refresh():
        together.wait(timeout=10)  # both start at once; each is a writer from its first read (kloyst.db.sqlite)
        with session_scope(factory) as db:
            results.append(services.refresh(db, sqlite_registry.settings, codec, token))
            time.sleep(0.05)

    threads = [threading.Thread(target=refresh) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 2
    assert sum(r is not None for r in results) == 1, "a refresh token is used once, the second is a reuse"
    with session_scope(factory, vendor_id=tenancy.ALL_VENDORS) as db:
        rows = db.scalars(select(RefreshToken)).all()
        assert all(r.revoked_at is not None for r in rows), "a reuse must revoke the whole family"
