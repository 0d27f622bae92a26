"""A message's content (recipient and Meta payload) at rest: JSON, AES-GCM, bound to the vendor.

The payload carries the recipient's number and personalised parameters (names, codes), so it
is encrypted like a contact's number. The sender decrypts it once per attempt (a few µs) and
posts the JSON text as it was sealed: it is already what Meta takes, so it is never parsed and
dumped again on the hot path.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from kloyst.api import FieldCipher

CONTENT_FIELD = "message.content"


def seal_content(cipher: FieldCipher, vendor_id: uuid.UUID, payload: dict[str, Any]) -> tuple[bytes, str]:
    """``(content_enc, enc_kid)`` for a Meta send payload (as built by :mod:`kloyst.meta.payloads`)."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return cipher.encrypt(text, vendor_id=vendor_id, field=CONTENT_FIELD), cipher.active_kid


def open_content_json(cipher: FieldCipher, vendor_id: uuid.UUID, content_enc: bytes) -> bytes:
    """The payload's JSON text, as sealed (UTF-8): the request body the sender posts."""
    return cipher.decrypt(content_enc, vendor_id=vendor_id, field=CONTENT_FIELD).encode("utf-8")


def open_content(cipher: FieldCipher, vendor_id: uuid.UUID, content_enc: bytes) -> dict[str, Any]:
    return json.loads(open_content_json(cipher, vendor_id, content_enc))
