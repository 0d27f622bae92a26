"""Two chunks of one job that share numbers, run at the same time on real connections."""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from imports_processing_support import make_job, reload
from kloyst import testing
from kloyst.db import tenancy
from kloyst_plugins.contacts.models import Contact, ContactAuditLog
from kloyst_plugins.imports import processing
from kloyst_plugins.imports.models import ImportStatus


def test_parallel_chunks_sharing_numbers_neither_deadlock_nor_miscount(committed_db, registry, monkeypatch,
                                                                       tmp_path):
    db = committed_db
    monkeypatch.setitem(registry.settings, "imports.storage_dir", str(tmp_path / "imports"))
    account = testing.AccountFactory(db, registry["kloyst.access_tokens"]).vendor("Parallel Co")
    db.commit()
    for plugin in ("contacts", "imports"):
        testing.enable_plugin(db, account.vendor_id, plugin)
    db.commit()
    numbers = [f"+9198765{i:05d}" for i in range(1500)]
    # chunk 0 walks the numbers forwards, chunk 1 backwards: without one global lock order they deadlock
    rows = [[n, "", "a"] for n in numbers] + [[n, "", "b"] for n in reversed(numbers)] + \
        [[f"+9197000{i:05d}", "", "b"] for i in range(500)]
    job = make_job(db, registry.settings, account.vendor_id, ["phone", "name", "labels"], rows, chunk_size=1500,
                   status=ImportStatus.QUEUED)
    with tenancy.unscoped(db):
        job = reload(db, job)
        job.mapping = {"phone": "phone", "labels": "labels"}
        job.merge_strategy = "MERGE_LABELS"
        db.commit()
    results, errors = [], []
    vendor_id, job_id = account.vendor_id, job.id

    def run(index):
        try:
            results.append(processing.run_chunk_now(registry, vendor_id, job_id, index))
        except Exception as exc:  # pragma: no cover - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(job.chunk_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and sorted(results) == ["done"] * job.chunk_count
    done = reload(db, job)
    assert done.status == ImportStatus.COMPLETED.value
    assert done.rows_processed == len(rows) == 3500
    assert done.created_count == 2000
    assert done.created_count + done.updated_count + done.duplicate_count == 3500
    with tenancy.unscoped(db):
        assert db.scalar(select(func.count()).select_from(Contact)
                         .where(Contact.vendor_id == account.vendor_id)) == 2000
        labels = db.scalars(select(Contact.labels).where(Contact.vendor_id == account.vendor_id)).all()
        assert sum(1 for ls in labels if sorted(ls) == ["a", "b"]) == 1500  # every shared number merged
        creates = db.scalar(select(func.count()).select_from(ContactAuditLog)
                            .where(ContactAuditLog.import_job_id == job.id, ContactAuditLog.action == "create"))
        assert creates == 2000
