"""Fixtures for the waba plugin's tests: vendors with the plugin on, a platform admin, sandbox numbers, a vendor's
webhook context."""

from __future__ import annotations

import contextlib
import itertools

import pytest
import transaction

from kloyst.db import session_scope
from kloyst.queue import TaskContext
from kloyst.sandbox.state import PhoneNumber as SandboxNumber
from waba_support import TOKEN

_ids = itertools.count(1)


@pytest.fixture
def vendor(accounts, enable_plugin):
    """A vendor (its owner signs requests) with the waba plugin enabled."""
    account = accounts.vendor("Waba Co")
    enable_plugin(account, "waba")
    return account


@pytest.fixture
def other_vendor(accounts, enable_plugin):
    account = accounts.vendor("Other Co")
    enable_plugin(account, "waba")
    return account


@pytest.fixture
def admin(accounts, db):
    account = accounts.platform_admin()
    db.commit()
    return account


@pytest.fixture
def add_waba(testapp):
    """``add_waba(account, meta_waba_id, token=…, status=201)`` registers a WABA through the API; returns the JSON."""

    def add(account, meta_waba_id: str, *, token: str = TOKEN, status: int = 201, **fields):
        body = {"meta_waba_id": meta_waba_id, "name": fields.pop("name", f"WABA {meta_waba_id}"),
                "access_token": token, **fields}
        response = testapp.post_json("/v1/wabas", body, headers=account.headers, status=status)
        return response.json.get("waba", response.json)

    return add


@pytest.fixture
def sandbox_numbers(meta_sandbox):
    """``sandbox_numbers(meta_waba_id, count, **fields)`` puts numbers in the sandbox's WABA; returns them."""

    def add(meta_waba_id: str, count: int = 1, **fields) -> list[SandboxNumber]:
        numbers = []
        for _ in range(count):
            n = next(_ids)
            number = SandboxNumber(id=f"7{meta_waba_id}{n:05d}"[:30], waba_id=meta_waba_id,
                                   display_phone_number=f"+1 555-{n // 10000 % 1000:03d}-{n % 10000:04d}", **fields)
            meta_sandbox.state.add_number(number)
            numbers.append(number)
        return numbers

    return add


@pytest.fixture
def vendor_context(registry, db_connection):
    """``with vendor_context(vendor_id) as ctx:`` a TaskContext scoped to the vendor, committed on exit."""

    @contextlib.contextmanager
    def open_context(vendor_id):
        manager = transaction.TransactionManager(explicit=True)
        with session_scope(registry["kloyst.session_factory"], vendor_id=vendor_id, manager=manager) as session:
            yield TaskContext(registry, session, manager, vendor_id)

    return open_context
