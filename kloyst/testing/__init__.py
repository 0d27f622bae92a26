"""Test helpers for Kloyst and for plugin authors (the fixtures live in :mod:`kloyst.testing.pytest_plugin`).

Everything here talks to real services: a fresh PostgreSQL database per test run, built
from the migrations (never ``create_all``), and Redis on 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import uuid
from urllib.parse import urlsplit, urlunsplit
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from kloyst.accounts.models import Role, User, Vendor
from kloyst.auth.models import RefreshToken
from kloyst.auth.passwords import hash_password
from kloyst.auth.tokens import new_secret, secret_hash
from kloyst.db import tenancy, utcnow

DEFAULT_POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/9"
DEFAULT_DATABASE_PREFIX = "kloyst_test"
_DATABASE_PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,39}")
TEST_PASSWORD = "correct horse battery staple"

# Development-only keys for tests; never used anywhere else.
TEST_SETTINGS = {
    "kloyst.jwt.signing_keys": "test-1:" + "A" * 43,
    "kloyst.crypto.data_keys": "test-data-1:" + "B" * 43,
    "kloyst.crypto.hash_key": "test-only-hash-key",
    "kloyst.meta.app_secret": "test-only-app-secret",
    "kloyst.meta.verify_token": "test-verify-token",
    "kloyst.queue.backend": "memory",
    "kloyst.queue.immediate": "true",
    "kloyst.log.console": "false",
    "kloyst.cors.allowed_origins": "https://portal.example.com",
    "kloyst.http.public_url": "https://kloyst.test",
    # High enough that no API test trips the general rate limit; its own tests lower it explicitly.
    "kloyst.ratelimit.per_user": "1000000/60",
    "kloyst.ratelimit.per_vendor": "1000000/60",
    "kloyst.ratelimit.per_ip": "1000000/60",
    # The pricing plugin's quotation PDFs name their issuer (and fail without one).
    "pricing.issuer_name": "Kloyst Test Issuer Ltd",
    "pricing.issuer_address": "1 Test Street; Testville 01234",
}


def postgres_admin_url() -> str:
    return os.environ.get("KLOYST_TEST_POSTGRES_URL", DEFAULT_POSTGRES)


def database_prefix() -> str:
    """How the test databases are named (``<prefix>_<worker>_<pid>``): ``KLOYST_TEST_DATABASE_PREFIX``, so two
    projects, or two checkouts, can share one PostgreSQL server without dropping each other's databases."""
    prefix = os.environ.get("KLOYST_TEST_DATABASE_PREFIX", DEFAULT_DATABASE_PREFIX)
    if not _DATABASE_PREFIX.fullmatch(prefix):
        raise ValueError(f"KLOYST_TEST_DATABASE_PREFIX={prefix!r}: use lower-case letters, digits and _ "
                         "(at most 40, not starting with a digit): it names PostgreSQL databases")
    return prefix


def redis_url(worker: int = 0) -> str:
    """The Redis database for test worker ``worker``: one database per pytest-xdist worker.

    Tests flush their database freely; separate databases keep one worker from wiping
    another's keys mid-test.
    """
    parts = urlsplit(os.environ.get("KLOYST_TEST_REDIS_URL", DEFAULT_REDIS))
    db = int(parts.path.strip("/") or 0) + worker
    if db > 15:
        raise RuntimeError(f"test worker {worker} would need Redis database {db}; Redis has 0-15 "
                           "(run fewer workers or set KLOYST_TEST_REDIS_URL to a lower database)")
    return urlunsplit(parts._replace(path=f"/{db}"))


def create_database(name: str) -> str:
    """Create an empty PostgreSQL database ``name`` and return its URL (dropping a leftover first)."""
    admin = sa.create_engine(postgres_admin_url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        raise RuntimeError(f"PostgreSQL is not reachable at {postgres_admin_url()} ({exc.orig}); the tests need "
                           "it on 127.0.0.1:5432 with trust auth (or set KLOYST_TEST_POSTGRES_URL)") from None
    finally:
        admin.dispose()
    return make_url(postgres_admin_url()).set(database=name).render_as_string(hide_password=False)


def drop_database(name: str) -> None:
    admin = sa.create_engine(postgres_admin_url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@dataclass
class Account:
    """A user as tests need it: the rows, and a ready ``Authorization`` header."""

    user: User
    vendor: Vendor | None
    token: str
    session_id: uuid.UUID | None = None  # the refresh-token family ``token`` belongs to

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def vendor_id(self) -> uuid.UUID | None:
        return self.vendor.id if self.vendor else None


class AccountFactory:
    """Creates vendors and users straight in the database and signs access tokens for them."""

    def __init__(self, session, codec) -> None:
        self.session = session
        self.codec = codec
        self._count = 0

    def _email(self, hint: str) -> str:
        self._count += 1
        return f"{hint}-{self._count}-{uuid.uuid4().hex[:6]}@example.com"

    def token_for(self, user: User) -> str:
        """An access token in a session of its own (a refresh-token family), as signing in gives."""
        return self.token_in_session(user)[0]

    def token_in_session(self, user: User) -> tuple[str, uuid.UUID]:
        """An access token and its session id; revoking that refresh-token family ends the token."""
        family = uuid.uuid4()
        self.session.add(RefreshToken(family_id=family, user_id=user.id, token_hash=secret_hash(new_secret()),
                                      expires_at=utcnow() + dt.timedelta(days=1)))
        self.session.flush()
        token, _ = self.codec.issue(user_id=user.id, vendor_id=user.vendor_id, role=user.role.value,
                                    token_version=user.token_version, session_id=family)
        return token, family

    def vendor(self, name: str = "Acme", *, role: Role = Role.OWNER, verified: bool = True) -> Account:
        with tenancy.unscoped(self.session):
            vendor = Vendor(name=name)
            self.session.add(vendor)
            self.session.flush()
        return self.user(vendor, role=role, verified=verified)

    def user(self, vendor: Vendor, *, role: Role = Role.MEMBER, verified: bool = True,
             password: str = TEST_PASSWORD) -> Account:
        with tenancy.unscoped(self.session):
            user = User(vendor_id=vendor.id, email=self._email(role.value), name=f"{role.value} user",
                        password_hash=hash_password(password), role=role,
                        email_verified_at=utcnow() if verified else None)
            self.session.add(user)
            self.session.flush()
        return Account(user, vendor, *self.token_in_session(user))

    def platform_admin(self) -> Account:
        with tenancy.unscoped(self.session):
            user = User(vendor_id=None, email=self._email("admin"), name="Platform admin",
                        password_hash=hash_password(TEST_PASSWORD), role=Role.MEMBER, is_platform_admin=True,
                        email_verified_at=utcnow())
            self.session.add(user)
            self.session.flush()
        return Account(user, None, *self.token_in_session(user))


def enable_plugin(session, vendor_id: uuid.UUID, name: str) -> None:
    """Turn a plugin on for a vendor directly (tests of the plugin, not of enabling)."""
    from kloyst.plugins.models import VendorPlugin

    with tenancy.unscoped(session):
        session.add(VendorPlugin(vendor_id=vendor_id, plugin=name))
        session.flush()
