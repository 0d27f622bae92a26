"""Fixtures for the vendor webhooks tests: a real local receiver, and deliverers that stop after the test."""

from __future__ import annotations

import dataclasses

import pytest
from vendor_webhooks_support import FAST, Receiver

from kloyst_plugins.vendor_webhooks.deliverer import Deliverer


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def local_endpoints(registry, monkeypatch):
    """Endpoints may be http://127.0.0.1 (the embedded default's rule), for a receiver in this test."""
    monkeypatch.setitem(registry.settings, "vendor_webhooks.allow_http", True)
    monkeypatch.setitem(registry.settings, "vendor_webhooks.allow_loopback", True)


@pytest.fixture
def run_deliverer(registry):
    """``run_deliverer(**overrides)``: a started deliverer on the test database with :data:`FAST` settings."""
    started: list[Deliverer] = []

    def start(**overrides) -> Deliverer:
        deliverer = Deliverer(registry, dataclasses.replace(FAST, **overrides)).start()
        started.append(deliverer)
        return deliverer

    yield start
    for deliverer in started:
        deliverer.stop(10)
