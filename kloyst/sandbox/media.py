"""Media as Meta's Cloud API keeps it: uploaded or received files behind a media id, fetched through a short-lived URL.

``POST /{phone-number-id}/media`` (multipart: ``file``, ``type``, ``messaging_product``) stores a
file and answers ``{"id"}``; ``GET /{media-id}`` answers its ``url``, ``mime_type``, ``sha256``,
``file_size``; a ``GET`` of that URL with the bearer token returns the bytes. Inbound media a
test injects (``POST /_sandbox/customers/inbound``) is stored the same way, so a webhook's media
id downloads like Meta's. A file lives :attr:`~kloyst.sandbox.state.Behaviour.media_ttl_seconds`
(Meta: 30 days) and its URL :attr:`~kloyst.sandbox.state.Behaviour.media_url_ttl_seconds` (Meta:
5 minutes); after that the id is unknown (error 100, subcode 33) and the URL answers 404.

The types and sizes are Meta's supported media list; anything else is refused on upload.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP

MB = 1024 * 1024
# Meta's supported media: MIME type → (media kind, largest file in bytes).
SUPPORTED: dict[str, tuple[str, int]] = {
    **{mime: ("audio", 16 * MB) for mime in ("audio/aac", "audio/amr", "audio/mpeg", "audio/mp4", "audio/ogg")},
    **{mime: ("document", 100 * MB) for mime in (
        "text/plain", "application/pdf", "application/vnd.ms-excel", "application/msword",
        "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")},
    "image/jpeg": ("image", 5 * MB),
    "image/png": ("image", 5 * MB),
    "image/webp": ("sticker", 500 * 1024),  # animated stickers; static ones are at most 100 KB
    "video/3gpp": ("video", 16 * MB),
    "video/mp4": ("video", 16 * MB),
}
MAX_UPLOAD_BYTES = 100 * MB + 64 * 1024  # the largest document plus the multipart framing
URL_PATH = "/_lookaside/whatsapp_business/attachments/"


@dataclass
class Media:
    id: str
    data: bytes = field(repr=False)
    mime_type: str
    filename: str | None
    created: float  # unix time
    sha256_hex: str = ""

    def __post_init__(self) -> None:
        self.sha256_hex = hashlib.sha256(self.data).hexdigest()

    @property
    def sha256_base64(self) -> str:
        """The hash as inbound webhooks carry it (base64 of the digest)."""
        return base64.b64encode(bytes.fromhex(self.sha256_hex)).decode()


class MediaStore:
    """Media by id, oldest first; the caller holds the state's lock. Expired media is dropped as new media comes."""

    def __init__(self) -> None:
        self.items: dict[str, Media] = {}
        self.url_key = secrets.token_bytes(16)

    def add(self, media: Media, ttl_seconds: float) -> Media:
        cutoff = media.created - ttl_seconds
        while self.items:  # insertion order is creation order: expired media is at the front
            oldest = next(iter(self.items.values()))
            if oldest.created > cutoff:
                break
            del self.items[oldest.id]
        self.items[media.id] = media
        return media

    def get(self, media_id: str, now: float, ttl_seconds: float) -> Media | None:
        media = self.items.get(media_id)
        if media is None or now >= media.created + ttl_seconds:
            return None
        return media

    def delete(self, media_id: str) -> bool:
        return self.items.pop(media_id, None) is not None

    def url(self, base_url: str, media: Media, expires: int) -> str:
        """A download URL shaped like Meta's lookaside URL: ``mid``, ``ext`` (the expiry) and a ``hash``."""
        return f"{base_url}{URL_PATH}?mid={media.id}&ext={expires}&hash={self._hash(media.id, expires)}"

    def resolve(self, query: dict, now: float, ttl_seconds: float) -> Media | None:
        """The media a download URL names, if the URL is genuine and has not expired."""
        media_id, ext, given = query.get("mid", ""), query.get("ext", ""), query.get("hash", "")
        if not ext.isdigit() or not hmac.compare_digest(given, self._hash(media_id, int(ext))):
            return None
        if now >= int(ext):
            return None
        return self.get(media_id, now, ttl_seconds)

    def _hash(self, media_id: str, expires: int) -> str:
        return hmac.new(self.url_key, f"{media_id}:{expires}".encode(), hashlib.sha256).hexdigest()[:32]


class UploadError(ValueError):
    """An upload Meta refuses; ``code`` is the Graph error code to answer with."""

    def __init__(self, code: int, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def parse_multipart(content_type: str, raw: bytes) -> tuple[dict[str, str], tuple[str | None, str, bytes] | None]:
    """Form fields and the ``file`` part ``(filename, content type, bytes)`` of a multipart/form-data body."""
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw)
    if not message.is_multipart():
        raise UploadError(100, "The request body must be multipart/form-data with a file part.")
    fields: dict[str, str] = {}
    upload = None
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if name == "file":
            upload = (part.get_filename(), part.get_content_type(), data)
        else:
            fields[name] = data.decode("utf-8", "replace")
    return fields, upload


def check_upload(fields: dict[str, str], upload) -> tuple[str, str | None, bytes]:
    """``(mime type, filename, bytes)`` of an acceptable upload, else :class:`UploadError` as Meta answers it."""
    if fields.get("messaging_product") != "whatsapp":
        raise UploadError(100, "The parameter messaging_product is required and must be 'whatsapp'.")
    if upload is None:
        raise UploadError(100, "The parameter file is required.")
    filename, part_type, data = upload
    mime_type = (fields.get("type") or part_type or "").split(";")[0].strip().lower()
    if mime_type not in SUPPORTED:
        raise UploadError(100, f"Param file must be a file with one of the following types: "
                               f"{', '.join(SUPPORTED)}. Received file of type '{mime_type}'.")
    kind, limit = SUPPORTED[mime_type]
    if not data:
        raise UploadError(131053, "Media upload error: the file is empty.")
    if len(data) > limit:
        raise UploadError(131053, f"Media upload error: {kind} files may be at most {limit} bytes, "
                                  f"this one has {len(data)}.")
    return mime_type, filename, data


def new_media(media_id: str, data: bytes, mime_type: str, filename: str | None) -> Media:
    return Media(id=media_id, data=data, mime_type=mime_type, filename=filename, created=time.time())
