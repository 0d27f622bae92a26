"""Credentials for calling Meta on a vendor's behalf: the one place tokens are decrypted.

Tokens are AES-GCM ciphertexts bound to their owner: a vendor's WABA token to that vendor
(field ``waba.access_token``), the shared WABA's token to the platform (the nil UUID, field
``shared_waba.access_token``). Callers: the sender (per phone number), template sync and
phone-number sync (per WABA). Nothing here returns a token to an API response.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select

from kloyst.api import FieldCipher, tenancy
from kloyst_plugins.waba.models import PhoneNumber, SharedWaba, Waba

PLATFORM = uuid.UUID(int=0)
WABA_TOKEN_FIELD = "waba.access_token"
SHARED_TOKEN_FIELD = "shared_waba.access_token"


@dataclass(frozen=True)
class WabaAccess:
    meta_waba_id: str
    token: str
    shared: bool
    waba_id: uuid.UUID  # Waba.id or SharedWaba.id


def encrypt_waba_token(cipher: FieldCipher, vendor_id: uuid.UUID, token: str) -> tuple[bytes, str]:
    return cipher.encrypt(token, vendor_id=vendor_id, field=WABA_TOKEN_FIELD), cipher.active_kid


def encrypt_shared_token(cipher: FieldCipher, token: str) -> tuple[bytes, str]:
    return cipher.encrypt(token, vendor_id=PLATFORM, field=SHARED_TOKEN_FIELD), cipher.active_kid


def waba_token(cipher: FieldCipher, waba: Waba) -> str:
    return cipher.decrypt(waba.access_token_enc, vendor_id=waba.vendor_id, field=WABA_TOKEN_FIELD)


def shared_token(cipher: FieldCipher, shared: SharedWaba) -> str:
    return cipher.decrypt(shared.access_token_enc, vendor_id=PLATFORM, field=SHARED_TOKEN_FIELD)


def meta_waba_id_of(db, number: PhoneNumber) -> str:
    """Meta's id of the WABA a number belongs to, the vendor's own or the platform's shared one."""
    if number.waba_id is not None:
        return db.get(Waba, number.waba_id).meta_waba_id
    # The shared WABA is a platform row; the number itself was loaded under the vendor's scope.
    with tenancy.unscoped(db):
        return db.get(SharedWaba, number.shared_waba_id).meta_waba_id


def phone_number_access(db, cipher: FieldCipher, number: PhoneNumber) -> WabaAccess:
    """The WABA and token to send from ``number`` (its own WABA's, or the platform's for a shared number).

    The shared WABA is a platform row: it is read outside the vendor scope, which is safe
    because ``number`` itself was loaded under the vendor's scope.
    """
    if number.waba_id is not None:
        waba = db.get(Waba, number.waba_id)
        return WabaAccess(waba.meta_waba_id, waba_token(cipher, waba), False, waba.id)
    with tenancy.unscoped(db):
        shared = db.get(SharedWaba, number.shared_waba_id)
    return WabaAccess(shared.meta_waba_id, shared_token(cipher, shared), True, shared.id)


def accessible_wabas(db, cipher: FieldCipher) -> list[WabaAccess]:
    """Every WABA the scoped vendor may use: its own, and shared ones it has numbers from."""
    found = [WabaAccess(w.meta_waba_id, waba_token(cipher, w), False, w.id)
             for w in db.scalars(select(Waba).order_by(Waba.created_at))]
    shared_ids = set(db.scalars(select(PhoneNumber.shared_waba_id).where(PhoneNumber.shared_waba_id.is_not(None))))
    if shared_ids:
        with tenancy.unscoped(db):
            for shared in db.scalars(select(SharedWaba).where(SharedWaba.id.in_(shared_ids))):
                found.append(WabaAccess(shared.meta_waba_id, shared_token(cipher, shared), True, shared.id))
    return found
