"""Where uploaded files live: ``<imports.storage_dir>/<vendor id>/<generated name>``.

The client's filename never reaches the filesystem: files are stored under a uuid, and the
original name is kept on the job for display only (:func:`kloyst.api.display_name`). A file being
received is written as ``<name>.part`` and renamed when complete, so a half-written upload
is never mistaken for a stored one and can be removed on any failure.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from kloyst.api import display_name as display_name  # the shared rule; kloyst import names its jobs with it


def storage_root(settings) -> Path:
    """``imports.storage_dir``; a relative one is under the ini file's directory, like var/ for the database.

    So the server and ``kloyst import <ini>`` find the same files wherever each was started from.
    """
    return (Path(settings.get("kloyst.here") or ".") / settings["imports.storage_dir"]).resolve()


def vendor_dir(settings, vendor_id: uuid.UUID) -> Path:
    return storage_root(settings) / str(uuid.UUID(str(vendor_id)))


def path_for(settings, vendor_id: uuid.UUID, stored_name: str) -> Path:
    """The stored file of a job; ``stored_name`` is always a generated uuid, checked again here."""
    return vendor_dir(settings, vendor_id) / str(uuid.UUID(stored_name))


def new_part_file(settings, vendor_id: uuid.UUID) -> tuple[str, Path]:
    """A generated stored name and the ``.part`` path to receive it at (the vendor's folder is created)."""
    directory = vendor_dir(settings, vendor_id)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = str(uuid.uuid4())
    return name, directory / f"{name}.part"


def commit_part(part: Path, stored_name: str) -> Path:
    final = part.with_name(stored_name)
    os.replace(part, final)
    return final


def remove_quietly(path: Path | None) -> None:
    if path is not None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
