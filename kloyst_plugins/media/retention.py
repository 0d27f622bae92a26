"""What of the media plugin's data expires: the stored files (docs/retention.md).

A file goes after ``media.retention_days``; its row stays, ``removed``, so a conversation still
shows that a photo was sent and the content answers 410 ``media_removed`` instead of 404. The
row stops naming the file (and its sealed key) in the batch's transaction, and the file is
deleted once that committed: a crash in between leaves an unnamed file, never a row naming a
missing one.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, update

from kloyst.api import ByGroupAndTime, RetentionPolicy, Setting, Vendor
from kloyst_plugins.media import storage
from kloyst_plugins.media.models import Media, MediaStatus

FILES = Setting(
    "media.retention_days", "MEDIA_RETENTION_DAYS", 90, int,
    help="Days a media file (uploaded, or received from a customer) is kept: a quarter, long enough to act on what "
         "a customer sent (a receipt, a photo of a parcel); files are what takes the disk. 0 keeps them forever.")

_media = Media.__table__


def policy(settings) -> RetentionPolicy:
    """The policy, with the storage directory of ``settings`` (where the files are deleted)."""

    def remove_files(connection: Connection, rows) -> Callable[[], None] | None:
        if not rows:
            return None
        connection.execute(update(_media).where(_media.c.id.in_([row[0] for row in rows]))
                           .values(status=MediaStatus.REMOVED.value, stored_name=None, file_key_enc=None,
                                   enc_kid=None))
        paths = [storage.path_for(settings, vendor_id, stored_name) for _, vendor_id, stored_name in rows]

        def unlink() -> None:
            for path in paths:
                path.unlink(missing_ok=True)
        return unlink

    return RetentionPolicy(
        "media.files", FILES, removes="media files (their rows stay, removed)", action=remove_files,
        rows=ByGroupAndTime(_media, group=_media.c.vendor_id, age=_media.c.created_at, groups=Vendor.__table__,
                            where=[_media.c.stored_name.is_not(None)],
                            columns=[_media.c.vendor_id, _media.c.stored_name]))
