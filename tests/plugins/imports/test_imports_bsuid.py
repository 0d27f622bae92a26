"""Imports with a column of WhatsApp business-scoped user ids (BSUIDs), on PostgreSQL (the COPY path).

A row needs a number or a BSUID: with both, the number's contact carries the BSUID; with a BSUID
alone, the contact is known by it (country from its prefix) and a later row of it merges like any
contact. One BSUID is one contact: a BSUID another contact holds, or given to two numbers, is a
rejected row saying so. A file without a BSUID column imports as before.
"""

from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy import select

from imports_processing_support import add_contact, make_job, reload
from kloyst.db import tenancy
from kloyst_plugins.contacts.models import Contact, ContactAuditLog
from kloyst_plugins.imports import processing
from kloyst_plugins.imports.models import ImportStatus

BSUID_A, BSUID_B, BSUID_C = "IN.1000000000000001", "IN.1000000000000002", "US.1000000000000003"
HEADERS = ["Mobile", "WhatsApp id", "Name", "Tags"]
MAPPING = {"columns": {"phone": "Mobile", "bsuid": "WhatsApp id", "name": "Name", "labels": "Tags"},
           "default_country": "IN", "merge_strategy": "MERGE_LABELS"}


@pytest.fixture(params=[False, True], ids=["read-first", "insert-first"])
def importer(request, testapp, db, registry, vendor, run_outbox, monkeypatch):
    monkeypatch.setattr(processing, "INSERT_FIRST", request.param)

    class Importer:
        def run(self, rows, mapping=MAPPING, headers=HEADERS, status=200, chunk_size=3):
            job = make_job(db, registry.settings, vendor.vendor_id, headers, rows, chunk_size=chunk_size)
            answer = testapp.put_json(f"/v1/imports/{job.id}/mapping", mapping, headers=vendor.headers, status=status)
            if status != 200:
                return answer.json["error"]
            run_outbox()
            return reload(db, job)

        def contacts(self) -> list[dict]:
            cipher = registry["kloyst.cipher"]
            db.expire_all()
            with tenancy.unscoped(db):
                rows = db.scalars(select(Contact).where(Contact.vendor_id == vendor.vendor_id)).all()

            def opened(token, field):
                return None if token is None else cipher.decrypt(token, vendor_id=vendor.vendor_id, field=field)

            return sorted(({"mobile": opened(c.mobile_enc, "mobile"), "bsuid": opened(c.bsuid_enc, "bsuid"),
                            "name": opened(c.name_enc, "name"), "labels": sorted(c.labels), "country": c.country,
                            "id": c.id, "bsuid_hash": c.bsuid_hash} for c in rows),
                          key=lambda c: (c["mobile"] or "", c["bsuid"] or ""))

        def rejected(self, job) -> list[list[str]]:
            body = testapp.get(f"/v1/imports/{job.id}/rejected.csv", headers=vendor.headers).body.decode("utf-8-sig")
            return list(csv.reader(io.StringIO(body)))[1:]

    return Importer()


def _counts(job):
    return job.created_count, job.updated_count, job.duplicate_count, job.rejected_count


@pytest.mark.parametrize(("chunk_size", "counts"), [(10, (3, 0, 2, 0)), (3, (3, 2, 0, 0))], ids=["one-chunk",
                                                                                             "two-chunks"])
def test_rows_with_a_number_a_bsuid_or_both_each_make_one_contact(importer, registry, vendor, chunk_size, counts):
    rows = [["9876500001", BSUID_A, "Asha", "a"],
            ["", BSUID_B, "Bina", "b"],       # a BSUID alone
            ["9876500003", "", "Chand", "c"],  # a number alone
            ["", BSUID_B, "", "b2"],            # the same BSUID again: merged in file order
            ["", BSUID_A, "", "a2"]]            # a BSUID an earlier row gave a number: that contact
    job = importer.run(rows, chunk_size=chunk_size)
    assert job.status == ImportStatus.COMPLETED.value
    assert _counts(job) == counts  # in a later chunk, a row of a known contact merges into it (updated)
    by_name = {c["name"]: c for c in importer.contacts()}
    assert (by_name["Asha"]["mobile"], by_name["Asha"]["bsuid"]) == ("+919876500001", BSUID_A)
    assert by_name["Asha"]["labels"] == ["a", "a2"]
    assert (by_name["Bina"]["mobile"], by_name["Bina"]["bsuid"], by_name["Bina"]["country"]) == (None, BSUID_B, "IN")
    assert by_name["Bina"]["labels"] == ["b", "b2"]
    assert by_name["Bina"]["bsuid_hash"] == registry["kloyst.mobile_hasher"](vendor.vendor_id, BSUID_B)
    assert by_name["Chand"]["bsuid"] is None


def test_a_re_import_merges_into_bsuid_contacts_and_gives_number_contacts_their_bsuid(importer, db, registry,
                                                                                     vendor):
    known = add_contact(db, registry, vendor.vendor_id, "+919876500011", name="Known", labels=["old"])
    importer.run([["", BSUID_B, "Bina", "first"]])
    job = importer.run([["9876500011", BSUID_A, "", ""],    # the number's contact gains the BSUID
                        ["", BSUID_B, "", "second"],        # the BSUID's contact merges the labels
                        ["", BSUID_C, "Cy", ""]])           # a new BSUID
    assert _counts(job) == (1, 2, 0, 0)
    by_name = {c["name"]: c for c in importer.contacts()}
    assert by_name["Known"]["id"] == known.id and by_name["Known"]["bsuid"] == BSUID_A
    assert by_name["Bina"]["labels"] == ["first", "second"] and by_name["Cy"]["country"] == "US"
    with tenancy.unscoped(db):
        [merge] = db.scalars(select(ContactAuditLog.changes).where(ContactAuditLog.contact_id == known.id,
                                                                   ContactAuditLog.action == "merge")).all()
    assert merge == {"bsuid": [None, "set"]}
    again = importer.run([["9876500011", BSUID_A, "", ""]])
    assert _counts(again) == (0, 0, 1, 0)  # nothing left to change


def test_a_bsuid_held_by_another_contact_or_given_to_two_numbers_is_a_rejected_row(importer, db, registry, vendor):
    importer.run([["", BSUID_A, "Alone", ""]])
    job = importer.run([["9876500021", BSUID_A, "Other number", ""],   # BSUID_A is a contact of its own
                        ["9876500022", BSUID_B, "First", ""],
                        ["9876500023", BSUID_B, "Second number", ""],  # BSUID_B went to 500022 above
                        ["9876500022", BSUID_C, "Other id", ""],       # and 500022 has BSUID_B
                        ["", "not-a-bsuid", "Bad", ""]], chunk_size=10)
    assert job.status == ImportStatus.PARTIAL_SUCCESS.value
    assert _counts(job) == (1, 0, 0, 4)
    reasons = {row[0]: row[-1] for row in importer.rejected(job)}
    assert reasons["1"] == "another contact already has this BSUID"
    assert reasons["3"] == "an earlier row gives this BSUID to another number"
    assert reasons["4"] == "an earlier row gives this number another BSUID"
    assert "business-scoped user id" in reasons["5"]
    assert {c["name"] for c in importer.contacts()} == {"Alone", "First"}
    later = importer.run([["9876500022", BSUID_C, "", ""]])  # the contact has BSUID_B: kept, row refused
    assert _counts(later) == (0, 0, 0, 1)
    assert importer.rejected(later)[0][-1] == "this number's contact already has another BSUID"


def test_the_mapping_needs_a_number_or_a_bsuid_column(importer):
    error = importer.run([["", BSUID_A, "A", ""]], mapping={"columns": {"name": "Name"},
                                                          "merge_strategy": "MERGE_LABELS"}, status=422)
    assert "columns.phone" in error["message"] and "bsuid" in error["message"]
    job = importer.run([["", BSUID_A, "A", ""], ["9876500031", "", "no id", ""]],
                       mapping={"columns": {"bsuid": "WhatsApp id", "name": "Name"}, "merge_strategy": "MERGE_LABELS"})
    assert _counts(job) == (1, 0, 0, 1)
    assert importer.rejected(job)[0][:2] == ["2", "WhatsApp id"]
