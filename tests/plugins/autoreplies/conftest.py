"""Fixtures for the auto-replies tests (the builders live in ``autoreplies_support``)."""

from __future__ import annotations

import datetime as dt

import pytest
from autoreplies_support import Builder, inbound, OPEN, post_webhook, Shop

from kloyst.webhooks.drainer import drain_once
from kloyst_plugins.autoreplies import plugin


@pytest.fixture
def build(db, registry) -> Builder:
    return Builder(db, registry)


@pytest.fixture
def shop(build) -> Shop:
    """A vendor with every messaging plugin and autoreplies on, money in its wallet, one CONNECTED number."""
    return build.shop()


class Clock:
    """The handler's clock, fixed: ``clock.now`` is what it reads; tests move it."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fixed = Clock(OPEN)
    monkeypatch.setattr(plugin, "utcnow", fixed)
    return fixed


@pytest.fixture
def write(testapp, registry, run_outbox, clock):
    """``write(shop, text, ago=60, **fields)``: a customer's message ``ago`` seconds before the clock, through the
    webhook, the drainer and the outbox, so the plugin has handled it on return."""

    def write(target: Shop, text: str | None, *, ago: float = 60, **fields) -> None:
        post_webhook(testapp, inbound(target, text, at=clock.now - dt.timedelta(seconds=ago), **fields))
        drain_once(registry)
        run_outbox()

    return write
