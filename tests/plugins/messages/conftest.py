"""Fixtures for the messages plugin's tests (the builders live in ``messaging_support``)."""

from __future__ import annotations

import pytest
from messaging_support import Messaging, SendingVendor


@pytest.fixture
def messaging(db, registry) -> Messaging:
    return Messaging(db, registry)


@pytest.fixture
def vendor(messaging) -> SendingVendor:
    """A vendor ready to send (see :meth:`Messaging.sending_vendor`)."""
    return messaging.sending_vendor()
