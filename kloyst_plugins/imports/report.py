"""The rejected-rows report: ``row_number, column, value, reason`` as CSV, streamed.

The report is read in pages of :data:`PAGE` rows by keyset (row number, id), each page in
its own short transaction scoped to the vendor, so a report of a million rejections never
sits in memory and the response can stream after the request's transaction has ended.
Values are masked when stored (only the last three characters are kept), and every field
is written formula-injection safe (OWASP: a leading ``=``, ``+``, ``-``, ``@``, TAB, CR or NUL
gets a ``'`` prefix), because the file is meant to be opened in a spreadsheet.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator

from sqlalchemy import select, tuple_

from kloyst.api import csv_safe, session_scope
from kloyst_plugins.imports.models import ContactImportRejection

PAGE = 5000
HEADER = ("row_number", "column", "value", "reason")


def safe_cell(value) -> str:
    return csv_safe("" if value is None else str(value))


def iter_report(session_factory, vendor_id: uuid.UUID, job_id: uuid.UUID) -> Iterator[bytes]:
    """The CSV, a page of rows per chunk of bytes (UTF-8 with a BOM so spreadsheets read it as UTF-8)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(HEADER)
    yield ("\ufeff" + buffer.getvalue()).encode("utf-8")
    after = (0, 0)
    while True:
        with session_scope(session_factory, vendor_id=vendor_id) as db:
            page = db.execute(
                select(ContactImportRejection.row_number, ContactImportRejection.id, ContactImportRejection.column,
                       ContactImportRejection.value_masked, ContactImportRejection.reason)
                .where(ContactImportRejection.job_id == job_id,
                       tuple_(ContactImportRejection.row_number, ContactImportRejection.id) > after)
                .order_by(ContactImportRejection.row_number, ContactImportRejection.id).limit(PAGE)).all()
        if not page:
            return
        buffer.seek(0)
        buffer.truncate()
        writer.writerows((row.row_number, safe_cell(row.column), safe_cell(row.value_masked), safe_cell(row.reason))
                         for row in page)
        yield buffer.getvalue().encode("utf-8")
        after = (page[-1].row_number, page[-1].id)
