"""Chunk processing: rows in, contacts out, with exact counts, rejections and the job's final state."""

from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy import func, select

from imports_processing_support import add_contact, contacts_of, make_job, reload
from kloyst.db import tenancy
from kloyst_plugins.contacts.models import Contact, ContactAuditLog
from kloyst_plugins.imports import processing, storage
from kloyst_plugins.imports.models import ChunkStatus, ContactImportChunk, ImportStatus

HEADERS = ["Mobile", "Full name", "Tags", "City"]
MAPPING = {"columns": {"phone": "Mobile", "name": "Full name", "labels": "Tags", "attributes": {"city": "City"}},
           "default_country": "IN", "labels": ["imported"], "merge_strategy": "MERGE_LABELS"}


@pytest.fixture
def importer(testapp, db, registry, owner, enable_plugin, run_outbox, monkeypatch, tmp_path):
    monkeypatch.setitem(registry.settings, "imports.storage_dir", str(tmp_path / "imports"))
    enable_plugin(owner, "contacts")
    enable_plugin(owner, "imports")

    class Importer:
        account = owner

        def job(self, rows, headers=HEADERS, account=None, **kw):
            return make_job(db, registry.settings, (account or owner).vendor_id, headers, rows, **kw)

        def confirm(self, job, mapping=MAPPING, account=None, status=200):
            return testapp.put_json(f"/v1/imports/{job.id}/mapping", mapping, headers=(account or owner).headers,
                                    status=status)

        def run(self, job, mapping=MAPPING, account=None):
            self.confirm(job, mapping, account)
            run_outbox()
            return reload(db, job)

        def path(self, job):
            return storage.path_for(registry.settings, job.vendor_id, job.stored_name)

        def contacts(self, account=None):
            return contacts_of(db, registry, (account or owner).vendor_id)

        def rejected(self, job, account=None):
            body = testapp.get(f"/v1/imports/{job.id}/rejected.csv", headers=(account or owner).headers).body
            return list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))

    return Importer()


def test_a_clean_file_creates_contacts_and_completes(importer):
    rows = [[f"98765{i:05d}", f"Person {i}", "vip; delhi", "Delhi"] for i in range(12)]
    job = importer.run(importer.job(rows, chunk_size=5))
    assert job.status == ImportStatus.COMPLETED.value
    assert (job.created_count, job.updated_count, job.duplicate_count, job.rejected_count) == (12, 0, 0, 0)
    assert (job.chunks_done, job.rows_processed) == (3, 12)
    assert job.finished_at is not None and job.started_at is not None
    contacts = importer.contacts()
    assert contacts["+919876500003"] == {**contacts["+919876500003"], "name": "Person 3", "country": "IN",
                                         "labels": ["imported", "vip", "delhi"], "attributes": {"city": "Delhi"},
                                         "source": "import"}


def test_twenty_percent_bad_rows_end_partial_success_with_exactly_those_rows_reported(importer):
    rows, bad = [], {}
    for i in range(1, 51):
        if i % 5 == 0:
            raw = ["12", "not a number", "", "+999123", "07700 900123"][i // 5 % 5]
            bad[i] = raw
            rows.append([raw, f"Bad {i}", "", ""])
        else:
            rows.append([f"+44 7911 1{i:05d}", f"Good {i}", "", ""])
    job = importer.run(importer.job(rows, chunk_size=20), {**MAPPING, "default_country": "GB"})
    assert job.status == ImportStatus.PARTIAL_SUCCESS.value
    assert (job.created_count, job.rejected_count, job.rows_processed) == (40, 10, 50)
    report = importer.rejected(job)
    assert report[0] == ["row_number", "column", "value", "reason"]
    assert [int(r[0]) for r in report[1:]] == sorted(bad)
    assert all(r[1] == "Mobile" for r in report[1:])
    by_row = {int(r[0]): r for r in report[1:]}
    assert by_row[5][2] == "*********ber"  # masked: only the tail survives
    assert "900123" not in "".join(r[2] for r in report[1:])
    assert by_row[20][3] == "not a valid number for GB"
    assert by_row[10][3] == "empty"
    assert by_row[15][3].startswith("unknown country code")


def test_same_phone_written_five_ways_in_one_file_is_one_contact(importer, db):
    writings = ["+91 98765 43210", "098765 43210", "9876543210", "91-98765-43210", "(+91) 98765.43210"]
    rows = [[w, "Asha", f"l{i}", ""] for i, w in enumerate(writings)]
    job = importer.run(importer.job(rows, chunk_size=2))
    contacts = importer.contacts()
    assert list(contacts) == ["+919876543210"]
    assert contacts["+919876543210"]["labels"] == ["imported", "l0", "l1", "l2", "l3", "l4"]
    assert (job.created_count, job.updated_count + job.duplicate_count, job.rejected_count) == (1, 4, 0)
    assert job.status == ImportStatus.COMPLETED.value


def test_same_phone_in_two_vendors_is_two_contacts_and_one_import_never_touches_the_other(
        importer, accounts, db, registry, enable_plugin):
    other = accounts.vendor("Other Co")
    db.commit()
    enable_plugin(other, "contacts")
    enable_plugin(other, "imports")
    add_contact(db, registry, other.vendor_id, "+919876543210", name="Theirs", labels=["theirs"])
    job = importer.run(importer.job([["9876543210", "Ours", "ours", ""]]))
    assert job.created_count == 1  # the other vendor's contact is not a duplicate of ours
    assert importer.contacts()["+919876543210"]["labels"] == ["imported", "ours"]
    theirs = importer.contacts(other)["+919876543210"]
    assert (theirs["name"], theirs["labels"]) == ("Theirs", ["theirs"])
    with tenancy.unscoped(db):
        hashes = db.scalars(select(Contact.mobile_hash).where(Contact.vendor_id.in_([other.vendor_id,
                                                                                      importer.account.vendor_id])))
        assert len(set(hashes)) == 2  # keyed per vendor: nothing correlates across tenants


def test_other_vendor_gets_404_for_the_job_and_its_report(importer, accounts, db, enable_plugin, testapp):
    other = accounts.vendor("Other Co")
    db.commit()
    enable_plugin(other, "imports")
    job = importer.job([["9876543210", "", "", ""]])
    testapp.put_json(f"/v1/imports/{job.id}/mapping", MAPPING, headers=other.headers, status=404)
    testapp.get(f"/v1/imports/{job.id}/rejected.csv", headers=other.headers, status=404)


def test_a_chunk_killed_mid_way_is_retried_with_correct_counts_and_no_duplicates(importer, db, monkeypatch,
                                                                                 run_outbox):
    rows = [[f"98765{i % 30:05d}", f"P{i}", "", ""] for i in range(40)]  # 10 numbers repeat across chunks
    job = importer.job(rows, chunk_size=10)
    calls = {"n": 0}
    original = processing.PostgresWriter.insert_audit

    def crash_after_half(self):
        calls["n"] += 1
        if calls["n"] == 2:  # the second chunk dies after writing its contacts, before its audit rows
            raise RuntimeError("worker killed")
        return original(self)

    monkeypatch.setattr(processing.PostgresWriter, "insert_audit", crash_after_half)
    importer.confirm(job)
    run_outbox()
    failed = reload(db, job)
    assert failed.chunks_done == 3 and failed.status == ImportStatus.PROCESSING.value
    with tenancy.unscoped(db):
        from kloyst.outbox.models import OutboxEvent

        db.execute(OutboxEvent.__table__.update().where(OutboxEvent.status == "pending")
                   .values(available_at=func.now()))
        db.commit()
    run_outbox()
    done = reload(db, job)
    assert done.status == ImportStatus.COMPLETED.value
    assert (done.created_count, done.updated_count + done.duplicate_count, done.rows_processed) == (30, 10, 40)
    assert len(importer.contacts()) == 30
    with tenancy.unscoped(db):
        audit = db.scalar(select(func.count()).select_from(ContactAuditLog).where(ContactAuditLog.import_job_id
                                                                                  == job.id,
                                                                                  ContactAuditLog.action == "create"))
    assert audit == 30


def test_cancel_while_queued_skips_the_remaining_chunks(importer, db, run_outbox, task_recorder):
    from kloyst_plugins.imports import services

    job = importer.job([[f"98765{i:05d}", "", "", ""] for i in range(9)], chunk_size=3)
    importer.confirm(job)
    assert [name for name, _ in task_recorder] == ["imports.process_chunk"] * 3
    with tenancy.unscoped(db):
        services.cancel(db, reload(db, job))
        db.commit()
    run_outbox()
    cancelled = reload(db, job)
    assert cancelled.status == ImportStatus.CANCELLED.value
    assert (cancelled.chunks_done, cancelled.created_count) == (0, 0)
    assert importer.contacts() == {}
    with tenancy.unscoped(db):
        statuses = db.scalars(select(ContactImportChunk.status).where(ContactImportChunk.job_id == job.id)).all()
    assert set(statuses) == {ChunkStatus.CANCELLED.value}


def test_a_redelivered_chunk_does_nothing(importer, db, registry):
    job = importer.run(importer.job([["9876543210", "", "", ""]]))
    assert processing.run_chunk_now(registry, job.vendor_id, job.id, 0) == "skipped"
    assert reload(db, job).created_count == 1


def test_rejected_csv_is_formula_injection_safe(importer):
    job = importer.run(importer.job([["=HYPERLINK(\"http://x\")", "", "", ""], ["9876543210", "", "", ""]]))
    report = importer.rejected(job)
    assert report[1][0] == "1"
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in report for cell in row)


def test_a_file_with_only_bad_rows_fails(importer):
    job = importer.run(importer.job([["x", "", "", ""], ["12", "", "", ""]]))
    assert job.status == ImportStatus.FAILED.value
    assert job.rejected_count == 2 and job.error


def test_an_unreadable_file_fails_the_job(importer):
    job = importer.job([["9876543210", "", "", ""]])
    importer.path(job).write_bytes(b"Mobile,Full name,Tags,City\r\n98765\xff43210,,,\r\n")
    failed = importer.run(job)
    assert failed.status == ImportStatus.FAILED.value
    assert "could not be read" in failed.error and "UnicodeDecodeError" in failed.error


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "cp1252"])
def test_chunks_read_from_their_byte_offsets_in_every_encoding(importer, encoding):
    rows = [[f"98765{i:05d}", f"Zoë {i} €", "", ""] for i in range(7)]
    job = importer.run(importer.job(rows, chunk_size=3, encoding=encoding, delimiter=";"))
    assert job.status == ImportStatus.COMPLETED.value, job.error
    assert importer.contacts()["+919876500006"]["name"] == "Zoë 6 €"


def test_xlsx_files_import_like_csv(importer):
    rows = [[9876500000 + i, f"Name {i}", "a,b", "Pune"] for i in range(11)]
    job = importer.run(importer.job(rows, chunk_size=4, file_type="xlsx"))
    assert job.status == ImportStatus.COMPLETED.value, job.error
    assert job.created_count == 11
    assert importer.contacts()["+919876500010"]["labels"] == ["imported", "a", "b"]


def test_the_portable_path_gives_the_same_result(importer, monkeypatch):
    monkeypatch.setattr(processing, "PostgresWriter", processing.PortableWriter)
    rows = [["9876543210", "A", "x", ""], ["098765 43210", "A", "y", ""], ["bad", "", "", ""]]
    job = importer.run(importer.job(rows, chunk_size=2))
    assert (job.created_count, job.duplicate_count, job.rejected_count) == (1, 1, 1)
    assert importer.contacts()["+919876543210"]["labels"] == ["imported", "x", "y"]


def test_create_audit_rows_record_what_changes_records(importer, db):
    # PostgreSQL writes the "create" audit rows in the insert statement itself; they must say
    # exactly what processing._changes says for a new contact (name only as "set").
    from kloyst_plugins.contacts.merge import ContactFields

    rows = [["9876500001", "Asha", "vip", "Delhi"], ["9876500002", "", "", ""],
            ["9876500003", "Ravi \\ \"q\"", "a;b", "Pune \t\\ west"]]  # a tab only where text may hold one
    job = importer.run(importer.job(rows))
    assert job.created_count == 3
    contacts = importer.contacts()
    with tenancy.unscoped(db):
        audits = db.execute(select(ContactAuditLog.contact_id, ContactAuditLog.action, ContactAuditLog.source,
                                   ContactAuditLog.import_job_id, ContactAuditLog.changes)
                            .where(ContactAuditLog.import_job_id == job.id)).all()
        by_id = {row.id: row for row in db.execute(select(Contact.id, Contact.name_enc)).all()}
    assert len(audits) == 3
    for contact_id, action, source, job_id, changes in audits:
        contact = next(c for c in contacts.values() if c["id"] == contact_id)
        fields = ContactFields(name=contact["name"], country=contact["country"], labels=tuple(contact["labels"]),
                               attributes=contact["attributes"])
        assert (action, source, job_id) == ("create", "import", job.id)
        assert changes == processing._changes(None, fields, name_known=True)
        assert (by_id[contact_id].name_enc is None) == (contact["name"] is None)
    assert {c["attributes"].get("city") for c in contacts.values()} == {"Delhi", None, "Pune \t\\ west"}


def test_a_labels_cell_over_the_contact_limit_or_a_name_with_a_line_break_rejects_only_its_row(importer):
    too_many = "; ".join(f"label-{n}" for n in range(60))
    rows = [["9876500001", "Ann", "vip", ""], ["9876500002", "Bo", too_many, ""],
            ["9876500003", "Cy\r\nBcc: someone@example.com", "", ""], ["9876500004", "Di", too_many, ""]]
    job = importer.run(importer.job(rows))
    assert job.status == ImportStatus.PARTIAL_SUCCESS.value
    assert (job.created_count, job.rejected_count) == (1, 3)
    reasons = {int(r[0]): r[3] for r in importer.rejected(job)[1:]}
    assert reasons[2] == reasons[4] == "a contact has at most 50 labels, not 61"  # the job adds "imported"
    assert "one line" in reasons[3]
    assert list(importer.contacts()) == ["+919876500001"]
