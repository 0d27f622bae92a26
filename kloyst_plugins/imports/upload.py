"""Receiving an upload: the multipart body streamed to disk, counted and hashed as it arrives.

Why a parser of our own: WebOb's ``request.POST`` hands multipart bodies to
``cgi.FieldStorage`` (deprecated, removed in Python 3.13) and gives the view nothing until
the whole body has been parsed; ``python-multipart`` streams, but is one more dependency for
what is ~80 lines here. This parser reads ``request.body_file`` in 64 KiB blocks and keeps
at most one block plus one boundary in memory, so:

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
from email.message import Message
from pathlib import Path

from kloyst.api import BadRequest, PayloadTooLarge, Unprocessable
from kloyst_plugins.imports import storage

BLOCK = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_FIELD_BYTES = 1024
FILE_FIELD = "file"


@dataclass
class Received:
    stored_name: str
    path: Path  # the .part file; rename it with storage.commit_part once accepted
    size: int
    sha256: str
    filename: str
    fields: dict[str, str] = field(default_factory=dict)


def _params(header: str, header_value: str, key: str) -> str | None:
    message = Message()
    message[header] = header_value
    value = message.get_param(key, header=header)
    if isinstance(value, tuple):  # RFC 2231 form
        value = value[2]
    return value


class _Stream:
    """A buffered reader over the body with the one operation multipart needs: read up to a delimiter."""

    def __init__(self, body) -> None:
        self.body = body
        self.buffer = b""
        self.eof = False

    def fill(self) -> bool:
        if self.eof:
            return False
        data = self.body.read(BLOCK)
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def read_until(self, delimiter: bytes, sink, limit: int | None = None) -> None:
        """Pass everything before ``delimiter`` to ``sink`` and consume the delimiter."""
        while True:
            index = self.buffer.find(delimiter)
            if index != -1:
                sink(self.buffer[:index])
                self.buffer = self.buffer[index + len(delimiter):]
                return
            keep = len(delimiter) - 1
            if len(self.buffer) > keep:
                sink(self.buffer[:-keep] if keep else self.buffer)
                self.buffer = self.buffer[-keep:] if keep else b""
            if not self.fill():
                raise BadRequest("the multipart body ended before its closing boundary", code="malformed_multipart")

    def take(self, n: int) -> bytes:
        while len(self.buffer) < n and self.fill():
            pass
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data


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


class _Bounded(bytearray):
    def __call__(self, data: bytes) -> None:
        self.extend(data)
        if len(self) > MAX_HEADER_BYTES:
            raise BadRequest("a multipart part header or field is too long", code="malformed_multipart")


def receive(request, settings, vendor_id, max_bytes: int) -> Received:
    """Stream the ``file`` part of ``request``'s multipart body to a new part file; raise on anything wrong."""
    content_type = request.headers.get("Content-Type", "")
    is_multipart = content_type.lower().startswith("multipart/form-data")
    boundary = _params("content-type", content_type, "boundary") if is_multipart else None
    if not boundary:
        raise BadRequest('send the file as multipart/form-data with a "file" field', code="multipart_required")
    stream = _Stream(request.body_file)
    dash_boundary = b"--" + boundary.encode("latin-1")
    stream.read_until(dash_boundary, lambda _preamble: None)
    fields: dict[str, str] = {}
    sink: _FileSink | None = None
    filename = None
    try:
        while True:
            if stream.take(2) == b"--":
                break  # the closing boundary
            headers = _Bounded()
            stream.read_until(b"\r\n\r\n", headers)
            disposition = next((line.split(b":", 1)[1].decode("utf-8", "replace").strip()
                                for line in bytes(headers).split(b"\r\n")
                                if line.lower().startswith(b"content-disposition:")), "")
            name = _params("content-disposition", disposition, "name") if disposition else None
            if name == FILE_FIELD:
                if sink is not None:
                    raise Unprocessable('send exactly one "file" field', code="file_repeated", field=FILE_FIELD)
                filename = _params("content-disposition", disposition, "filename")
                stored_name, part = storage.new_part_file(settings, vendor_id)
                sink = _FileSink(part, max_bytes)
                stream.read_until(b"\r\n" + dash_boundary, sink)
                sink.handle.close()
            else:
                value = _Bounded()
                stream.read_until(b"\r\n" + dash_boundary, value)
                if name and len(value) <= MAX_FIELD_BYTES:
                    fields[name] = bytes(value).decode("utf-8", "replace")
        if sink is None:
            # Well-formed multipart that lacks the one field the route needs: a field problem (422), like a
            # missing JSON field, not a malformed request (400).
            raise Unprocessable('the upload has no "file" field: send the contact list as the multipart field "file"',
                                code="file_required", field=FILE_FIELD)
    except BaseException:
        if sink is not None:
            sink.handle.close()
            storage.remove_quietly(sink.path)
        raise
    return Received(stored_name=stored_name, path=sink.path, size=sink.size, sha256=sink.hash.hexdigest(),
                    filename=storage.display_name(filename), fields=fields)
