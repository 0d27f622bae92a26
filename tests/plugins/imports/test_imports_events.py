"""An import reports its end as one domain event: ImportCompleted with its counts, or ImportFailed with its reason.

Run through the real pipeline (mapping → chunk tasks → the last chunk decides); the contacts it
writes get no ContactCreated each (docs/events.md).
"""

from __future__ import annotations

import probe_plugin
import pytest
from sqlalchemy import select

from imports_processing_support import add_contact, make_job, reload
from kloyst.db import tenancy
from kloyst.events import TOPIC
from kloyst.outbox import OutboxEvent
from kloyst_plugins.imports.models import ImportStatus

HEADERS = ["Mobile", "Name"]
MAPPING = {"columns": {"phone": "Mobile", "name": "Name"}, "default_country": "IN", "labels": ["fair"],
           "merge_strategy": "MERGE_LABELS"}


@pytest.fixture
def vendor(vendor, enable_plugin):
    enable_plugin(vendor, "probe")  # subscribes to every event type and logs what it is delivered
    return vendor


def recorded(db, vendor_id) -> list[dict]:
    db.expire_all()
    with tenancy.unscoped(db):
        return [e.payload for e in db.scalars(select(OutboxEvent).where(
            OutboxEvent.vendor_id == vendor_id, OutboxEvent.topic == TOPIC).order_by(OutboxEvent.id))]


def run_import(testapp, db, registry, vendor, rows, run_outbox):
    job = make_job(db, registry.settings, vendor.vendor_id, HEADERS, rows, chunk_size=3)
    testapp.put_json(f"/v1/imports/{job.id}/mapping", MAPPING, headers=vendor.headers)
    run_outbox()
    return reload(db, job)


def test_a_finished_import_emits_import_completed_with_its_counts(testapp, db, registry, vendor, run_outbox):
    add_contact(db, registry, vendor.vendor_id, "+919876500001", labels=["old"])
    rows = [[f"98765{i:05d}", f"Name {i}"] for i in range(1, 8)] + [["not a number", "X"]]
    job = run_import(testapp, db, registry, vendor, rows, run_outbox)
    assert job.status == ImportStatus.PARTIAL_SUCCESS.value

    names = [e["name"] for e in recorded(db, vendor.vendor_id)]
    assert names == ["ImportCompleted"]  # one event for the import, none per imported contact
    (delivered,) = probe_plugin.delivered_events(db, vendor.vendor_id)
    assert delivered["name"] == "ImportCompleted" and delivered["data"] == "ImportCompleted"
    assert delivered["payload"] == {"import_id": str(job.id), "created": 6, "updated": job.updated_count,
                                    "skipped": job.duplicate_count, "failed": 1}
    assert job.updated_count + job.duplicate_count == 1 and job.created_count == 6


def test_an_import_with_no_importable_row_emits_import_failed(testapp, db, registry, vendor, run_outbox):
    job = run_import(testapp, db, registry, vendor, [["nope", "A"], ["12", "B"]], run_outbox)
    assert job.status == ImportStatus.FAILED.value

    assert [e["name"] for e in recorded(db, vendor.vendor_id)] == ["ImportFailed"]
    (delivered,) = probe_plugin.delivered_events(db, vendor.vendor_id)
    assert delivered["payload"] == {"import_id": str(job.id), "reason": job.error}
    assert "no row could be imported" in job.error


def test_a_cancelled_import_emits_nothing(testapp, db, registry, vendor):
    job = make_job(db, registry.settings, vendor.vendor_id, HEADERS, [["9876500001", "A"]])
    testapp.post(f"/v1/imports/{job.id}/cancel", headers=vendor.headers)
    assert reload(db, job).status == ImportStatus.CANCELLED.value
    assert recorded(db, vendor.vendor_id) == []
