"""Media files of every kind, as small as their magic numbers allow and padded to any size, and a vendor
with a number known to the sandbox, for the media plugin's tests."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass

from kloyst import testing
from kloyst.db import tenancy
from kloyst.sandbox.state import PhoneNumber as SandboxNumber
from kloyst_plugins.waba.access import encrypt_waba_token
from kloyst_plugins.waba.models import PhoneNumber, Waba

PLUGINS = ("waba", "media")
TOKEN = "media-test-token"
_ids = itertools.count(10**14 + uuid.uuid4().int % 10**13)

# The first bytes of one file of each type WhatsApp takes (what the sniffer decides from).
HEADS: dict[str, bytes] = {
    "image/jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    "image/png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    "video/mp4": b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2",
    "video/3gpp": b"\x00\x00\x00\x18ftyp3gp5\x00\x00\x02\x003gp5isom",
    "audio/mp4": b"\x00\x00\x00\x1cftypM4A \x00\x00\x00\x00M4A isom",
    "audio/mpeg": b"ID3\x04\x00\x00\x00\x00\x00\x00",
    "audio/aac": b"\xff\xf1\x50\x80\x02\x1f\xfc",
    "audio/amr": b"#!AMR\n",
    "audio/ogg": b"OggS\x00\x02" + b"\x00" * 22 + b"\x13OpusHead\x01\x01",
    "application/pdf": b"%PDF-1.7\n",
    "text/plain": b"Order 42: two boxes, one receipt.\n",
    "image/webp": b"RIFF\x00\x00\x00\x00WEBPVP8 \x00\x00\x00\x00",
}
ANIMATED_WEBP = b"RIFF\x00\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00\x02\x00\x00\x00"
# Kind, MIME type, largest file (bytes): Meta's table read in decimal units.
EDGES = [
    ("image", "image/jpeg", 5_000_000),
    ("image", "image/png", 5_000_000),
    ("video", "video/mp4", 16_000_000),
    ("video", "video/3gpp", 16_000_000),
    ("audio", "audio/mpeg", 16_000_000),
    ("audio", "audio/ogg", 16_000_000),
    ("document", "application/pdf", 100_000_000),
    ("sticker", "image/webp", 100_000),
]


def sample(mime_type: str, size: int | None = None, *, head: bytes | None = None) -> bytes:
    """A file of ``mime_type`` (its magic bytes, then padding) of exactly ``size`` bytes."""
    start = head if head is not None else HEADS[mime_type]
    if size is None:
        return start + b"\x00" * 64 if mime_type != "text/plain" else start
    filler = b"." if mime_type == "text/plain" else b"\x00"
    return start + filler * (size - len(start))


@dataclass(frozen=True)
class MediaVendor:
    account: testing.Account
    waba: Waba
    number: PhoneNumber

    @property
    def headers(self) -> dict[str, str]:
        return self.account.headers

    @property
    def vendor_id(self) -> uuid.UUID:
        return self.account.vendor_id


def media_vendor(db, registry, sandbox, name: str = "Media Co") -> MediaVendor:
    """A vendor with waba and media on, one WABA (token :data:`TOKEN`) and one number registered in ``sandbox``."""
    account = testing.AccountFactory(db, registry["kloyst.access_tokens"]).vendor(name)
    for plugin in PLUGINS:
        testing.enable_plugin(db, account.vendor_id, plugin)
    token_enc, kid = encrypt_waba_token(registry["kloyst.cipher"], account.vendor_id, TOKEN)
    with tenancy.unscoped(db):
        waba = Waba(vendor_id=account.vendor_id, meta_waba_id=str(next(_ids)), name="Media WABA",
                    access_token_enc=token_enc, enc_kid=kid)
        db.add(waba)
        db.flush()
        number = PhoneNumber(vendor_id=account.vendor_id, waba_id=waba.id, meta_phone_number_id=str(next(_ids)),
                             display_phone_number="+1 555 010 0000")
        db.add(number)
        db.commit()
    sandbox.state.add_number(SandboxNumber(id=number.meta_phone_number_id, waba_id=waba.meta_waba_id,
                                           display_phone_number="+1 555 010 0000", throughput=80))
    return MediaVendor(account, waba, number)
