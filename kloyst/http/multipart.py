"""Reading a ``multipart/form-data`` upload as it streams: one file part to a sink, small text fields kept.

Why a parser of our own: WebOb's ``request.POST`` hands multipart bodies to
``cgi.FieldStorage`` (deprecated, removed in Python 3.13) and gives the view nothing until
the whole body has been parsed; ``python-multipart`` streams, but is one more dependency for
what is ~100 lines here. :func:`read_form` reads ``request.body_file`` in blocks and keeps at
most one block plus one boundary in memory: the file part's bytes go to the caller's sink as
they arrive, so the caller decides where they go (a part file, memory) and may refuse early
by raising (a 413 the moment a limit is passed). Text fields are kept up to 1 KiB each; longer
ones are read and dropped; part headers over 16 KiB are refused. Callers: the imports upload
and the media upload.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from email.message import Message

from kloyst.errors import BadRequest, Unprocessable

BLOCK = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_FIELD_BYTES = 1024
MAX_DISPLAY_NAME = 255

Sink = Callable[[bytes], None]


def header_param(header: str, value: str, key: str) -> str | None:
    """Parameter ``key`` of a ``header: value`` (``boundary``, ``name``, ``filename``; RFC 2231 forms too)."""
    message = Message()
    message[header] = value
    found = message.get_param(key, header=header)
    if isinstance(found, tuple):  # RFC 2231 form
        found = found[2]
    return found if isinstance(found, str) else None


def display_name(raw: str | None, default: str = "upload") -> str:
    """The client's filename made safe to show: no path, no control characters, at most 255 characters."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp"))
    name = name.strip().strip(".").strip()
    return name[:MAX_DISPLAY_NAME] or default


class _Stream:
    """A buffered reader over the body with the one operation multipart needs: read up to a delimiter."""

    def __init__(self, body, block: int) -> None:
        self.body, self.block = body, block
        self.buffer = b""
        self.eof = False

    def fill(self) -> bool:
        data = b"" if self.eof else self.body.read(self.block)
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def read_until(self, delimiter: bytes, sink: Sink) -> None:
        """Pass everything before ``delimiter`` to ``sink`` and consume the delimiter."""
        keep = len(delimiter) - 1
        while True:
            index = self.buffer.find(delimiter)
            if index != -1:
                sink(self.buffer[:index])
                self.buffer = self.buffer[index + len(delimiter):]
                return
            if len(self.buffer) > keep:
                sink(self.buffer[:-keep])
                self.buffer = self.buffer[-keep:]
            if not self.fill():
                raise BadRequest("the multipart body ended before its closing boundary", code="malformed_multipart")

    def take(self, n: int) -> bytes:
        while len(self.buffer) < n and self.fill():
            pass
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data


class _Bounded(bytearray):
    def __call__(self, data: bytes) -> None:
        self.extend(data)
        if len(self) > MAX_HEADER_BYTES:
            raise BadRequest("a multipart part header or field is too long", code="malformed_multipart")


def read_form(request, file_field: str, open_file: Callable[[str | None, dict[str, str]], Sink], *, what: str,
              block: int = BLOCK) -> dict[str, str]:
    """Stream ``request``'s multipart body; return its text fields.

    The part named ``file_field`` goes, as it arrives, to the sink ``open_file(filename, fields so
    far)`` returns (the filename as the client sent it, unchecked). Raises 400 for a body that is
    not multipart or is malformed, 422 when the file part is missing or repeated (``what`` names
    the file in the message); anything the sink raises propagates as it is.
    """
    content_type = request.headers.get("Content-Type", "")
    is_multipart = content_type.lower().startswith("multipart/form-data")
    boundary = header_param("content-type", content_type, "boundary") if is_multipart else None
    if not boundary:
        raise BadRequest(f'send the file as multipart/form-data with a "{file_field}" field',
                         code="multipart_required")
    stream = _Stream(request.body_file, block)
    dash_boundary = b"--" + boundary.encode("latin-1")
    stream.read_until(dash_boundary, lambda _preamble: None)
    fields: dict[str, str] = {}
    received = False
    while stream.take(2) != b"--":  # "--" right after a boundary closes the body
        headers = _Bounded()
        stream.read_until(b"\r\n\r\n", headers)
        disposition = next((line.split(b":", 1)[1].decode("utf-8", "replace").strip()
                            for line in bytes(headers).split(b"\r\n")
                            if line.lower().startswith(b"content-disposition:")), "")
        name = header_param("content-disposition", disposition, "name") if disposition else None
        if name == file_field:
            if received:
                raise Unprocessable(f'send exactly one "{file_field}" field', code="file_repeated", field=file_field)
            received = True
            sink = open_file(header_param("content-disposition", disposition, "filename"), fields)
            stream.read_until(b"\r\n" + dash_boundary, sink)
        else:
            value = _Bounded()
            stream.read_until(b"\r\n" + dash_boundary, value)
            if name and len(value) <= MAX_FIELD_BYTES:
                fields[name] = bytes(value).decode("utf-8", "replace")
    if not received:
        # Well-formed multipart that lacks the one field the route needs: a field problem (422), like a
        # missing JSON field, not a malformed request (400).
        raise Unprocessable(f'the upload has no "{file_field}" field: send {what} as the multipart field '
                            f'"{file_field}"', code="file_required", field=file_field)
    return fields
