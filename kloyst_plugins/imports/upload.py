"""Receiving an upload: the multipart body streamed to disk, counted and hashed as it arrives.

The multipart reading is the core's (:func:`kloyst.api.read_form`, shared with the media
upload): at most one block plus one boundary in memory. What is the import's own:

* the file part goes straight into ``<storage>/<vendor>/<uuid>.part`` while its SHA-256 and
  size are computed;
* one byte past ``imports.max_upload_bytes`` stops the read: the part file is deleted and
  the caller answers 413 (the request-limit tween already refused any body whose
  Content-Length was too large, before this ran);
* any error leaves no file behind.

Small text fields (``force``) are kept in memory up to 1 KiB each; other fields are ignored.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from kloyst.api import display_name, PayloadTooLarge, read_form
from kloyst_plugins.imports import storage

BLOCK = 64 * 1024
FILE_FIELD = "file"


@dataclass
class Received:
    stored_name: str
    path: Path  # the .part file; rename it with storage.commit_part once accepted
    size: int
    sha256: str
    filename: str
    fields: dict[str, str] = field(default_factory=dict)


class _FileSink:
    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path, self.max_bytes = path, max_bytes
        self.handle = open(path, "wb")  # noqa: SIM115 - closed by receive()
        self.hash = hashlib.sha256()
        self.size = 0

    def __call__(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise PayloadTooLarge(f"the file is larger than the import limit of {self.max_bytes} bytes",
                                  details={"limit_bytes": self.max_bytes})
        self.hash.update(data)
        self.handle.write(data)


def receive(request, settings, vendor_id, max_bytes: int) -> Received:
    """Stream the ``file`` part of ``request``'s multipart body to a new part file; raise on anything wrong."""
    opened: list[tuple[str, _FileSink, str | None]] = []

    def open_file(filename: str | None, _fields: dict[str, str]) -> _FileSink:
        stored_name, part = storage.new_part_file(settings, vendor_id)
        opened.append((stored_name, _FileSink(part, max_bytes), filename))
        return opened[-1][1]

    try:
        fields = read_form(request, FILE_FIELD, open_file, what="the contact list", block=BLOCK)
    except BaseException:
        for _name, sink, _filename in opened:
            sink.handle.close()
            storage.remove_quietly(sink.path)
        raise
    (stored_name, sink, filename), = opened
    sink.handle.close()
    return Received(stored_name=stored_name, path=sink.path, size=sink.size, sha256=sink.hash.hexdigest(),
                    filename=display_name(filename), fields=fields)
