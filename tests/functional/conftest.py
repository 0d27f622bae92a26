"""Fixtures shared by the webhook tests (the builders and helpers live in ``webhooks_support``)."""

from __future__ import annotations

import pytest
from webhooks_support import Builder, post

from kloyst.webhooks.drainer import drain_once


@pytest.fixture
def build(db, registry):
    """Vendors with numbers, and Meta webhook bodies about them."""
    return Builder(db, registry)


@pytest.fixture
def line(build):
    """One vendor's phone number, ready to receive webhooks."""
    return build.line()


@pytest.fixture
def deliver(testapp, registry):
    """Post each body as its own signed webhook, then let the drainer apply them all."""

    def deliver(*bodies: bytes) -> None:
        for body in bodies:
            post(testapp, body)
        drain_once(registry)

    return deliver
