"""The tutorial's whole case (docs/writing_plugins.md), through the API as a vendor uses it.

A vendor with ``example`` and ``example_digest`` imports a file twice: the second time with the
example's merge strategy, which keeps the longer name. Each completed import reaches ``example``
as an ``ImportCompleted`` event, which writes a note; ``example_digest`` adds a line to that note
through the hook ``example`` offers (``kloyst_example_import_note``).
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from kloyst.db import tenancy
from kloyst_example.models import Note


@pytest.fixture
def vendor(owner, enable_plugin, clamd, registry, monkeypatch, tmp_path):
    monkeypatch.setitem(registry.settings, "imports.storage_dir", str(tmp_path / "imports"))
    monkeypatch.setitem(registry.settings, "imports.clamd_address", clamd.address)
    for name in ("contacts", "imports", "example", "example_digest"):
        enable_plugin(owner, name)
    return owner


def import_csv(testapp, vendor, run_outbox, lines: list[str], strategy: str) -> dict:
    body = ("\r\n".join(["Mobile,Name", *lines]) + "\r\n").encode()
    created = testapp.post("/v1/imports", upload_files=[("file", "contacts.csv", body)], headers=vendor.headers,
                           status=201).json["import"]
    run_outbox()
    testapp.put_json(f"/v1/imports/{created['id']}/mapping", {
        "columns": {"phone": "Mobile", "name": "Name"}, "default_country": "IN", "merge_strategy": strategy},
        headers=vendor.headers)
    run_outbox()
    return testapp.get(f"/v1/imports/{created['id']}", headers=vendor.headers).json["import"]


def notes(db, vendor_id) -> list[str]:
    db.expire_all()
    with tenancy.unscoped(db):
        return list(db.scalars(select(Note.text).where(Note.vendor_id == vendor_id).order_by(Note.created_at)))


def test_a_completed_import_writes_a_note_with_the_digest_line_and_the_merge_strategy_keeps_longer_names(
        testapp, db, vendor, run_outbox):
    first = import_csv(testapp, vendor, run_outbox, ["9876543201,Asha", "not a number,X"], "SKIP_DUPLICATES")
    assert first["status"] == "PARTIAL_SUCCESS"

    second = import_csv(testapp, vendor, run_outbox, ["9876543201,Asha Rao"], "KEEP_LONGER_NAME")
    assert second["counts"]["updated"] == 1

    contacts = testapp.get("/v1/contacts", headers=vendor.headers).json["items"]
    assert [c["name"] for c in contacts] == ["Asha Rao"]
    assert notes(db, vendor.vendor_id) == [
        f"Import {first['id']} completed: 1 created, 0 updated, 0 skipped, 1 failed.\n"
        f"Digest: 1 rows need a look (GET /v1/imports/{first['id']}/rejected.csv).",
        f"Import {second['id']} completed: 0 created, 1 updated, 0 skipped, 0 failed.",
    ]


def test_without_the_digest_the_note_has_only_the_counts(testapp, db, vendor, run_outbox):
    testapp.delete("/v1/plugins/example_digest", headers=vendor.headers)
    done = import_csv(testapp, vendor, run_outbox, ["9876543202,Ravi", "bad,Y"], "SKIP_DUPLICATES")

    assert notes(db, vendor.vendor_id) == [f"Import {done['id']} completed: 1 created, 0 updated, 0 skipped, 1 failed."]
