"""Test helpers for Kloyst and for plugin authors (the fixtures live in :mod:`kloyst.testing.pytest_plugin`).

Everything here talks to real services: a fresh PostgreSQL database per test run, built
from the migrations (never ``create_all``), and Redis on 127.0.0.1.
"""

from __future__ import annotations

import importlib
import os
import re
import uuid
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa
from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from kloyst.testing.accounts import Account as Account, AccountFactory as AccountFactory
    from kloyst.testing.standard import StandardPluginTests as StandardPluginTests

# pytest imports this package (through the ``pytest11`` entry point kloyst.testing.pytest_plugin) before
# coverage starts, so it imports none of Kloyst's own modules at the top: those would count as never run.
# The account helpers come from kloyst.testing.accounts on first use.
_LAZY = {"Account": "kloyst.testing.accounts", "AccountFactory": "kloyst.testing.accounts",
         "StandardPluginTests": "kloyst.testing.standard"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def enable_plugin(session, vendor_id: uuid.UUID, name: str) -> None:
    """Turn a plugin on for a vendor directly (tests of the plugin, not of enabling)."""
    from kloyst.db import tenancy  # imported here: see the note on _LAZY
    from kloyst.plugins.models import VendorPlugin

    with tenancy.unscoped(session):
        row = session.query(VendorPlugin).filter_by(vendor_id=vendor_id, plugin=name).one_or_none()
        if row is None:
            session.add(VendorPlugin(vendor_id=vendor_id, plugin=name))
        else:  # disabled, its settings kept: on again
            row.enabled, row.disabled_at = True, None
        session.flush()
