"""The example plugin's background task.

Its kwargs are ids, never rows: the row says what is left to do. Kloyst runs the task in
its own transaction, scoped to ``vendor_id``, only after the request that enqueued it has
committed, and skips it if the vendor disabled ``example`` in the meantime.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import select

from kloyst.api import task, utcnow
from kloyst_example.models import Note

log = logging.getLogger(__name__)

PING_NOTE = "example.ping_note"


@task(PING_NOTE)
def ping_note(ctx, *, vendor_id: uuid.UUID, note_id: uuid.UUID) -> bool:
    """Stamp ``pinged_at`` on the note; False when the note is gone (deleted since, or never this vendor's)."""
    note = ctx.db.scalars(select(Note).where(Note.id == note_id)).one_or_none()
    if note is None:
        log.info("note %s of vendor %s is gone; nothing to ping", note_id, vendor_id)
        return False
    note.pinged_at = utcnow()
    return True
