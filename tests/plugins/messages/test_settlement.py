"""Priced messages are reported to ``kloyst_messages_settled`` in the transaction that records their outcome."""

from __future__ import annotations

import types
import uuid

import pytest
from sqlalchemy import update

from kloyst.db import tenancy, utcnow
from kloyst.plugins import hookimpl
from kloyst_plugins.messages import statuses
from kloyst_plugins.messages.models import MessageLog
from kloyst_plugins.messages.sender import Sender, SenderSettings
from sending_support import queue_messages, sending_setup
from test_sender import wait_for

FAST = SenderSettings(concurrency=8, lease_seconds=60, max_retries=0, retry_base_seconds=0.05)


class Recorder:
    """A plugin that keeps what it is told (and proves it runs inside the outcome's transaction)."""

    def __init__(self) -> None:
        self.settled = []
        self.saw_uncommitted_state = []

    @hookimpl
    def kloyst_messages_settled(self, conn, settled):
        self.settled.extend(settled)
        for item in settled:
            status = conn.exec_driver_sql("SELECT status FROM message_log WHERE id = %(id)s",
                                          {"id": str(item.message_id)}).scalar()
            self.saw_uncommitted_state.append((item.outcome, status))


@pytest.fixture
def recorder(registry):
    pm = registry["kloyst.plugin_manager"]
    plugin = Recorder()
    pm.register(plugin, name="settlement_recorder")
    yield plugin
    pm.unregister(name="settlement_recorder")


def _price(db, ids, micros: int, hold_id: uuid.UUID) -> None:
    with tenancy.unscoped(db):
        db.execute(update(MessageLog).where(MessageLog.id.in_(ids)).values(price_micros=micros, hold_id=hold_id))
    db.commit()


def _run_sender(registry, db, ids, until):
    sender = Sender(registry, FAST).start()
    try:
        return wait_for(db, ids, until)
    finally:
        sender.stop(timeout=10)


def test_sent_priced_messages_are_reported_sent_with_their_price_and_hold(
        registry, committed_db, meta_sandbox, recorder):
    setup = sending_setup(committed_db, registry, meta_sandbox)
    priced = queue_messages(committed_db, registry, setup, 5)
    unpriced = queue_messages(committed_db, registry, setup, 3, start=5)
    hold = uuid.uuid4()
    _price(committed_db, priced, 6_800, hold)
    _run_sender(registry, committed_db, priced + unpriced, lambda m: m.status == "SENT")
    assert sorted(s.message_id for s in recorder.settled) == sorted(priced)
    assert {(s.outcome, s.price_micros, s.hold_id, s.vendor_id) for s in recorder.settled} == {
        ("sent", 6_800, hold, setup.vendor_id)}
    assert set(recorder.saw_uncommitted_state) == {("sent", "SENT")}


def test_a_priced_message_that_fails_without_being_sent_is_reported_failed(
        registry, committed_db, meta_sandbox, recorder):
    setup = sending_setup(committed_db, registry, meta_sandbox)
    meta_sandbox.state.behaviour.update({"failure_rates": {131026: 1.0}})  # permanent: undeliverable
    ids = queue_messages(committed_db, registry, setup, 2)
    _price(committed_db, ids, 500, uuid.uuid4())
    _run_sender(registry, committed_db, ids, lambda m: m.status == "FAILED")
    assert [s.outcome for s in recorder.settled] == ["failed", "failed"]
    assert set(recorder.saw_uncommitted_state) == {("failed", "FAILED")}


def test_a_failed_status_after_sending_reports_the_message_undelivered_once(
        registry, committed_db, meta_sandbox, recorder):
    setup = sending_setup(committed_db, registry, meta_sandbox)
    [message_id] = queue_messages(committed_db, registry, setup, 1)
    _price(committed_db, [message_id], 700, uuid.uuid4())
    found = _run_sender(registry, committed_db, [message_id], lambda m: m.status == "SENT")
    wamid = found[message_id].wamid
    recorder.settled.clear()
    raw = {"id": wamid, "status": "failed", "timestamp": str(int(utcnow().timestamp())),
           "errors": [{"code": 131026, "title": "Message undeliverable"}]}
    for _ in range(2):  # Meta redelivers: the second is a duplicate and reports nothing
        ctx = types.SimpleNamespace(db=committed_db, vendor_id=setup.vendor_id,
                                    plugin_manager=registry["kloyst.plugin_manager"])
        with tenancy.unscoped(committed_db):
            statuses.apply_statuses(ctx, [statuses.StatusUpdate.parse(raw, utcnow())])
        committed_db.commit()
    assert [(s.message_id, s.outcome, s.price_micros) for s in recorder.settled] == [(message_id, "undelivered", 700)]
