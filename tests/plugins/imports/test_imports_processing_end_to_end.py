"""Upload → scan → extraction → mapping → chunks → report, through the API only (real clamd)."""

from __future__ import annotations

import csv
import io

import pytest


@pytest.fixture
def vendor(owner, enable_plugin, clamd, registry, monkeypatch, tmp_path):
    monkeypatch.setitem(registry.settings, "imports.storage_dir", str(tmp_path / "imports"))
    monkeypatch.setitem(registry.settings, "imports.clamd_address", clamd.address)
    monkeypatch.setitem(registry.settings, "imports.chunk_rows", 4)
    enable_plugin(owner, "contacts")
    enable_plugin(owner, "imports")
    return owner


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "cp1252"])
def test_an_uploaded_file_is_imported_end_to_end(testapp, vendor, run_outbox, encoding):
    lines = ["Téléphone;Nom;Étiquettes"] + [f"98765 432{i:02d};Zoë {i};a,b" for i in range(9)] + \
        ["pas un numéro;X;", "", "+91 98765 43200;Zoë again;c"]
    body = ("\r\n".join(lines) + "\r\n").encode(encoding)
    created = testapp.post("/v1/imports", upload_files=[("file", "contacts.csv", body)], headers=vendor.headers,
                           status=201).json["import"]
    run_outbox()
    job = testapp.get(f"/v1/imports/{created['id']}", headers=vendor.headers).json["import"]
    assert job["status"] == "AWAITING_MAPPING", job
    assert job["headers"] == ["Téléphone", "Nom", "Étiquettes"] and job["chunk_count"] == 3
    testapp.put_json(f"/v1/imports/{job['id']}/mapping", {
        "columns": {"phone": "Téléphone", "name": "Nom", "labels": "Étiquettes"}, "default_country": "IN",
        "labels": ["e2e"], "merge_strategy": "MERGE_LABELS"}, headers=vendor.headers)
    run_outbox()
    job = testapp.get(f"/v1/imports/{job['id']}", headers=vendor.headers).json["import"]
    assert job["status"] == "PARTIAL_SUCCESS", job
    progress = job["progress"]
    assert progress["rows_processed"] == 11 and progress["chunks_done"] == 3
    # 10 numbers (the last row repeats row 1's), one bad row
    assert job["counts"] == {"total": 11, "created": 9, "updated": 0, "skipped_duplicate": 1, "rejected": 1} or \
        job["counts"] == {"total": 11, "created": 9, "updated": 1, "skipped_duplicate": 0, "rejected": 1}
    report = testapp.get(f"/v1/imports/{job['id']}/rejected.csv", headers=vendor.headers).body.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(report)))
    assert rows[1][:2] == ["10", "Téléphone"] and len(rows) == 2
