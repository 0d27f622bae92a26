"""Import retention: a month after the upload, a finished import's file, sample rows and rejected rows are deleted
and the job keeps its counts; an import still waiting for its mapping is given up; one importing is left alone
(kloyst_plugins/imports/retention.py)."""

from __future__ import annotations

import datetime as dt

from imports_processing_support import make_job, reload
from sqlalchemy import func, select, update

from kloyst.db import utcnow
from kloyst.retention import Pruner, policies
from kloyst_plugins.imports import storage
from kloyst_plugins.imports.models import ContactImportJob, ContactImportRejection, ImportStatus

MAPPING = {"columns": {"phone": "Mobile", "name": "Name"}, "merge_strategy": "MERGE_LABELS"}
ROWS = [["+12025550100", "Ann"], ["+12025550101", "Bob"]]


def _job(db, registry, vendor, status: ImportStatus, *, days_old: int, rejections: int = 0) -> ContactImportJob:
    job = make_job(db, registry.settings, vendor.vendor_id, ["Mobile", "Name"], ROWS, status=status)
    db.execute(update(ContactImportJob).where(ContactImportJob.id == job.id)
               .values(created_at=utcnow() - dt.timedelta(days=days_old), rejected_count=rejections))
    for row in range(rejections):
        db.add(ContactImportRejection(vendor_id=vendor.vendor_id, job_id=job.id, row_number=row + 1,
                                      column="Mobile", value_masked="***100", reason="not a phone number"))
    db.flush()
    return job


def _prune(registry) -> int:
    [result] = Pruner(registry, policies(registry)).run(only=["imports.files"])
    return result.removed


def test_a_finished_import_loses_its_file_and_rows_after_a_month_and_keeps_its_counts(testapp, db, registry, vendor):
    old = _job(db, registry, vendor, ImportStatus.PARTIAL_SUCCESS, days_old=31, rejections=3)
    young = _job(db, registry, vendor, ImportStatus.COMPLETED, days_old=29)
    old_path = storage.path_for(registry.settings, vendor.vendor_id, old.stored_name)

    assert _prune(registry) == 1

    assert not old_path.exists()
    assert storage.path_for(registry.settings, vendor.vendor_id, young.stored_name).exists()
    job = testapp.get(f"/v1/imports/{old.id}", headers=vendor.headers).json["import"]
    assert job["file_removed_at"] is not None and job["sample_rows"] is None
    assert (job["status"], job["counts"]["rejected"], job["sha256"]) == ("PARTIAL_SUCCESS", 3, old.sha256)
    assert db.scalar(select(func.count()).select_from(ContactImportRejection)
                     .where(ContactImportRejection.job_id == old.id)) == 0
    error = testapp.get(f"/v1/imports/{old.id}/rejected.csv", headers=vendor.headers, status=410).json["error"]
    assert error["code"] == "report_removed"
    assert testapp.get(f"/v1/imports/{young.id}", headers=vendor.headers).json["import"]["file_removed_at"] is None


def test_an_import_still_waiting_for_its_mapping_is_given_up_once_its_file_is_gone(testapp, db, registry, vendor):
    waiting = _job(db, registry, vendor, ImportStatus.AWAITING_MAPPING, days_old=45)

    assert _prune(registry) == 1

    job = reload(db, waiting)
    assert job.status == ImportStatus.CANCELLED.value and "upload the file again" in job.error
    error = testapp.put_json(f"/v1/imports/{waiting.id}/mapping", MAPPING, headers=vendor.headers,
                             status=409).json["error"]
    assert "CANCELLED" in error["message"]


def test_an_import_in_progress_keeps_its_file_however_old(db, registry, vendor):
    for status in (ImportStatus.QUEUED, ImportStatus.PROCESSING, ImportStatus.MAPPING_CONFIRMED):
        job = _job(db, registry, vendor, status, days_old=400)
        assert storage.path_for(registry.settings, vendor.vendor_id, job.stored_name).exists()

    assert _prune(registry) == 0
