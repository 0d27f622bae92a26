"""The DTD check reads every workbook part in the encoding an XML parser would read it in.

A byte search for ``<!DOCTYPE`` misses the same text written in UTF-16 (``<\\0!\\0D\\0…``),
while the parser that later opens the sheet reads it as a DTD: issue 15 found such a
workbook passing the upload check. Each part here is a real workbook's sheet, re-encoded.
"""

from __future__ import annotations

import codecs
import io
import os
import zipfile

import openpyxl
import pytest

from kloyst_plugins.imports import sniff, zipguard

SHEET = ('<?xml version="1.0" encoding="{encoding}"?>\n{dtd}<worksheet xmlns="http://schemas.openxmlformats.org/'
         'spreadsheetml/2006/main"><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>{text}</t></is></c></row>'
         '</sheetData></worksheet>')
XXE = '<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/hostname">]>'


def workbook_with_sheet(tmp_path, sheet: bytes):
    """A real openpyxl workbook whose first sheet is replaced by ``sheet`` (raw bytes)."""
    workbook = openpyxl.Workbook()
    workbook.active.append(["name", "phone"])
    plain = io.BytesIO()
    workbook.save(plain)
    path = tmp_path / "book.xlsx"
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            data = sheet if info.filename == "xl/worksheets/sheet1.xml" else source.read(info)
            target.writestr(info.filename, data)
    return path


ENCODED = {
    "utf-16-le with BOM": lambda text: codecs.BOM_UTF16_LE + text.format(encoding="UTF-16").encode("utf-16-le"),
    "utf-16-be with BOM": lambda text: codecs.BOM_UTF16_BE + text.format(encoding="UTF-16").encode("utf-16-be"),
    "utf-16-le without BOM": lambda text: text.format(encoding="UTF-16").encode("utf-16-le"),
    "utf-16-be without BOM": lambda text: text.format(encoding="UTF-16").encode("utf-16-be"),
    "utf-8 with BOM": lambda text: codecs.BOM_UTF8 + text.format(encoding="UTF-8").encode("utf-8"),
    "utf-32-le with BOM": lambda text: codecs.BOM_UTF32_LE + text.format(encoding="UTF-32").encode("utf-32-le"),
    # ASCII on disk, so no byte search finds "<!DOCTYPE"; the declaration says how a parser reads it.
    "declared utf-7": lambda text: text.format(encoding="UTF-7").replace("<!", "+ADwAIQ-", 1).encode("ascii"),
}


@pytest.mark.parametrize("encode", ENCODED.values(), ids=ENCODED.keys())
def test_a_dtd_in_any_encoding_a_parser_reads_is_refused_as_hostile(tmp_path, encode):
    path = workbook_with_sheet(tmp_path, encode(SHEET.replace("{dtd}", XXE).replace("{text}", "&xxe;")))
    with pytest.raises(sniff.FileRefused) as refused:
        sniff.sniff(path, path.stat().st_size)
    assert refused.value.status == 422 and refused.value.code == "hostile_file"
    assert "'xl/worksheets/sheet1.xml' declares a DTD" in refused.value.message


@pytest.mark.parametrize("encode", ENCODED.values(), ids=ENCODED.keys())
def test_the_same_sheets_without_a_dtd_are_accepted(tmp_path, encode):
    path = workbook_with_sheet(tmp_path, encode(SHEET.replace("{dtd}", "").replace("{text}", "Ada")))
    assert sniff.sniff(path, path.stat().st_size) == sniff.Sniffed("xlsx")


def test_a_part_declaring_an_encoding_python_cannot_read_is_refused_by_name(tmp_path):
    path = workbook_with_sheet(tmp_path, SHEET.format(encoding="x-kloyst-unknown", dtd="", text="Ada").encode())
    with pytest.raises(sniff.FileRefused) as refused:
        sniff.sniff(path, path.stat().st_size)
    assert refused.value.code == "hostile_file"
    assert "declares the text encoding 'x-kloyst-unknown', which Kloyst cannot read" in refused.value.message


def test_a_dtd_split_across_read_blocks_is_still_found(tmp_path):
    # "<!DOCTYPE" straddles the 1 MiB block boundary of the bounded read: in UTF-16 after a 2-byte BOM,
    # character i is at byte 2 + 2i, so it starts 8 bytes before the boundary. The comment before it is
    # random, so the part does not compress like a zip bomb.
    declaration = '<?xml version="1.0" encoding="UTF-16"?>\n'
    start = (1024 * 1024 - 8 - 2) // 2
    comment = "<!--" + os.urandom(start).hex()[:start - len(declaration) - 7] + "-->"
    text = declaration + comment + XXE + SHEET.split("\n", 1)[1].format(dtd="", text="Ada")
    assert text.index("<!DOCTYPE") == start
    path = workbook_with_sheet(tmp_path, codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    members = zipguard.check(path)
    assert zipguard.find_dtd(path, members) == "xl/worksheets/sheet1.xml"


@pytest.mark.parametrize(("head", "expected"), [
    (codecs.BOM_UTF16_LE + '<?xml version="1.0" encoding="UTF-16"?>'.encode("utf-16-le"), ["utf-16-le"]),
    ('<?xml version="1.0" encoding="UTF-16"?>'.encode("utf-16-be"), ["utf-16-be"]),
    (b'<?xml version="1.0" encoding="windows-1252"?>', ["utf-8", "cp1252"]),
    (b'<?xml version="1.0" standalone="yes"?>', ["utf-8"]),
    (b"\x89PNG\r\n\x1a\n", ["utf-8"]),
], ids=["utf-16-le BOM", "utf-16-be no BOM", "declared cp1252", "no declared encoding", "binary part"])
def test_part_encodings_follow_the_bom_the_first_bytes_and_the_declaration(head, expected):
    assert zipguard.part_encodings("part.xml", head) == expected
