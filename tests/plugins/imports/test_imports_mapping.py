"""PUT /v1/imports/{id}/mapping: what it accepts, what it refuses (422, 409), and what it queues."""

from __future__ import annotations

import pytest

from imports_processing_support import make_job, reload
from kloyst_plugins.imports.models import ImportStatus

HEADERS = ["Mobile", "Name", "Tags", "Country", "City"]
GOOD = {"columns": {"phone": "Mobile", "name": "Name", "labels": "Tags", "country": "Country",
                    "attributes": {"city": "City"}},
        "default_country": "in", "labels": ["2024 fair", " vip "], "merge_strategy": "MERGE_LABELS"}


@pytest.fixture
def job(db, registry, owner, enable_plugin, monkeypatch, tmp_path):
    monkeypatch.setitem(registry.settings, "imports.storage_dir", str(tmp_path / "imports"))
    enable_plugin(owner, "contacts")
    enable_plugin(owner, "imports")
    return make_job(db, registry.settings, owner.vendor_id, HEADERS,
                    [[f"98765{i:05d}", "", "", "", ""] for i in range(7)], chunk_size=3)


def put(testapp, job, owner, body, status=200):
    return testapp.put_json(f"/v1/imports/{job.id}/mapping", body, headers=owner.headers, status=status)


def test_a_good_mapping_queues_one_task_per_chunk_after_commit(testapp, db, job, owner, task_recorder):
    body = put(testapp, job, owner, GOOD).json["import"]
    assert body["status"] == ImportStatus.QUEUED.value
    assert body["mapping"] == GOOD["columns"]
    assert (body["default_country"], body["add_labels"], body["merge_strategy"]) == ("IN", ["2024 fair", "vip"],
                                                                                      "MERGE_LABELS")
    assert task_recorder == [("imports.process_chunk", {"vendor_id": owner.vendor_id, "job_id": job.id,
                                                        "chunk_index": i}) for i in range(3)]
    assert reload(db, job).status == ImportStatus.QUEUED.value


@pytest.mark.parametrize("change, problem", [
    ({"columns": {"name": "Name"}}, "columns.phone"),
    ({"columns": {"phone": "Telephone"}}, "no column 'Telephone' in the file"),
    ({"columns": {"phone": "Mobile", "name": "Mobile"}}, "column 'Mobile' is already mapped to phone"),
    ({"columns": {"phone": "Mobile", "attributes": {"a": "Name", "b": "Name"}}}, "already mapped to attributes.a"),
    ({"columns": {"phone": "Mobile", "attributes": {"city": "Mobile"}}}, "already mapped to phone"),
    ({"columns": {"phone": "Mobile", "attributes": {"9 bad key": "City"}}}, "attribute keys start with a letter"),
    ({"default_country": "XX"}, "'XX' is not an ISO 3166 country code"),
    ({"merge_strategy": "NEWEST_WINS"}, "unknown merge strategy 'NEWEST_WINS'; available: FULL_REPLACE, "
                                        "MERGE_LABELS, SKIP_DUPLICATES, UPDATE_METADATA"),
    ({"merge_strategy": None}, "merge_strategy"),
    ({"unexpected": 1}, "unexpected"),
])
def test_bad_mappings_are_422_saying_what_to_fix(testapp, db, job, owner, change, problem, task_recorder):
    error = put(testapp, job, owner, {**GOOD, **change}, status=422).json["error"]
    assert problem in error["message"]
    assert reload(db, job).status == ImportStatus.AWAITING_MAPPING.value
    assert task_recorder == []


@pytest.mark.parametrize("status", [ImportStatus.UPLOADED, ImportStatus.QUEUED, ImportStatus.PROCESSING,
                                    ImportStatus.COMPLETED, ImportStatus.CANCELLED])
def test_a_mapping_is_accepted_only_while_awaiting_mapping(testapp, db, job, owner, status, task_recorder):
    from kloyst.db import tenancy

    with tenancy.unscoped(db):
        reload(db, job).status = status.value
        db.commit()
    assert put(testapp, job, owner, GOOD, status=409).json["error"]["details"]["status"] == status.value
    assert task_recorder == []


def test_mapping_needs_the_imports_plugin_enabled(testapp, accounts, db, registry, enable_plugin):
    other = accounts.vendor("Plain Co")
    db.commit()
    job = make_job(db, registry.settings, other.vendor_id, HEADERS, [["9876543210", "", "", "", ""]])
    put(testapp, job, other, GOOD, status=404)
