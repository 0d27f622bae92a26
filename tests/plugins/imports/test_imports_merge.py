"""Each merge strategy's effect on contacts the vendor already has, through a real import."""

from __future__ import annotations

import pytest

from imports_processing_support import add_contact, contacts_of, make_job, reload
from kloyst.db import tenancy
from kloyst_plugins.contacts.models import ContactAuditLog
from kloyst_plugins.imports.models import ImportStatus
from sqlalchemy import select

HEADERS = ["phone", "name", "labels", "plan"]
ROW = ["+91 98765 43210", "Asha Rao Kumar", "new", "gold"]


def _import(testapp, db, registry, run_outbox, account, strategy, rows=(ROW,)):
    add_contact(db, registry, account.vendor_id, "+919876543210", name="Asha", labels=["old"],
                attributes={"plan": "silver", "city": "Pune"}, country="IN")
    job = make_job(db, registry.settings, account.vendor_id, HEADERS, [list(r) for r in rows])
    testapp.put_json(f"/v1/imports/{job.id}/mapping", {
        "columns": {"phone": "phone", "name": "name", "labels": "labels", "attributes": {"plan": "plan"}},
        "default_country": "IN", "merge_strategy": strategy}, headers=account.headers)
    run_outbox()
    job = reload(db, job)
    assert job.status == ImportStatus.COMPLETED.value, job.error
    return job, contacts_of(db, registry, account.vendor_id)["+919876543210"]


def test_skip_duplicates_leaves_the_contact_exactly_as_it_was(testapp, db, registry, run_outbox, vendor):
    job, contact = _import(testapp, db, registry, run_outbox, vendor, "SKIP_DUPLICATES")
    assert (contact["name"], contact["labels"], contact["attributes"]) == ("Asha", ["old"],
                                                                          {"plan": "silver", "city": "Pune"})
    assert (job.created_count, job.updated_count, job.duplicate_count) == (0, 0, 1)


def test_merge_labels_adds_labels_and_changes_nothing_else(testapp, db, registry, run_outbox, vendor):
    job, contact = _import(testapp, db, registry, run_outbox, vendor, "MERGE_LABELS")
    assert (contact["name"], contact["labels"], contact["attributes"]) == ("Asha", ["old", "new"],
                                                                          {"plan": "silver", "city": "Pune"})
    assert (job.created_count, job.updated_count, job.duplicate_count) == (0, 1, 0)
    with tenancy.unscoped(db):
        audit = db.scalars(select(ContactAuditLog).where(ContactAuditLog.import_job_id == job.id)).one()
    assert (audit.action, audit.source, audit.changes) == ("merge", "import", {"labels": [["old"], ["old", "new"]]})


def test_update_metadata_overwrites_the_attributes_the_row_carries(testapp, db, registry, run_outbox, vendor):
    _, contact = _import(testapp, db, registry, run_outbox, vendor, "UPDATE_METADATA")
    assert (contact["name"], contact["labels"], contact["attributes"]) == ("Asha", ["old", "new"],
                                                                          {"plan": "gold", "city": "Pune"})


def test_full_replace_replaces_name_labels_and_attributes(testapp, db, registry, run_outbox, vendor):
    _, contact = _import(testapp, db, registry, run_outbox, vendor, "FULL_REPLACE")
    assert (contact["name"], contact["labels"], contact["attributes"], contact["country"]) == (
        "Asha Rao Kumar", ["new"], {"plan": "gold"}, "IN")


def test_a_repeat_import_with_nothing_new_counts_only_duplicates(testapp, db, registry, run_outbox, vendor):
    job, contact = _import(testapp, db, registry, run_outbox, vendor, "MERGE_LABELS", rows=[
        ["+919876543210", "", "old", ""], ["098765 43210", "", "", ""]])
    assert (job.updated_count, job.duplicate_count) == (0, 2)
    assert contact["labels"] == ["old"]


def test_keep_longer_name_of_the_example_plugin_for_a_vendor_that_enabled_it(testapp, db, registry, run_outbox,
                                                                            vendor, enable_plugin):
    enable_plugin(vendor, "example")
    rows = [["+919876543210", "Asha Rao Kumar", "", ""], ["9876543210", "A. R.", "", ""]]
    job, contact = _import(testapp, db, registry, run_outbox, vendor, "KEEP_LONGER_NAME", rows=rows)
    assert contact["name"] == "Asha Rao Kumar"
    assert (job.updated_count, job.duplicate_count) == (1, 1)


def test_keep_longer_name_is_unknown_to_a_vendor_without_the_example_plugin(testapp, db, registry, vendor):
    job = make_job(db, registry.settings, vendor.vendor_id, HEADERS, [ROW])
    response = testapp.put_json(f"/v1/imports/{job.id}/mapping", {
        "columns": {"phone": "phone"}, "merge_strategy": "KEEP_LONGER_NAME"}, headers=vendor.headers, status=422)
    error = response.json["error"]
    assert "unknown merge strategy 'KEEP_LONGER_NAME'" in error["message"]
    assert error["details"]["available_strategies"] == ["FULL_REPLACE", "MERGE_LABELS", "SKIP_DUPLICATES",
                                                        "UPDATE_METADATA"]
    assert reload(db, job).status == ImportStatus.AWAITING_MAPPING.value


def test_a_contact_changed_after_the_unlocked_read_is_merged_from_its_locked_state(testapp, db, registry,
                                                                                    run_outbox, vendor, monkeypatch):
    # Existing contacts are read without locks; those a merge changes are read again FOR UPDATE
    # and merged from that. Here the first read is stale (labels ["stale"]): the result must be
    # built on the row as it is when locked (["old"]), not on what was read first.
    import dataclasses

    from kloyst_plugins.imports import processing

    original = processing.PostgresWriter.fetch_existing
    seen = []

    def fetch(self, hashes, lock=False):
        found = original(self, hashes, lock=lock)
        seen.append(lock)
        if not lock:
            return {h: dataclasses.replace(e, fields=dataclasses.replace(e.fields, labels=("stale",)))
                    for h, e in found.items()}
        return found

    monkeypatch.setattr(processing.PostgresWriter, "fetch_existing", fetch)
    job, contact = _import(testapp, db, registry, run_outbox, vendor, "MERGE_LABELS")
    assert seen == [False, True]
    assert contact["labels"] == ["old", "new"]
    assert (job.created_count, job.updated_count, job.duplicate_count) == (0, 1, 0)


@pytest.mark.parametrize("insert_first", [True, False], ids=["insert-first", "read-first"])
def test_both_write_orders_give_the_same_contacts_and_counts(testapp, db, registry, run_outbox, vendor, monkeypatch,
                                                            insert_first):
    from kloyst_plugins.imports import processing

    monkeypatch.setattr(processing, "INSERT_FIRST", insert_first)
    rows = [ROW, ["+91 98765 00001", "New", "a", "x"], ["098765 00001", "New again", "b", ""],
            ["+91 98765 43210", "", "other", ""]]
    job, contact = _import(testapp, db, registry, run_outbox, vendor, "MERGE_LABELS", rows=rows)
    assert contact["labels"] == ["old", "new", "other"]
    assert (job.created_count, job.updated_count, job.duplicate_count) == (1, 1, 2)
    new = contacts_of(db, registry, vendor.vendor_id)["+919876500001"]
    assert (new["name"], new["labels"]) == ("New", ["a", "b"])
