"""POST /v1/imports and the scan: hostile files refused, infected files quarantined, clean files extracted.

Real PostgreSQL and a real clamd (the private test instance with EICAR signatures). The
scan task runs right after the upload's transaction commits, as it does in production.
Every hostile file is built here, in code, from its description (the zip guard's rules, zipguard.py).
"""

from __future__ import annotations

import hashlib
import io
import uuid
import zipfile

import openpyxl
import pytest
import sqlalchemy as sa

from kloyst.testing.clamd import EICAR, free_port
from kloyst_plugins.imports import extract
from kloyst_plugins.imports.models import ContactImportChunk, ContactImportJob

URL = "/v1/imports"
CSV = b"name,phone\nAda,+441632960001\nGrace,+441632960002\n"


@pytest.fixture
def storage_dir(registry, monkeypatch, tmp_path):
    directory = tmp_path / "imports"
    monkeypatch.setitem(registry.settings, "imports.storage_dir", str(directory))
    return directory


@pytest.fixture
def vendor(owner, enable_plugin, storage_dir, clamd, registry, monkeypatch):
    """A vendor with contacts and imports on, its files in a temporary folder, scanned by the test clamd."""
    enable_plugin(owner, "contacts")
    enable_plugin(owner, "imports")
    monkeypatch.setitem(registry.settings, "imports.clamd_address", clamd.address)
    return owner


def upload(testapp, account, content: bytes, filename: str = "contacts.csv", *, status: int = 201,
           force: bool = False):
    fields = [("force", "true")] if force else []
    return testapp.post(URL, params=fields, upload_files=[("file", filename, content)], headers=account.headers,
                        status=status)


def job_of(testapp, account, response) -> dict:
    return testapp.get(f"{URL}/{response.json['import']['id']}", headers=account.headers).json["import"]


def files_in(directory) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def xlsx(rows, *, extra: dict[str, bytes] | None = None, replace: dict[str, bytes] | None = None) -> bytes:
    """An .xlsx of ``rows``, optionally with members added or replaced (raw bytes)."""
    workbook = openpyxl.Workbook()
    for row in rows:
        workbook.active.append(row)
    plain = io.BytesIO()
    workbook.save(plain)
    if not extra and not replace:
        return plain.getvalue()
    out = io.BytesIO()
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, (replace or {}).get(info.filename, source.read(info)))
        for name, data in (extra or {}).items():
            target.writestr(name, data)
    return out.getvalue()


SHEET = ('<?xml version="1.0" encoding="UTF-8"?>\n{dtd}<worksheet xmlns="http://schemas.openxmlformats.org/'
         'spreadsheetml/2006/main"><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>{text}</t></is></c></row>'
         '<row r="2"><c r="A2" t="inlineStr"><is><t>x</t></is></c></row></sheetData></worksheet>')
LAUGHS = ('<!DOCTYPE lolz [<!ENTITY lol "lol">' + "".join(
    f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10)) + "]>")
XXE = '<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/hostname">]>'


def encrypted_zip() -> bytes:
    """A zip whose members carry the 'encrypted' flag (zipfile cannot write real ZipCrypto)."""
    raw = bytearray(xlsx([["name", "phone"], ["Ada", "1"]]))
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (index := raw.find(signature, start)) != -1:
            raw[index + flag_at] |= 0x01
            start = index + 4
    return bytes(raw)


def bomb() -> bytes:
    """~310 KB that inflates to 300 MB of whitespace in xl/worksheets/sheet1.xml."""
    source = xlsx([["name", "phone"], ["Ada", "1"]])
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(source)) as plain, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as target:
        for info in plain.infolist():
            if info.filename != "xl/worksheets/sheet1.xml":
                target.writestr(info.filename, plain.read(info))
        with target.open("xl/worksheets/sheet1.xml", "w") as member:
            block = b" " * (1024 * 1024)
            for _ in range(300):
                member.write(block)
    return out.getvalue()


def test_a_clean_csv_is_stored_under_a_generated_name_scanned_and_extracted(testapp, vendor, storage_dir, db):
    response = upload(testapp, vendor, CSV, filename="../../etc/My\x07 Contacts.csv")
    created = response.json["import"]
    assert created["status"] == "UPLOADED"
    assert created["original_filename"] == "My Contacts.csv"
    assert created["size_bytes"] == len(CSV) and created["file_type"] == "csv"
    assert created["sha256"] == hashlib.sha256(CSV).hexdigest()
    assert response.headers["Location"].endswith(created["id"])
    job = job_of(testapp, vendor, response)
    assert job["status"] == "AWAITING_MAPPING"
    assert job["scan"] == {"result": "clean", "attempts": 1}
    assert job["headers"] == ["name", "phone"]
    assert job["sample_rows"] == [["Ada", "+441632960001"], ["Grace", "+441632960002"]]
    assert (job["row_count"], job["chunk_count"], job["encoding"], job["delimiter"]) == (2, 1, "utf-8", ",")
    assert job["progress"] == {"chunks_done": 0, "chunk_count": 1, "rows_processed": 0, "row_count": 2}
    stored = db.get(ContactImportJob, uuid.UUID(created["id"])).stored_name
    assert files_in(storage_dir) == [stored]
    assert (storage_dir / str(vendor.vendor_id) / stored).read_bytes() == CSV


def test_a_clean_xlsx_is_extracted_with_numbers_as_text(testapp, vendor):
    content = xlsx([["Name", "Phone"], ["Ada", 919876543210], [None, None], ["Grace", "+1 202 555 0143"]])
    job = job_of(testapp, vendor, upload(testapp, vendor, content, filename="list.xlsx"))
    assert job["status"] == "AWAITING_MAPPING", job
    assert job["file_type"] == "xlsx" and job["encoding"] is None and job["delimiter"] is None
    assert job["headers"] == ["Name", "Phone"]
    assert job["sample_rows"] == [["Ada", "919876543210"], ["Grace", "+1 202 555 0143"]]
    assert job["row_count"] == 2


@pytest.mark.parametrize(("dtd", "encoding"), [(LAUGHS, "utf-8"), (XXE, "utf-8"), (XXE, "utf-16")],
                         ids=["billion-laughs", "xxe", "xxe-in-utf-16"])
def test_billion_laughs_and_xxe_workbooks_are_refused_at_upload(testapp, vendor, storage_dir, dtd, encoding):
    text = "&lol9;" if dtd is LAUGHS else "&xxe;"
    sheet = SHEET.format(dtd=dtd, text=text).replace('encoding="UTF-8"', f'encoding="{encoding.upper()}"')
    content = xlsx([["a"]], replace={"xl/worksheets/sheet1.xml": sheet.encode(encoding)})  # utf-16: with a BOM
    response = upload(testapp, vendor, content, filename="evil.xlsx", status=422)
    assert response.json["error"]["code"] == "hostile_file"
    assert "DTD" in response.json["error"]["message"]
    assert files_in(storage_dir) == []


def test_a_zip_bomb_is_refused_before_any_spreadsheet_parser_runs(testapp, vendor, storage_dir, monkeypatch, db):
    content = bomb()
    assert len(content) < 400_000
    parsed = []
    monkeypatch.setattr(extract, "extract", lambda *a, **k: parsed.append(a))
    monkeypatch.setattr(openpyxl, "load_workbook", lambda *a, **k: parsed.append(a))
    response = upload(testapp, vendor, content, filename="bomb.xlsx", status=422)
    # 300 MB from 300 KB: over the member size limit, and a ratio only bombs have.
    message = response.json["error"]["message"]
    assert "member too large" in message or "zip bombs" in message
    assert parsed == [] and files_in(storage_dir) == []
    assert db.scalar(sa.select(sa.func.count()).select_from(ContactImportJob)) == 0


def test_the_zip_size_limits_are_the_imports_settings(testapp, vendor, storage_dir, registry, monkeypatch):
    content = xlsx([["name", "phone"]] + [[f"Person {i}", f"98765{i:05d}"] for i in range(2000)])
    monkeypatch.setitem(registry.settings, "imports.xlsx_max_member_bytes", 20_000)
    response = upload(testapp, vendor, content, filename="list.xlsx", status=422)
    assert "member too large" in response.json["error"]["message"] and files_in(storage_dir) == []
    monkeypatch.setitem(registry.settings, "imports.xlsx_max_member_bytes", 10_000_000)
    monkeypatch.setitem(registry.settings, "imports.xlsx_max_total_bytes", 50_000)
    response = upload(testapp, vendor, content, filename="list.xlsx", status=422)
    assert "in all" in response.json["error"]["message"]
    monkeypatch.setitem(registry.settings, "imports.xlsx_max_total_bytes", 10_000_000)
    upload(testapp, vendor, content, filename="list.xlsx")


def test_a_zip_bomb_with_a_looser_ratio_setting_still_meets_the_size_limit(testapp, vendor, registry, monkeypatch):
    monkeypatch.setitem(registry.settings, "imports.xlsx_max_ratio", 10_000)
    monkeypatch.setitem(registry.settings, "imports.xlsx_max_member_bytes", 100 * 1024 * 1024)
    response = upload(testapp, vendor, bomb(), filename="bomb.xlsx", status=422)
    assert "member too large" in response.json["error"]["message"]


def test_a_macro_workbook_is_refused(testapp, vendor):
    content = xlsx([["name"], ["Ada"]], extra={"xl/vbaProject.bin": b"\xd0\xcf\x11\xe0macro"})
    response = upload(testapp, vendor, content, filename="list.xlsx", status=422)
    assert response.json["error"]["code"] == "macro_workbook"
    assert "XLSM" in response.json["error"]["message"]


def test_an_encrypted_zip_is_refused(testapp, vendor):
    response = upload(testapp, vendor, encrypted_zip(), filename="list.xlsx", status=422)
    assert "encrypted" in response.json["error"]["message"]


@pytest.mark.parametrize("name", ["../../evil.csv", "/etc/cron.d/evil", "xl\\..\\evil.xml"])
def test_a_zip_slip_member_name_is_refused(testapp, vendor, name):
    content = xlsx([["name"], ["Ada"]], extra={name: b"x"})
    response = upload(testapp, vendor, content, filename="list.xlsx", status=422)
    assert response.json["error"]["code"] == "hostile_file"


def test_a_zip64_local_header_is_refused_because_clamd_cannot_see_into_it(testapp, vendor):
    source = xlsx([["name"], ["Ada"]])
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(source)) as plain, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in plain.infolist():
            with target.open(info.filename, "w", force_zip64=info.filename.endswith("sheet1.xml")) as member:
                member.write(plain.read(info))
    response = upload(testapp, vendor, out.getvalue(), filename="list.xlsx", status=422)
    assert "ZIP64" in response.json["error"]["message"]


@pytest.mark.parametrize(("content", "needle"), [
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 600, "XLS"),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "PDF"),
    (b"\x7fELF\x02\x01\x01\0\0\0\0\0", "not a CSV"),
    (b"name,phone\x01\x02\nx,y\n", "control characters"),
], ids=["xls", "pdf", "binary", "control-chars"])
def test_files_that_are_not_csv_or_xlsx_are_unsupported(testapp, vendor, storage_dir, content, needle):
    response = upload(testapp, vendor, content, filename="contacts.csv", status=415)
    assert needle in response.json["error"]["message"]
    assert files_in(storage_dir) == []


def test_a_zip_that_is_not_a_workbook_is_unsupported(testapp, vendor):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("contacts.csv", CSV)
    response = upload(testapp, vendor, out.getvalue(), filename="contacts.xlsx", status=415)
    assert "not an Excel workbook" in response.json["error"]["message"]


def test_a_file_over_the_limit_is_413_and_leaves_no_file(testapp, vendor, storage_dir, registry, monkeypatch, db):
    monkeypatch.setitem(registry.settings, "imports.max_upload_bytes", 1000)
    response = upload(testapp, vendor, b"name,phone\n" + b"Ada,+441632960001\n" * 100, status=413)
    assert response.json["error"]["details"] == {"limit_bytes": 1000}
    assert files_in(storage_dir) == []
    assert db.scalar(sa.select(sa.func.count()).select_from(ContactImportJob)) == 0
    upload(testapp, vendor, CSV)  # exactly at or under the limit is fine


def test_the_same_file_twice_is_409_naming_the_first_job_and_force_imports_it_again(testapp, vendor, storage_dir):
    first = upload(testapp, vendor, CSV).json["import"]
    again = upload(testapp, vendor, CSV, filename="renamed.csv", status=409).json["error"]
    assert again["code"] == "duplicate_file"
    assert again["details"]["job_id"] == first["id"] and first["id"] in again["message"]
    assert len(files_in(storage_dir)) == 1
    forced = upload(testapp, vendor, CSV, force=True).json["import"]
    assert forced["forced"] is True and forced["sha256"] == first["sha256"]
    assert len(files_in(storage_dir)) == 2


def test_force_that_is_neither_true_nor_false_is_422_naming_the_field_and_stores_nothing(testapp, vendor,
                                                                                          storage_dir):
    refused = testapp.post(URL, params=[("force", "ture")], upload_files=[("file", "contacts.csv", CSV)],
                           headers=vendor.headers, status=422).json["error"]
    assert refused["details"]["fields"] == [{"field": "force", "problem": "must be true or false, not 'ture'"}]
    assert files_in(storage_dir) == []
    assert upload(testapp, vendor, CSV).json["import"]["forced"] is False  # force=false is the default


def test_a_file_whose_earlier_import_was_cancelled_can_be_uploaded_again(testapp, vendor):
    first = upload(testapp, vendor, CSV).json["import"]
    testapp.post(f"{URL}/{first['id']}/cancel", headers=vendor.headers, status=200)
    assert upload(testapp, vendor, CSV).json["import"]["forced"] is False


def test_the_same_file_from_another_vendor_is_not_a_duplicate(testapp, vendor, accounts, enable_plugin, db):
    upload(testapp, vendor, CSV)
    other = accounts.vendor("Other Co")
    db.commit()
    enable_plugin(other, "contacts")
    enable_plugin(other, "imports")
    upload(testapp, other, CSV)


@pytest.mark.parametrize(("content", "filename"), [
    (EICAR, "eicar.csv"),
    (b"name,phone\r\n" + EICAR + b",+441632960001\r\n", "contacts.csv"),
    (xlsx([["name", "phone"], [EICAR.decode(), "1"]]), "cell.xlsx"),
    (xlsx([["name", "phone"], ["Ada", "1"]], extra={"eicar.com": EICAR}), "member.xlsx"),
], ids=["plain", "csv-row", "xlsx-cell", "xlsx-member"])
def test_eicar_is_quarantined_and_never_parsed(testapp, vendor, monkeypatch, content, filename):
    parsed = []
    monkeypatch.setattr(extract, "extract", lambda *a, **k: parsed.append(a))
    job = job_of(testapp, vendor, upload(testapp, vendor, content, filename=filename))
    assert job["status"] == "QUARANTINED"
    assert "Eicar-Test-Signature" in job["scan"]["result"]
    assert job["headers"] is None and job["sample_rows"] is None and job["row_count"] is None
    assert parsed == []


def test_a_scanner_that_is_down_leaves_the_job_waiting_until_it_is_back(testapp, vendor, registry, monkeypatch,
                                                                       run_outbox, db, clamd):
    monkeypatch.setitem(registry.settings, "imports.clamd_address", f"tcp://127.0.0.1:{free_port()}")
    response = upload(testapp, vendor, CSV)
    job = job_of(testapp, vendor, response)
    assert job["status"] == "UPLOADED" and job["headers"] is None
    assert job["scan"]["attempts"] == 1 and job["scan"]["result"].startswith("waiting for the virus scanner")

    monkeypatch.setitem(registry.settings, "imports.clamd_address", clamd.address)
    assert run_outbox() == 0  # the retry is not due yet
    assert job_of(testapp, vendor, response)["status"] == "UPLOADED"

    db.execute(sa.text("UPDATE outbox_event SET available_at = now() - interval '1 second' "
                       "WHERE status = 'pending'"))
    db.commit()
    assert run_outbox() == 1
    job = job_of(testapp, vendor, response)
    assert job["status"] == "AWAITING_MAPPING" and job["scan"] == {"result": "clean", "attempts": 2}
    assert job["headers"] == ["name", "phone"]


def test_without_a_configured_scanner_uploads_wait_and_are_never_treated_as_clean(testapp, vendor, registry,
                                                                                  monkeypatch):
    monkeypatch.setitem(registry.settings, "imports.clamd_address", "")
    job = job_of(testapp, vendor, upload(testapp, vendor, CSV))
    assert job["status"] == "UPLOADED" and job["headers"] is None
    assert "no clamd address" in job["scan"]["result"]


def test_an_empty_file_fails_with_a_message(testapp, vendor):
    job = job_of(testapp, vendor, upload(testapp, vendor, b""))
    assert job["status"] == "FAILED" and "empty" in job["error"]
    assert job["finished_at"] is not None


def test_a_header_only_file_fails_with_0_data_rows(testapp, vendor):
    job = job_of(testapp, vendor, upload(testapp, vendor, b"name,phone\r\n\r\n"))
    assert job["status"] == "FAILED" and "0 data rows" in job["error"]


def test_cancel_is_allowed_once_and_marks_pending_chunks_cancelled(testapp, vendor, db):
    job = upload(testapp, vendor, CSV).json["import"]
    cancelled = testapp.post(f"{URL}/{job['id']}/cancel", headers=vendor.headers, status=200).json["import"]
    assert cancelled["status"] == "CANCELLED" and cancelled["cancelled_at"] is not None
    assert set(db.scalars(sa.select(ContactImportChunk.status))) == {"cancelled"}
    again = testapp.post(f"{URL}/{job['id']}/cancel", headers=vendor.headers, status=409).json["error"]
    assert "CANCELLED" in again["message"]


def test_a_job_waiting_for_the_scanner_can_be_cancelled_and_the_retry_then_does_nothing(
        testapp, vendor, registry, monkeypatch, run_outbox, db, clamd):
    monkeypatch.setitem(registry.settings, "imports.clamd_address", "")
    job = upload(testapp, vendor, CSV).json["import"]
    testapp.post(f"{URL}/{job['id']}/cancel", headers=vendor.headers, status=200)
    monkeypatch.setitem(registry.settings, "imports.clamd_address", clamd.address)
    db.execute(sa.text("UPDATE outbox_event SET available_at = now() WHERE status = 'pending'"))
    db.commit()
    run_outbox()
    final = testapp.get(f"{URL}/{job['id']}", headers=vendor.headers).json["import"]
    assert final["status"] == "CANCELLED" and final["headers"] is None


def test_the_list_is_newest_first_with_a_cursor(testapp, vendor):
    ids = [upload(testapp, vendor, CSV + str(i).encode() + b",1\n").json["import"]["id"] for i in range(3)]
    first = testapp.get(URL, {"limit": 2}, headers=vendor.headers).json
    assert [j["id"] for j in first["items"]] == ids[::-1][:2]
    second = testapp.get(URL, {"limit": 2, "cursor": first["next_cursor"]}, headers=vendor.headers).json
    assert [j["id"] for j in second["items"]] == ids[:1] and second["next_cursor"] is None


def test_another_vendors_job_is_404(testapp, vendor, accounts, enable_plugin, db):
    job = upload(testapp, vendor, CSV).json["import"]
    other = accounts.vendor("Other Co")
    db.commit()
    enable_plugin(other, "contacts")
    enable_plugin(other, "imports")
    testapp.get(f"{URL}/{job['id']}", headers=other.headers, status=404)
    testapp.post(f"{URL}/{job['id']}/cancel", headers=other.headers, status=404)
    assert job["id"] not in {j["id"] for j in testapp.get(URL, headers=other.headers).json["items"]}


def test_a_vendor_without_the_imports_plugin_gets_404(testapp, owner, enable_plugin, storage_dir):
    enable_plugin(owner, "contacts")
    testapp.post(URL, upload_files=[("file", "c.csv", CSV)], headers=owner.headers, status=404)
    testapp.get(URL, headers=owner.headers, status=404)
    assert files_in(storage_dir) == []


def test_a_multipart_body_without_a_file_field_is_a_422_naming_the_field(testapp, vendor):
    response = testapp.post(URL, {"note": "no file"}, content_type="multipart/form-data", headers=vendor.headers,
                            status=422)
    error = response.json["error"]
    assert error["code"] == "file_required"
    assert [f["field"] for f in error["details"]["fields"]] == ["file"]


def test_a_body_that_is_not_multipart_is_a_400(testapp, vendor):
    response = testapp.post(URL, b'{"file": 1}', content_type="application/json", headers=vendor.headers, status=400)
    assert response.json["error"]["code"] == "multipart_required"


def test_the_scan_is_sent_only_after_the_upload_commits(testapp, vendor, task_recorder):
    job = upload(testapp, vendor, CSV).json["import"]
    assert task_recorder == [("imports.scan_upload", {"vendor_id": vendor.vendor_id, "job_id": uuid.UUID(job["id"])})]
    upload(testapp, vendor, CSV, status=409)
    assert len(task_recorder) == 1


def test_a_stored_file_that_disappeared_fails_the_job_instead_of_retrying(testapp, vendor, task_recorder, storage_dir,
                                                                         run_outbox):
    job = upload(testapp, vendor, CSV).json["import"]
    for path in storage_dir.rglob("*"):
        if path.is_file():
            path.unlink()
    run_outbox()
    failed = testapp.get(f"{URL}/{job['id']}", headers=vendor.headers).json["import"]
    assert failed["status"] == "FAILED" and "no longer in storage" in failed["error"]
