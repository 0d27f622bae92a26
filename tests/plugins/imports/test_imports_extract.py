"""Header extraction: encodings, delimiters, and chunk offsets a reader can seek to.

The offsets are the contract with chunk processing: ``byte_offset`` is where the chunk's
first record starts in the raw file bytes, so each test seeks there, decodes with the
job's encoding and checks that the first record read is row ``first_row``.
"""

from __future__ import annotations

import csv
import io
import uuid

import pytest
import sqlalchemy as sa

from kloyst_plugins.imports import extract, storage
from kloyst_plugins.imports.models import ContactImportChunk, ContactImportJob

URL = "/v1/imports"
ROWS = [["name", "phone", "city"],
        ["Zoë Ąlvarez", "+44 1632 960001", "Zürich"],
        ["Café € Owner", "+1 202 555 0143", "São Paulo"],
        ["Ada", "+441632960003", "London"]]


@pytest.fixture
def vendor(owner, enable_plugin, registry, monkeypatch, tmp_path, clamd):
    enable_plugin(owner, "contacts")
    enable_plugin(owner, "imports")
    monkeypatch.setitem(registry.settings, "imports.storage_dir", str(tmp_path / "imports"))
    monkeypatch.setitem(registry.settings, "imports.clamd_address", clamd.address)
    return owner


def csv_text(rows, delimiter=",", newline="\r\n") -> str:
    out = io.StringIO(newline="")
    csv.writer(out, delimiter=delimiter, lineterminator=newline).writerows(rows)
    return out.getvalue()


def imported(testapp, account, content: bytes) -> dict:
    created = testapp.post(URL, upload_files=[("file", "c.csv", content)], headers=account.headers, status=201)
    return testapp.get(f"{URL}/{created.json['import']['id']}", headers=account.headers).json["import"]


def first_record_at(path, offset: int, encoding: str, delimiter: str) -> list[str]:
    with open(path, "rb") as raw:
        raw.seek(offset)
        text = io.TextIOWrapper(raw, encoding=encoding, newline="")
        return next(csv.reader(text, delimiter=delimiter, strict=True))


@pytest.mark.parametrize(("encoding", "expected"), [
    ("utf-8", "utf-8"), ("utf-8-sig", "utf-8-sig"), ("utf-16", "utf-16-le"), ("utf-16-be", None), ("cp1252", "cp1252"),
])
def test_every_supported_encoding_gives_identical_headers_and_samples(testapp, vendor, encoding, expected):
    rows = [[cell.replace("Ą", "A") for cell in row] for row in ROWS] if encoding == "cp1252" else ROWS
    content = csv_text(rows).encode(encoding)
    if encoding == "utf-16-be":
        content = b"\xfe\xff" + content
        expected = "utf-16-be"
    job = imported(testapp, vendor, content)
    assert job["status"] == "AWAITING_MAPPING", job["error"]
    assert job["encoding"] == expected
    assert job["headers"] == rows[0]
    assert job["sample_rows"] == rows[1:]
    assert job["row_count"] == 3


def test_cp1252_keeps_the_euro_sign(testapp, vendor):
    job = imported(testapp, vendor, "name,note\nAda,costs 5 €\n".encode("cp1252"))
    assert job["encoding"] == "cp1252" and job["sample_rows"] == [["Ada", "costs 5 €"]]


@pytest.mark.parametrize("delimiter", [";", "\t", "|", ","])
def test_the_delimiter_is_detected(testapp, vendor, delimiter):
    rows = [["name", "phone", "labels"], ["Ada, Countess", "+44 1632 960001", "a;b"], ["Grace", "+1 202", "c"]]
    job = imported(testapp, vendor, csv_text(rows, delimiter).encode())
    assert job["delimiter"] == delimiter
    assert job["headers"] == rows[0] and job["sample_rows"] == rows[1:]


def test_a_single_column_file_falls_back_to_comma(testapp, vendor):
    job = imported(testapp, vendor, b"phone\n+441632960001\n+441632960002\n")
    assert job["delimiter"] == "," and job["headers"] == ["phone"] and job["row_count"] == 2


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "cp1252"])
def test_chunk_offsets_point_at_each_chunks_first_record_even_with_embedded_newlines(
        testapp, vendor, registry, monkeypatch, db, encoding):
    monkeypatch.setitem(registry.settings, "imports.chunk_rows", 2)
    data = [[f"Name {i}\nsecond line, with comma", f"+4416329600{i:02d}", "x\r\ny" if i % 3 == 0 else "z"]
            for i in range(1, 8)]
    rows = [["name", "phone", "note"], *data[:3], [], ["", " "], *data[3:]]  # blank records are not rows
    job = imported(testapp, vendor, csv_text(rows, newline="\n").encode(encoding))
    assert job["status"] == "AWAITING_MAPPING", job["error"]
    assert (job["row_count"], job["chunk_count"]) == (7, 4)
    model = db.get(ContactImportJob, uuid.UUID(job["id"]))
    path = storage.path_for(registry.settings, model.vendor_id, model.stored_name)
    chunks = list(db.scalars(sa.select(ContactImportChunk).where(ContactImportChunk.job_id == model.id)
                             .order_by(ContactImportChunk.index)))
    assert [(c.index, c.first_row, c.row_count) for c in chunks] == [(0, 1, 2), (1, 3, 2), (2, 5, 2), (3, 7, 1)]
    for chunk in chunks:
        assert first_record_at(path, chunk.byte_offset, model.encoding, model.delimiter) == data[chunk.first_row - 1]
        if encoding == "utf-16":
            assert chunk.byte_offset % 2 == 0


def test_iter_csv_records_from_a_chunk_offset_yields_that_chunks_rows(tmp_path):
    rows = [["h1", "h2"], *[[f"r{i}", f"multi\nline {i}"] for i in range(1, 11)]]
    path = tmp_path / "f.csv"
    path.write_bytes(csv_text(rows).encode("utf-16"))
    result = extract.extract_csv(path, chunk_rows=4)
    assert [(c.first_row, c.row_count) for c in result.chunks] == [(1, 4), (5, 4), (9, 2)]
    records = extract.iter_csv_records(path, result.encoding, result.delimiter, result.chunks[1].byte_offset)
    assert [row for _, row in records][:4] == rows[5:9]


def test_headers_are_made_usable_as_mapping_keys(tmp_path):
    path = tmp_path / "f.csv"
    path.write_bytes(b" name ,phone,,phone,\nAda,1,2,3,4\n")
    assert extract.extract_csv(path, 10).headers == ["name", "phone", "column_3", "phone (2)", "column_5"]


def test_too_many_columns_fail_the_extraction(tmp_path):
    path = tmp_path / "f.csv"
    path.write_bytes((",".join(f"c{i}" for i in range(201)) + "\n" + "x," * 200 + "x\n").encode())
    with pytest.raises(extract.ExtractionError, match="201 columns"):
        extract.extract_csv(path, 10)


def test_an_unterminated_quote_fails_with_the_line(tmp_path):
    path = tmp_path / "f.csv"
    path.write_bytes(b'name,phone\nAda,"+44\n')
    with pytest.raises(extract.ExtractionError, match="not valid CSV"):
        extract.extract_csv(path, 10)


def test_a_utf8_file_with_a_bad_byte_late_in_the_file_is_read_as_cp1252(tmp_path):
    path = tmp_path / "f.csv"
    path.write_bytes(b"name,phone\n" + b"Ada,1\n" * 20000 + "Café,2\n".encode("cp1252"))
    result = extract.extract_csv(path, 5000)
    assert result.encoding == "cp1252" and result.row_count == 20001 and len(result.chunks) == 5


def test_a_nul_in_the_middle_of_a_file_fails_the_extraction(tmp_path):
    path = tmp_path / "f.csv"
    path.write_bytes(b"name,phone\n" + b"Ada,1\n" * 20000 + b"Bad\0,2\n")
    with pytest.raises(extract.ExtractionError, match="NUL"):
        extract.extract_csv(path, 5000)


def test_xlsx_chunks_have_no_byte_offset(tmp_path):
    import openpyxl

    workbook = openpyxl.Workbook()
    for row in [["name", "phone"], *[[f"n{i}", 447700900000 + i] for i in range(5)]]:
        workbook.active.append(row)
    path = tmp_path / "f.xlsx"
    workbook.save(path)
    result = extract.extract(path, "xlsx", 2)
    assert [(c.first_row, c.row_count, c.byte_offset) for c in result.chunks] == [(1, 2, None), (3, 2, None),
                                                                                   (5, 1, None)]
    assert list(extract.iter_xlsx_rows(path))[4] == ["n4", "447700900004"]


def test_a_line_longer_than_any_contact_row_fails_the_extraction_without_parsing_it(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_bytes(b"name,phone\n" + b"," * (extract.MAX_LINE_BYTES + 10) + b"\nAda,1\n")
    with pytest.raises(extract.ExtractionError, match="longer than"):
        extract.extract_csv(path, 5000)


def test_a_nul_in_an_xlsx_cell_fails_the_extraction(tmp_path):
    import openpyxl

    import zipfile

    workbook = openpyxl.Workbook()
    workbook.active.append(["name", "phone"])
    workbook.active.append(["PLACEHOLDER", "447700900001"])
    plain = tmp_path / "plain.xlsx"
    workbook.save(plain)
    path = tmp_path / "nul.xlsx"
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            data = source.read(item)
            # Excel's escape for a NUL character, as a hostile workbook would carry it.
            target.writestr(item, data.replace(b"PLACEHOLDER", b"bad_x0000_name"))
    with pytest.raises(extract.ExtractionError, match="NUL"):
        extract.extract(path, "xlsx", 5000)


def test_xlsx_chunk_rows_are_the_rows_extraction_counted_despite_whitespace_only_rows(tmp_path):
    import openpyxl

    from kloyst_plugins.imports import reader

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["\u00a0"])  # a row of whitespace before the header
    sheet.append(["phone", "name"])
    for i in range(7):
        sheet.append([f"44770090010{i}", f"n{i}"])
        if i == 3:
            sheet.append(["  ", "\t"])  # and one between data rows
    path = tmp_path / "f.xlsx"
    workbook.save(path)
    result = extract.extract(path, "xlsx", 3)
    assert result.headers == ["phone", "name"] and result.row_count == 7
    rows_path, _ = reader.ensure_rows_file(path)
    lines = rows_path.read_text().splitlines()
    assert lines == [f"44770090010{i},n{i}" for i in range(7)]
