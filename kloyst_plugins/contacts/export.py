"""Contact export as CSV or XLSX: decrypted for the vendor, streamed, and safe to open in a spreadsheet.

Why it is shaped this way:

* **Streamed in batches.** Rows are read in keyset batches (newest first, on
  ``ix_contact_vendor_created``), each batch in its own short read-only transaction scoped
  to the vendor. The CSV is produced by a generator the WSGI server drains after the view
  returns, so memory does not grow with the vendor's size and no transaction stays open
  for the length of a download. XLSX cannot be written incrementally to a socket (it is a
  zip with a central directory at the end), so openpyxl's write-only mode spools it to a
  temporary file, which is then streamed.
* **Formula injection** (OWASP CSV injection, ASVS 5.0 1.2.10). A spreadsheet runs a cell
  that starts with ``=``, ``+``, ``-`` or ``@`` (and TAB, CR, NUL can smuggle one in).
  In CSV every such field gets a leading ``'``, which spreadsheets show as text. That
  includes every E.164 number (``'+447700900123``) and negative numbers in attributes —
  intended: a CSV has no types, so the prefix is the only defence. XLSX has types: every
  cell is written as a string cell (``t="inlineStr"``), so nothing is ever a formula and
  numbers are exported exactly, without a prefix.
* Labels and attributes are JSON text in both formats, so commas, semicolons and quotes in
  them round-trip unambiguously.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import uuid
from collections.abc import Iterator

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from sqlalchemy import and_, or_, select

from kloyst.api import FieldCipher, session_scope
from kloyst_plugins.contacts.models import Contact

# The WhatsApp identity columns come last, so files and scripts that read the earlier columns by position still do.
COLUMNS = ("id", "mobile", "name", "country", "calling_code", "labels", "attributes", "opted_out", "opted_out_at",
           "source", "created_at", "updated_at", "bsuid", "parent_bsuid", "username")
BATCH = 1000


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def contact_row(contact: Contact, cipher: FieldCipher) -> list[str]:
    """One contact as the export's columns, decrypted, every value text."""
    vendor_id = contact.vendor_id

    def opened(token, field):
        return None if token is None else cipher.decrypt(token, vendor_id=vendor_id, field=field)

    values = (contact.id, opened(contact.mobile_enc, "mobile"), opened(contact.name_enc, "name"),
              contact.country, contact.calling_code, contact.labels or [], contact.attributes or {},
              contact.opted_out, contact.opted_out_at, contact.source, contact.created_at, contact.updated_at,
              opened(contact.bsuid_enc, "bsuid"), opened(contact.parent_bsuid_enc, "parent_bsuid"),
              opened(contact.username_enc, "username"))
    return [_text(v) for v in values]


def iter_rows(session_factory, *, vendor_id: uuid.UUID, where: list, cipher: FieldCipher,
              batch: int | None = None) -> Iterator[list[str]]:
    """Every matching contact of the vendor as text rows, newest first, one short transaction per batch."""
    batch = batch or BATCH
    cursor = None
    while True:
        with session_scope(session_factory, vendor_id=vendor_id) as db:
            query = select(Contact).where(*where)
            if cursor is not None:
                created, ident = cursor
                query = query.where(or_(Contact.created_at < created,
                                        and_(Contact.created_at == created, Contact.id < ident)))
            contacts = list(db.scalars(query.order_by(Contact.created_at.desc(), Contact.id.desc()).limit(batch)))
            rows = [contact_row(c, cipher) for c in contacts]
        yield from rows
        if len(contacts) < batch:
            return
        cursor = (contacts[-1].created_at, contacts[-1].id)


def write_xlsx(rows: Iterator[list[str]]):
    """The rows as an XLSX in a temporary file (positioned at its start), every cell a string cell."""
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("contacts")

    def string_cells(values):
        cells = []
        for value in values:
            # XML cannot carry most control characters; openpyxl refuses them, so they are dropped.
            cell = WriteOnlyCell(sheet, value=ILLEGAL_CHARACTERS_RE.sub("", value))
            cell.data_type = "s"  # openpyxl would make "=…" a formula; a string cell is only ever text
            cells.append(cell)
        return cells

    sheet.append(string_cells(COLUMNS))
    for row in rows:
        sheet.append(string_cells(row))
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - returned open: the response's FileIter closes it
    try:
        workbook.save(spool)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool
