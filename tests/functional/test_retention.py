"""The retention pass (kloyst.retention) and the core's own policies: delivered outbox events and processed Meta
webhook deliveries expire, in keyset batches that skip what another transaction holds; `kloyst db prune` runs it.

Real PostgreSQL. The plugins' policies are tested beside each plugin (test_*_retention.py); the pass in a
running OUTBOX process, and on the embedded default, in tests/e2e/test_retention_processes.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from kloyst.db import utcnow
from kloyst.outbox.models import OutboxEvent, OutboxStatus
from kloyst.retention import Pruner, policies
from kloyst.webhooks.models import WebhookDelivery
from kloyst_plugins.contacts.models import ContactAuditLog

DAY = dt.timedelta(days=1)


@pytest.fixture
def pruner(registry, monkeypatch):
    monkeypatch.setitem(registry.settings, "kloyst.retention.batch_size", 4)
    return Pruner(registry, policies(registry))


def _events(db, *ages_and_statuses) -> list[int]:
    rows = [OutboxEvent(vendor_id=None, topic="retention.test", status=status, created_at=utcnow() - days * DAY,
                        delivered_at=utcnow() - days * DAY if status is OutboxStatus.DELIVERED else None)
            for days, status in ages_and_statuses]
    db.add_all(rows)
    db.flush()
    return [row.id for row in rows]


def _delivery(db, days: int, *, processed: bool, processed_days: int | None = None) -> int:
    received = utcnow() - days * DAY
    processed_at = utcnow() - (days if processed_days is None else processed_days) * DAY
    row = WebhookDelivery(dedupe_key=hashlib.sha256(uuid.uuid4().bytes).digest(), body=b"{}", received_at=received,
                          next_attempt_at=received, processed_at=processed_at if processed else None)
    db.add(row)
    db.flush()
    return row.id


def test_policies_are_unique_and_each_names_the_setting_that_holds_its_days(registry):
    found = policies(registry)
    assert len({p.name for p in found}) == len(found)
    assert {"kloyst.outbox_events", "kloyst.webhook_deliveries", "messages.messages", "messages.status_events",
            "messages.inbound", "media.files", "imports.files", "contacts.audit_log",
            "vendor_webhooks.events"} <= {p.name for p in found}
    for policy in found:
        assert isinstance(registry.settings[policy.setting.key], int), policy.name
        assert policy.setting.help, f"{policy.name}: say why its default is what it is"


def test_delivered_events_expire_and_pending_leased_or_dead_ones_never_do(db, pruner):
    old = 8
    gone = _events(db, *[(old, OutboxStatus.DELIVERED)] * 9)
    kept = _events(db, (old, OutboxStatus.PENDING), (old, OutboxStatus.LEASED), (old, OutboxStatus.DEAD),
                   (6, OutboxStatus.DELIVERED))
    late = OutboxEvent(vendor_id=None, topic="retention.test", status=OutboxStatus.DELIVERED,
                       created_at=utcnow() - 30 * DAY, delivered_at=utcnow() - DAY)  # failed for weeks, then done
    db.add(late)
    db.flush()
    kept.append(late.id)

    [result] = pruner.run(only=["kloyst.outbox_events"])

    assert result.removed == 9
    remaining = set(db.scalars(select(OutboxEvent.id).where(OutboxEvent.id.in_(gone + kept))))
    assert remaining == set(kept)


def test_processed_webhook_deliveries_expire_a_week_after_processing_and_unprocessed_ones_stay(db, pruner):
    gone = [_delivery(db, 8, processed=True) for _ in range(5)]
    kept = [_delivery(db, 8, processed=False), _delivery(db, 6, processed=True),
            _delivery(db, 30, processed=True, processed_days=1)]  # retried for weeks, applied yesterday

    [result] = pruner.run(only=["kloyst.webhook_deliveries"])

    assert result.removed == 5
    assert set(db.scalars(select(WebhookDelivery.id).where(WebhookDelivery.id.in_(gone + kept)))) == set(kept)


def test_contact_audit_entries_expire_after_two_years(db, pruner, accounts):
    vendor = accounts.vendor("Audit Co")
    for days in (731, 731, 729):
        db.add(ContactAuditLog(vendor_id=vendor.vendor_id, contact_id=uuid.uuid4(), action="create", source="api",
                               changes={}, created_at=utcnow() - days * DAY))
    db.flush()

    [result] = pruner.run(only=["contacts.audit_log"])

    assert result.removed == 2
    assert db.scalar(select(func.count()).select_from(ContactAuditLog)
                     .where(ContactAuditLog.vendor_id == vendor.vendor_id)) == 1


def test_a_row_another_transaction_holds_is_skipped_not_waited_for(committed_db, registry):
    """A relay's claim holds its events' rows: the pass must neither wait for it nor stall it."""
    ids = _events(committed_db, *[(10, OutboxStatus.DELIVERED)] * 3)
    committed_db.commit()
    held, release = threading.Event(), threading.Event()

    def hold_one() -> None:
        with registry["kloyst.engine"].begin() as connection:
            connection.execute(text("SELECT id FROM outbox_event WHERE id = :id FOR UPDATE"), {"id": ids[1]})
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_one)
    holder.start()
    try:
        assert held.wait(10)
        started = time.monotonic()
        [result] = Pruner(registry, policies(registry)).run(only=["kloyst.outbox_events"])
        assert time.monotonic() - started < 5
        assert result.removed == 2
    finally:
        release.set()
        holder.join()
    assert Pruner(registry, policies(registry)).run(only=["kloyst.outbox_events"])[0].removed == 1


def test_kloyst_db_prune_reports_every_policy_and_refuses_an_unknown_one(cli_ini, db_connection):
    kloyst = [str(Path(sys.executable).with_name("kloyst"))]
    done = subprocess.run([*kloyst, "db", "prune", cli_ini], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("messages.messages: removed ") and "older than 395 days" in line for line in lines)
    assert any(line.startswith("kloyst.outbox_events: removed ") for line in lines)

    only = subprocess.run([*kloyst, "db", "prune", cli_ini, "--only", "media.files"], capture_output=True, text=True,
                          timeout=120)
    assert only.returncode == 0 and [line.split(":")[0] for line in only.stdout.splitlines()] == ["media.files"]

    wrong = subprocess.run([*kloyst, "db", "prune", cli_ini, "--only", "messages.everything"], capture_output=True,
                           text=True, timeout=120)
    assert wrong.returncode == 2
    assert "no retention policy named messages.everything" in wrong.stderr and "messages.messages" in wrong.stderr
