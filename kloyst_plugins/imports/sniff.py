"""What an uploaded file is, decided from its content — never from its name or Content-Type.

Accepted: **XLSX** (a zip that passes the zip guard, with ``[Content_Types].xml`` and
``xl/workbook.xml``, without ``xl/vbaProject.bin``, and without a DTD in any part, in
whatever encoding the part is written: :func:`zipguard.find_dtd`) and
**CSV** (text: a BOM, else strict UTF-8, else cp1252; no NUL bytes, no control characters
besides tab and line ends). Everything else is refused with a message that says what the
file looked like and what to do: 415 for a type Kloyst does not import (XLS, PDF, other
zips, binary data), 422 for a file that is hostile or broken (macros, encryption, zip
bombs, path tricks, DTDs).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from kloyst_plugins.imports import zipguard

SAMPLE_BYTES = 64 * 1024
OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
# C0 controls other than TAB, LF, CR (and FF/SUB, which old exporters leave at the end): text has none.
_CONTROL = re.compile("[\x00-\x08\x0b\x0e-\x19\x1b-\x1f\x7f]")


class FileRefused(ValueError):
    """The upload is not importable. ``status`` is 415 (unsupported type) or 422 (hostile/broken)."""

    def __init__(self, message: str, *, status: int = 422, code: str = "file_refused") -> None:
        super().__init__(message)
        self.message, self.status, self.code = message, status, code


@dataclass(frozen=True)
class Sniffed:
    file_type: str  # "csv" | "xlsx"
    encoding: str | None = None  # CSV only: the encoding the sample decoded with


def bom_encoding(head: bytes) -> tuple[str | None, int]:
    """``(encoding, BOM length)`` for a byte-order mark at the start of ``head``, else ``(None, 0)``."""
    for bom, encoding in BOMS:
        if head.startswith(bom):
            return encoding, len(bom)
    return None, 0


def sniff_text(head: bytes, *, complete: bool) -> str:
    """The encoding ``head`` (the file's first bytes; ``complete`` when it is the whole file) decodes with.

    Order: BOM → UTF-8 with BOM / UTF-16; strict UTF-8; cp1252.
    """
    encoding, skip = bom_encoding(head)
    candidates = [encoding] if encoding else ["utf-8", "cp1252"]
    if encoding is None and b"\0" in head:
        raise FileRefused("the file contains NUL bytes, so it is not a CSV text file; export it as CSV (UTF-8) or "
                          "XLSX", status=415, code="unsupported_file_type")
    for candidate in candidates:
        try:
            text = codecs.getincrementaldecoder(candidate)("strict").decode(head[skip:], final=complete)
        except UnicodeDecodeError:
            continue
        if "\0" in text or _CONTROL.search(text):
            raise FileRefused("the file contains control characters, so it is not a CSV text file; export it as "
                              "CSV (UTF-8) or XLSX", status=415, code="unsupported_file_type")
        return candidate
    raise FileRefused("the file is neither UTF-8, UTF-16 nor Windows-1252 text; export it as CSV (UTF-8) or XLSX",
                      status=415, code="unsupported_file_type")


def check_xlsx(path, limits: zipguard.ZipLimits = zipguard.DEFAULT_LIMITS) -> None:
    """Raise :class:`FileRefused` unless ``path`` is a plain XLSX that passes the zip guard."""
    try:
        members = zipguard.check(path, limits)
    except zipguard.ZipRefused as exc:
        raise FileRefused(f"the spreadsheet was refused: {exc}", code="hostile_file") from exc
    names = {info.filename for info in members}
    if "xl/vbaProject.bin" in names:
        raise FileRefused("the workbook contains macros (XLSM); save it as a plain .xlsx workbook or as CSV",
                          code="macro_workbook")
    if "[Content_Types].xml" not in names or "xl/workbook.xml" not in names:
        raise FileRefused("the file is a zip archive but not an Excel workbook (XLSX); upload a CSV or XLSX file",
                          status=415, code="unsupported_file_type")
    try:
        dtd_member = zipguard.find_dtd(path, members)
    except zipguard.ZipRefused as exc:
        raise FileRefused(f"the spreadsheet was refused: {exc}", code="hostile_file") from exc
    if dtd_member:
        raise FileRefused(f"the workbook part {dtd_member[:100]!r} declares a DTD, which spreadsheets never need "
                          "(entity expansion attacks use it)", code="hostile_file")


def sniff(path, size: int, limits: zipguard.ZipLimits = zipguard.DEFAULT_LIMITS) -> Sniffed:
    """Decide what the stored file at ``path`` (``size`` bytes) is; raise :class:`FileRefused` if not importable.

    ``limits``: the zip guard's, from the settings (:func:`zipguard.limits_from_settings`).
    """
    with open(path, "rb") as handle:
        head = handle.read(SAMPLE_BYTES)
    if not head:
        return Sniffed("csv", None)  # empty: accepted, then failed by extraction with "no rows"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        check_xlsx(path, limits)
        return Sniffed("xlsx")
    if head.startswith(OLE2):
        raise FileRefused("the file is an Office 97-2003 document (XLS) or a password-protected workbook; save it "
                          "as .xlsx without a password, or as CSV", status=415, code="unsupported_file_type")
    if head.startswith(b"%PDF"):
        raise FileRefused("the file is a PDF; export the contact list as CSV or XLSX", status=415,
                          code="unsupported_file_type")
    return Sniffed("csv", sniff_text(head, complete=size <= SAMPLE_BYTES))
