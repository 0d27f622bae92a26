"""Which media WhatsApp takes, per kind, and what a file really is — decided from its bytes.

The table is Meta's "Supported media types" (Cloud API, media reference): image JPEG/PNG up to
5 MB; video MP4/3GPP up to 16 MB; audio AAC, AMR, MP3, MP4 audio and OGG with the Opus codec
up to 16 MB; documents (text, PDF, Word, Excel, PowerPoint) up to 100 MB; stickers WebP, 100 KB
static and 500 KB animated. Meta writes "MB" and "KB" without saying which; Kloyst reads them
as decimal (1 MB = 1,000,000 bytes), the stricter reading, so a file Kloyst accepts is never one
Meta refuses for its size.

:func:`sniff` looks at the first bytes only (:data:`SNIFF_BYTES`), never at the client's
Content-Type: magic numbers for the binary formats, the ``ftyp`` brand for MP4/3GPP, the
``OpusHead`` packet for OGG (Vorbis is refused, as Meta does), the VP8X animation flag for
WebP, and for Office files the container (OLE2 or an OOXML zip) with the file name's extension
choosing among the formats that share it. Anything else that decodes as UTF-8 text without
control characters is ``text/plain``.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

MB = 1_000_000
KB = 1_000
SNIFF_BYTES = 64 * 1024

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"


@dataclass(frozen=True)
class MediaLimit:
    """One media kind: the MIME types WhatsApp takes for it and the largest file, in bytes."""

    kind: str
    mime_types: tuple[str, ...]
    max_bytes: int


MEDIA_LIMITS: dict[str, MediaLimit] = {
    "image": MediaLimit("image", ("image/jpeg", "image/png"), 5 * MB),
    "video": MediaLimit("video", ("video/mp4", "video/3gpp"), 16 * MB),
    "audio": MediaLimit("audio", ("audio/aac", "audio/amr", "audio/mpeg", "audio/mp4", "audio/ogg"), 16 * MB),
    "document": MediaLimit("document", ("text/plain", "application/pdf", "application/msword",
                                        "application/vnd.ms-excel", "application/vnd.ms-powerpoint",
                                        DOCX, XLSX, PPTX), 100 * MB),
    # Animated stickers may be 500 KB; a static one only 100 KB (STATIC_STICKER_MAX_BYTES).
    "sticker": MediaLimit("sticker", ("image/webp",), 500 * KB),
}
STATIC_STICKER_MAX_BYTES = 100 * KB
KINDS = tuple(MEDIA_LIMITS)
LARGEST_BYTES = max(limit.max_bytes for limit in MEDIA_LIMITS.values())

EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "video/mp4": "mp4", "video/3gpp": "3gp",
              "audio/aac": "aac", "audio/amr": "amr", "audio/mpeg": "mp3", "audio/mp4": "m4a", "audio/ogg": "ogg",
              "text/plain": "txt", "application/pdf": "pdf", "application/msword": "doc",
              "application/vnd.ms-excel": "xls", "application/vnd.ms-powerpoint": "ppt", DOCX: "docx",
              XLSX: "xlsx", PPTX: "pptx", "image/webp": "webp"}
_OLE2 = {"doc": "application/msword", "xls": "application/vnd.ms-excel", "ppt": "application/vnd.ms-powerpoint"}
_OOXML = {"word/": DOCX, "xl/": XLSX, "ppt/": PPTX}
_CONTROL = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f]")  # C0 controls but TAB, LF, FF, CR
SUPPORTED = ("JPEG, PNG, MP4, 3GPP, AAC, AMR, MP3, M4A, OGG (Opus), PDF, TXT, DOC(X), XLS(X), PPT(X) or WebP "
             "stickers")


class MediaRefused(ValueError):
    """The file is not a media WhatsApp takes (422), or is larger than its kind allows (413)."""

    def __init__(self, message: str, *, code: str, status: int = 422, details: dict | None = None) -> None:
        super().__init__(message)
        self.message, self.code, self.status, self.details = message, code, status, details or {}


@dataclass(frozen=True)
class Sniffed:
    mime_type: str
    animated: bool = False  # WebP only


def _extension(filename: str | None) -> str:
    name = (filename or "").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _ftyp(head: bytes, kind: str | None) -> str:
    brand = head[8:12]
    if brand.startswith((b"3gp", b"3g2")):
        if kind == "audio":
            raise MediaRefused("the file is a 3GPP video; WhatsApp takes 3GPP as video only", code="wrong_type")
        return "video/3gpp"
    if kind == "audio" or (kind is None and brand in (b"M4A ", b"M4B ")):
        return "audio/mp4"
    return "video/mp4"


def _webp_animated(head: bytes) -> bool:
    # RIFF <size> WEBP VP8X <chunk size> <flags>: flag 0x02 is "animation".
    return head[12:16] == b"VP8X" and len(head) > 20 and bool(head[20] & 0x02)


def _ooxml(head: bytes) -> str | None:
    """Word, Excel or PowerPoint, from the names of the zip's first entries (their local headers in ``head``)."""
    names = []
    for match in re.finditer(rb"PK\x03\x04", head):
        start = match.start()
        if start + 30 > len(head):
            break
        size = int.from_bytes(head[start + 26:start + 28], "little")
        names.append(head[start + 30:start + 30 + size])
    if b"[Content_Types].xml" not in names:
        return None
    return next((mime for name in names for marker, mime in _OOXML.items() if name.startswith(marker.encode())),
                None)


def _text(head: bytes, complete: bool) -> bool:
    try:
        text = codecs.getincrementaldecoder("utf-8-sig")("strict").decode(head, final=complete)
    except UnicodeDecodeError:
        return False
    return bool(text) and not _CONTROL.search(text)


def sniff(head: bytes, *, filename: str | None = None, kind: str | None = None, complete: bool = False) -> Sniffed:
    """The MIME type of a file whose first bytes are ``head`` (``complete`` when that is the whole file).

    ``kind`` (when the client named one) settles what the bytes alone cannot: an MP4 sent as
    ``audio`` is ``audio/mp4``. Raises :class:`MediaRefused` for anything WhatsApp does not take.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return Sniffed("image/jpeg")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed("image/png")
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return Sniffed("image/webp", animated=_webp_animated(head))
    if head[4:8] == b"ftyp":
        return Sniffed(_ftyp(head, kind))
    if head.startswith(b"#!AMR\n"):
        return Sniffed("audio/amr")
    if head.startswith(b"OggS"):
        if b"OpusHead" in head[:512]:
            return Sniffed("audio/ogg")
        raise MediaRefused("the file is an OGG without the Opus codec (Vorbis, say); WhatsApp takes OGG audio "
                           "only with Opus: convert it to Opus, AAC or MP3", code="wrong_type")
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0
                                   and head[1] & 0x06 != 0):
        return Sniffed("audio/mpeg")  # an ID3 tag, or an MPEG audio frame (layer bits not 00)
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return Sniffed("audio/aac")  # an ADTS frame: sync word, layer 00
    if head.startswith(b"%PDF-"):
        return Sniffed("application/pdf")
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        found = _OLE2.get(_extension(filename))
        if found is None:
            raise MediaRefused("the file is an Office 97-2003 document; name it .doc, .xls or .ppt so WhatsApp "
                               "shows it as one", code="wrong_type")
        return Sniffed(found)
    if head.startswith(b"PK\x03\x04"):
        found = _ooxml(head)
        if found is not None:
            return Sniffed(found)
        raise MediaRefused("the file is a zip archive, not a Word, Excel or PowerPoint document; WhatsApp does not "
                           "take archives: send a PDF or an Office document", code="wrong_type")
    if _text(head, complete):
        return Sniffed("text/plain")
    raise MediaRefused(f"the file is not a type WhatsApp takes; send {SUPPORTED}", code="wrong_type")


_DEFAULT_KIND = {"image/jpeg": "image", "image/png": "image", "image/webp": "sticker", "video/mp4": "video",
                 "video/3gpp": "video", "audio/aac": "audio", "audio/amr": "audio", "audio/mpeg": "audio",
                 "audio/mp4": "audio", "audio/ogg": "audio"}


def kind_for(sniffed: Sniffed, kind: str | None) -> str:
    """The media kind the file is sent as: ``kind`` if the client named one (checked), else its type's own."""
    if kind is None:
        return _DEFAULT_KIND.get(sniffed.mime_type, "document")
    limit = MEDIA_LIMITS.get(kind)
    if limit is None:
        raise MediaRefused(f"kind must be one of {', '.join(KINDS)}, not {kind[:40]!r}", code="invalid_kind")
    if sniffed.mime_type not in limit.mime_types:
        raise MediaRefused(f"the file is {sniffed.mime_type}, which WhatsApp does not take as {kind}; {kind} takes "
                           f"{', '.join(limit.mime_types)}", code="wrong_type",
                           details={"mime_type": sniffed.mime_type, "kind": kind})
    return kind


def max_bytes_for(kind: str, sniffed: Sniffed) -> int:
    """The largest file of ``kind`` WhatsApp takes for this type (a static sticker: 100 KB)."""
    if kind == "sticker" and not sniffed.animated:
        return STATIC_STICKER_MAX_BYTES
    return MEDIA_LIMITS[kind].max_bytes


def check_size(kind: str, sniffed: Sniffed, size: int) -> None:
    """Raise a 413 :class:`MediaRefused` when ``size`` bytes is over the kind's limit."""
    limit = max_bytes_for(kind, sniffed)
    if size > limit:
        what = "an animated sticker" if kind == "sticker" and sniffed.animated else (
            "a static sticker" if kind == "sticker" else f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}")
        raise MediaRefused(f"the file is larger than WhatsApp takes for {what}: at most {limit} bytes",
                           code="media_too_large", status=413,
                           details={"limit_bytes": limit, "kind": kind, "mime_type": sniffed.mime_type})
