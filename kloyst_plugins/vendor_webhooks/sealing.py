"""Endpoint secrets at rest: encrypted with the data keyring, bound to the vendor (key rotation reaches them).

The secret is shown once, when it is made (creation, rotation); afterwards only the deliverer
opens it, to sign. A rotated-out secret keeps signing beside the new one until it expires, so
a receiver can switch secrets without a window in which deliveries fail.
"""

from __future__ import annotations

import datetime as dt
import uuid

from kloyst.api import FieldCipher, utcnow

SECRET_FIELD = "vendor_webhooks.secret"


def seal_secret(cipher: FieldCipher, vendor_id: uuid.UUID, secret: str) -> bytes:
    return cipher.encrypt(secret, vendor_id=vendor_id, field=SECRET_FIELD)


def endpoint_secrets(cipher: FieldCipher, vendor_id: uuid.UUID, secret_enc: bytes, previous_enc: bytes | None,
                     previous_expires_at: dt.datetime | None) -> tuple[str, ...]:
    """The secrets that sign now: the current one, and the previous one until it expires."""
    current = cipher.decrypt(bytes(secret_enc), vendor_id=vendor_id, field=SECRET_FIELD)
    if previous_enc is not None and previous_expires_at is not None and previous_expires_at > utcnow():
        return current, cipher.decrypt(bytes(previous_enc), vendor_id=vendor_id, field=SECRET_FIELD)
    return (current,)
