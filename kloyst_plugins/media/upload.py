"""Receiving a media upload: the file refused the moment it is known to be the wrong type or too large.

The file must be checked against its kind's limit before anything is kept, and the limit
depends on what the file is (a static sticker may have 100 KB, a document 100 MB). The body is
read by the core's streaming multipart reader (:func:`kloyst.api.read_form`) into
:class:`_FilePart`: once the file's first :data:`limits.SNIFF_BYTES` have arrived its type is
sniffed from them and the kind's exact limit applies, and the first byte past it stops the read
with a 413. Memory: at most the kind's limit plus one block (the file is needed whole anyway:
it is scanned, encrypted and posted to Meta as one body). A ``Content-Length`` beyond the
largest limit is refused by the request-limit tween before this runs.

Text fields (``phone_number_id``, ``kind``) are kept up to 1 KiB each; a ``kind`` sent before
the file (or as a query parameter) applies while it streams, one sent after is checked at the end.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from kloyst.api import display_name, read_form, Unprocessable
from kloyst_plugins.media import limits

FILE_FIELD = "file"


@dataclass
class Received:
    data: bytearray  # the file as received (not copied again: it may be 100 MB)
    sha256: str
    filename: str | None
    sniffed: limits.Sniffed
    kind: str
    fields: dict[str, str] = field(default_factory=dict)


class _FilePart:
    """The file's bytes as they arrive: sniffed once the head is in, then held to the kind's limit."""

    def __init__(self, filename: str | None, kind: str | None) -> None:
        self.filename, self.kind = filename, kind
        self.data = bytearray()
        self.hash = hashlib.sha256()
        self.sniffed: limits.Sniffed | None = None
        self.limit = limits.LARGEST_BYTES

    def decide(self) -> limits.Sniffed:
        complete = len(self.data) <= limits.SNIFF_BYTES
        self.sniffed = limits.sniff(bytes(self.data[:limits.SNIFF_BYTES]), filename=self.filename, kind=self.kind,
                                    complete=complete)
        self.kind = limits.kind_for(self.sniffed, self.kind)
        self.limit = limits.max_bytes_for(self.kind, self.sniffed)
        return self.sniffed

    def __call__(self, chunk: bytes) -> None:
        self.data += chunk
        self.hash.update(chunk)
        if self.sniffed is None and len(self.data) > limits.SNIFF_BYTES:
            self.decide()
        if self.sniffed is not None and self.kind is not None and len(self.data) > self.limit:
            limits.check_size(self.kind, self.sniffed, len(self.data))


def receive(request, kind: str | None = None) -> Received:
    """Read the media of ``request``'s multipart body; raise the API's refusal on anything wrong.

    :class:`limits.MediaRefused` (422 wrong type, 413 too large) is raised as soon as it is known.
    """
    parts: list[_FilePart] = []

    def open_file(filename: str | None, fields: dict[str, str]) -> _FilePart:
        parts.append(_FilePart(filename, fields.get("kind", "").strip() or kind))
        return parts[-1]

    fields = read_form(request, FILE_FIELD, open_file, what="the media")
    (part,) = parts
    if not part.data:
        raise Unprocessable("the file is empty", code="empty_file", field=FILE_FIELD)
    later_kind = fields.get("kind", "").strip() or kind
    if part.sniffed is None or (later_kind is not None and later_kind != part.kind):
        part.kind = later_kind or part.kind  # a kind sent after the file: the type is decided again with it
        part.decide()
    sniffed, chosen = part.sniffed, part.kind
    assert sniffed is not None and chosen is not None  # noqa: S101 - decide() sets both
    limits.check_size(chosen, sniffed, len(part.data))
    name = display_name(part.filename, default="")
    return Received(part.data, part.hash.hexdigest(), name or None, sniffed, chosen, fields)
