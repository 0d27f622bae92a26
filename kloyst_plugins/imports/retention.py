"""What of the imports plugin's data expires: uploaded files, their sample rows and rejected rows (docs/retention.md).

A job keeps its counts, its mapping and its file's SHA-256 (so a re-upload of the same file is
still recognised); what goes is what holds the contacts' data: the file itself (and the rows
file an XLSX was converted to), the sample rows shown for mapping, and the rejected rows
(masked, but still a part of a number and a reason). Jobs still importing are left alone; a
job still waiting for its mapping after the retention period is given up (``CANCELLED``, with
an error saying why) because its file is gone. The rows stop naming the file in the batch's
transaction; the files are deleted once it committed.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, delete, update

from kloyst.api import ByGroupAndTime, RetentionPolicy, Setting, utcnow, Vendor
from kloyst_plugins.imports import reader, storage
from kloyst_plugins.imports.models import (ContactImportJob, ContactImportRejection, FINAL_STATUSES,
                                           ImportStatus)

FILES = Setting(
    "imports.file_retention_days", "IMPORTS_FILE_RETENTION_DAYS", 30, int,
    help="Days an uploaded import file, its sample rows and its rejected rows are kept: a month to fix the rejected "
         "rows and import them again. The job and its counts stay. 0 keeps them forever.")

# Waiting for the vendor (a mapping): given up once the file is gone. Queued or processing jobs are never touched.
WAITING = frozenset({ImportStatus.UPLOADED, ImportStatus.HEADERS_EXTRACTED, ImportStatus.AWAITING_MAPPING})

_jobs, _rejections = ContactImportJob.__table__, ContactImportRejection.__table__


def policy(settings) -> RetentionPolicy:
    """The policy, with the storage directory of ``settings`` (where the files are deleted)."""

    def remove_files(connection: Connection, rows) -> Callable[[], None] | None:
        if not rows:
            return None
        now, ids = utcnow(), [row[0] for row in rows]
        connection.execute(update(_jobs).where(_jobs.c.id.in_(ids), _jobs.c.status.in_([s.value for s in WAITING]))
                           .values(status=ImportStatus.CANCELLED.value, cancelled_at=now, finished_at=now,
                                   error="the import waited for its mapping longer than the file is kept "
                                         "(imports.file_retention_days); upload the file again"))
        connection.execute(update(_jobs).where(_jobs.c.id.in_(ids)).values(file_removed_at=now, sample_rows=None))
        connection.execute(delete(_rejections).where(_rejections.c.job_id.in_(ids)))
        paths = [storage.path_for(settings, vendor_id, stored_name) for _, vendor_id, stored_name in rows]

        def unlink() -> None:
            for path in paths:
                reader.remove_rows_file(path)
                path.unlink(missing_ok=True)
        return unlink

    return RetentionPolicy(
        "imports.files", FILES, removes="import files, sample rows and rejected rows (the jobs stay)",
        action=remove_files,
        rows=ByGroupAndTime(_jobs, group=_jobs.c.vendor_id, age=_jobs.c.created_at, groups=Vendor.__table__,
                            where=[_jobs.c.file_removed_at.is_(None),
                                   _jobs.c.status.in_([s.value for s in FINAL_STATUSES | WAITING])],
                            columns=[_jobs.c.vendor_id, _jobs.c.stored_name]))
