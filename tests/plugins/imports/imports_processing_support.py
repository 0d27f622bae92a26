"""Helpers for the processing-side import tests: a job as header extraction leaves it, and contacts to merge into.

The job is written straight into the database with its file in ``imports.storage_dir``
(chunk rows with the byte offsets extraction records), so these tests exercise mapping and
chunk processing on their own; the end-to-end test goes through the real upload.
"""

from __future__ import annotations

import csv
import hashlib
import io
import uuid

from sqlalchemy import select

from kloyst.db import tenancy
from kloyst_plugins.contacts.models import Contact
from kloyst_plugins.imports import storage
from kloyst_plugins.imports.models import ContactImportChunk, ContactImportJob, ImportStatus


def csv_bytes(headers, rows, *, encoding="utf-8", delimiter=",") -> tuple[bytes, list[int]]:
    """The file, and the byte offset where each data row starts."""
    out = bytearray()
    offsets = []
    for index, record in enumerate([headers, *rows]):
        buffer = io.StringIO()
        csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n").writerow(record)
        if index:
            offsets.append(len(out))
        chunk = buffer.getvalue().encode(encoding)
        if encoding == "utf-16" and out:
            chunk = chunk[2:]  # one byte-order mark, at the start
        out += chunk
    return bytes(out), offsets


def xlsx_bytes(headers, rows) -> bytes:
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(list(headers))
    for row in rows:
        sheet.append(list(row))
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def make_job(db, settings, vendor_id, headers, rows, *, chunk_size=5000, file_type="csv", encoding="utf-8",
             delimiter=",", status=ImportStatus.AWAITING_MAPPING) -> ContactImportJob:
    if file_type == "xlsx":
        data, offsets = xlsx_bytes(headers, rows), [None] * len(rows)
        encoding = delimiter = None
    else:
        data, offsets = csv_bytes(headers, rows, encoding=encoding, delimiter=delimiter)
    stored_name = str(uuid.uuid4())
    path = storage.path_for(settings, vendor_id, stored_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    chunk_count = (len(rows) + chunk_size - 1) // chunk_size
    with tenancy.unscoped(db):
        job = ContactImportJob(vendor_id=vendor_id, status=status.value, original_filename=f"contacts.{file_type}",
                               stored_name=stored_name, file_type=file_type, size_bytes=len(data),
                               sha256=hashlib.sha256(data).hexdigest(), encoding=encoding, delimiter=delimiter,
                               headers=list(headers), sample_rows=[list(r) for r in rows[:5]], row_count=len(rows),
                               chunk_size=chunk_size, chunk_count=chunk_count)
        db.add(job)
        db.flush()
        for index in range(chunk_count):
            first = index * chunk_size
            db.add(ContactImportChunk(vendor_id=vendor_id, job_id=job.id, index=index, first_row=first + 1,
                                      row_count=min(chunk_size, len(rows) - first), byte_offset=offsets[first]))
        db.flush()
    db.commit()
    return job


def add_contact(db, registry, vendor_id, e164, *, name=None, labels=(), attributes=None, country=None) -> Contact:
    cipher = registry["kloyst.cipher"]
    contact = Contact(vendor_id=vendor_id, mobile_hash=registry["kloyst.mobile_hasher"](vendor_id, e164),
                      mobile_enc=cipher.encrypt(e164, vendor_id=vendor_id, field="mobile"),
                      name_enc=cipher.encrypt(name, vendor_id=vendor_id, field="name") if name else None,
                      enc_kid=cipher.active_kid, labels=list(labels), attributes=attributes or {}, country=country,
                      source="api")
    with tenancy.unscoped(db):
        db.add(contact)
        db.flush()
    db.commit()
    return contact


def contacts_of(db, registry, vendor_id) -> dict[str, dict]:
    """The vendor's contacts, decrypted, by E.164 number."""
    cipher = registry["kloyst.cipher"]
    db.expire_all()
    with tenancy.unscoped(db):
        rows = db.scalars(select(Contact).where(Contact.vendor_id == vendor_id)).all()
    return {cipher.decrypt(c.mobile_enc, vendor_id=vendor_id, field="mobile"): {
        "name": cipher.decrypt(c.name_enc, vendor_id=vendor_id, field="name") if c.name_enc else None,
        "labels": list(c.labels), "attributes": dict(c.attributes), "country": c.country, "source": c.source,
        "id": c.id} for c in rows}


def reload(db, job) -> ContactImportJob:
    db.expire_all()
    with tenancy.unscoped(db):
        return db.scalars(select(ContactImportJob).where(ContactImportJob.id == job.id)).one()
