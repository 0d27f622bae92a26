"""Media files at rest: ``<media.storage_dir>/<vendor id>/<stored name>``, encrypted, bound to vendor and media.

Each file has its own random AES-256 key. The key is sealed with the platform's data keyring
(``FieldCipher``, field ``media.file_key``, bound to the vendor) and kept on the media row, so
``kloyst keys rotate`` re-seals keys without touching files, and a file copied to another
vendor's folder or renamed to another media id does not decrypt.

The file is AES-GCM in segments of :data:`SEGMENT_BYTES`, so it can be served with one segment
in memory. Layout: ``b"KMF1" | 8-byte nonce prefix | segments``; segment *i* is sealed with the
nonce ``prefix | i`` (4 bytes) and the associated data ``vendor id | media id | i | last?``: a
segment cannot be reordered, dropped, or the file cut short without decryption failing. Files
are written as ``<name>.part`` and renamed when complete, so a half-written file is never read.
Each write has a new generated name (kept on the row): two fetches of one media racing each
other write two files, and the one whose row update loses removes its own, never the other's.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kloyst.api import FieldCipher

MAGIC = b"KMF1"
SEGMENT_BYTES = 1024 * 1024
TAG_BYTES = 16
KEY_FIELD = "media.file_key"


class StoredFileError(Exception):
    """A stored file is missing, cut short, or does not decrypt for this vendor and media."""


def storage_root(settings) -> Path:
    """``media.storage_dir``; a relative one is under the ini file's directory, like var/ for the database."""
    return (Path(settings.get("kloyst.here") or ".") / settings["media.storage_dir"]).resolve()


def path_for(settings, vendor_id: uuid.UUID, stored_name: str) -> Path:
    """The file of a media; ``stored_name`` is always a generated uuid, checked again here."""
    return storage_root(settings) / str(uuid.UUID(str(vendor_id))) / str(uuid.UUID(stored_name))


@dataclass(frozen=True)
class StoredFile:
    name: str  # the generated file name, for Media.stored_name
    sealed_key: bytes  # the file's key sealed with the keyring, for Media.file_key_enc
    kid: str  # the data key that sealed it, for Media.enc_kid


def _aad(vendor_id: uuid.UUID, media_id: uuid.UUID, index: int, last: bool) -> bytes:
    return vendor_id.bytes + media_id.bytes + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def write(settings, cipher: FieldCipher, vendor_id: uuid.UUID, media_id: uuid.UUID,
          data: bytes | bytearray) -> StoredFile:
    """Encrypt ``data`` to a new file of the media; its name and sealed key."""
    key = AESGCM.generate_key(bit_length=256)
    aead = AESGCM(key)
    prefix = os.urandom(8)
    name = str(uuid.uuid4())
    final = path_for(settings, vendor_id, name)
    final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    part = final.with_name(final.name + ".part")
    count = max(1, -(-len(data) // SEGMENT_BYTES))
    try:
        with open(part, "wb") as handle:
            handle.write(MAGIC + prefix)
            view = memoryview(data)
            for index in range(count):
                piece = view[index * SEGMENT_BYTES:(index + 1) * SEGMENT_BYTES]
                handle.write(aead.encrypt(prefix + index.to_bytes(4, "big"), bytes(piece),
                                          _aad(vendor_id, media_id, index, index == count - 1)))
        os.replace(part, final)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    sealed = cipher.encrypt(base64.b64encode(key).decode(), vendor_id=vendor_id, field=KEY_FIELD)
    return StoredFile(name, sealed, cipher.active_kid)


def read_chunks(settings, cipher: FieldCipher, vendor_id: uuid.UUID, media_id: uuid.UUID, stored_name: str,
                sealed_key: bytes) -> Iterator[bytes]:
    """The decrypted file, one segment at a time; :class:`StoredFileError` if it does not authenticate."""
    key = base64.b64decode(cipher.decrypt(sealed_key, vendor_id=vendor_id, field=KEY_FIELD))
    aead = AESGCM(key)
    path = path_for(settings, vendor_id, stored_name)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed in the finally below, also when the reader stops early
    except FileNotFoundError:
        raise StoredFileError(f"the stored file of media {media_id} is missing") from None
    try:
        header = handle.read(len(MAGIC) + 8)
        if len(header) != len(MAGIC) + 8 or not header.startswith(MAGIC):
            raise StoredFileError(f"the stored file of media {media_id} is not a Kloyst media file")
        prefix = header[len(MAGIC):]
        sealed_size = SEGMENT_BYTES + TAG_BYTES
        index, block = 0, handle.read(sealed_size)
        while True:
            following = handle.read(sealed_size)
            last = not following
            try:
                yield aead.decrypt(prefix + index.to_bytes(4, "big"), block, _aad(vendor_id, media_id, index, last))
            except InvalidTag:
                raise StoredFileError(f"the stored file of media {media_id} does not authenticate") from None
            if last:
                return
            index, block = index + 1, following
    finally:
        handle.close()


def read(settings, cipher: FieldCipher, vendor_id: uuid.UUID, media_id: uuid.UUID, stored_name: str,
         sealed_key: bytes) -> bytes:
    return b"".join(read_chunks(settings, cipher, vendor_id, media_id, stored_name, sealed_key))
