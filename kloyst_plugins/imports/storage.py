"""Where uploaded files live: ``<imports.storage_dir>/<vendor id>/<generated name>``.

The client's filename never reaches the filesystem: files are stored under a uuid, and the
original name is kept on the job for display only (:func:`display_name`). A file being
received is written as ``<name>.part`` and renamed when complete, so a half-written upload
is never mistaken for a stored one and can be removed on any failure.
"""

from __future__ import annotations

import os
import unicodedata
import uuid
from pathlib import Path

MAX_DISPLAY_NAME = 255


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


def display_name(raw: str | None) -> str:
    """The client's filename made safe to show: no path, no control characters, at most 255 characters."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp"))
    name = name.strip().strip(".").strip()
    return name[:MAX_DISPLAY_NAME] or "upload"
