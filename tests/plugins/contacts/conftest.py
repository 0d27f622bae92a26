"""Fixtures for the contacts plugin's tests: a vendor with contacts enabled, and a helper to add contacts."""

from __future__ import annotations

import pytest


@pytest.fixture
def vendor(accounts, enable_plugin):
    """A vendor (its owner signs requests) with the contacts plugin enabled."""
    account = accounts.vendor("Contacts Co")
    enable_plugin(account, "contacts")
    return account


@pytest.fixture
def add_contact(testapp):
    """``add_contact(account, mobile, **fields)`` creates a contact through the API and returns its JSON."""

    def add(account, mobile: str, *, status: int = 201, **fields):
        response = testapp.post_json("/v1/contacts", {"mobile": mobile, **fields}, headers=account.headers,
                                     status=status)
        return response.json.get("contact", response.json)

    return add
