"""Registering WABAs and handing out the shared WABA's numbers: the rules every writer goes through.

* **One registration per Meta WABA id on the platform**: a vendor's own WABA, or the
  platform's shared WABA, never both and never two vendors. A second registration, by
  anyone, is a 409 — a WABA's numbers can only have one owner, and two vendors syncing the
  same WABA would fight over them.
* **Tokens are write-only**: encrypted at rest through :mod:`.access` (bound to their owner)
  and never returned; responses say ``has_access_token``.
* **History is never deleted by a change of owner.** Messages reference ``phone_number``
  rows (``ON DELETE CASCADE``), so a number a vendor has sent or received messages on keeps
  its row: unassigning marks it ``UNASSIGNED``, and a WABA whose numbers have history cannot
  be deleted. :func:`has_history` finds the referencing tables from the schema itself, so
  this plugin needs to know none of the plugins that build on it.

Assignment of shared numbers (platform admins):

* ``assign`` creates the vendor's ``phone_number`` copy (``shared_waba_id`` set, ``waba_id``
  NULL) and sets ``assigned_vendor_id``; a number already assigned is a 409 (unassign first).
* ``unassign`` marks the vendor's copy ``UNASSIGNED`` and clears ``assigned_vendor_id``;
  the row and its messages stay.
* Assigning again to the **same** vendor reactivates its row. Assigning to **another** vendor
  is allowed only when the old vendor's row has no history: that row is then deleted (it
  held nothing) and the new vendor gets a fresh one. With history, it is a 409: the Meta id
  is unique, the old vendor's messages need their row, and no rule here can move them.
"""

from __future__ import annotations

import uuid

from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kloyst.api import Base, Conflict, events, FieldCipher, Outbox, tenancy, Unprocessable, Vendor
from kloyst_plugins.waba import access
from kloyst_plugins.waba.models import PhoneNumber, SharedPhoneNumber, SharedWaba, Waba

CONNECTED = "CONNECTED"  # Meta's status of a number in service
UNASSIGNED = "UNASSIGNED"  # a vendor's copy of a shared number that was taken back (its history stays)
DELETED = "DELETED"  # a number Meta no longer lists (the row stays: messages reference it)

# The fields a vendor's copy of a shared number takes from the shared row (sync and assignment).
SHARED_COPY_FIELDS = ("display_phone_number", "verified_name", "quality_rating", "throughput_mps", "status",
                      "messaging_limit_tier")


def refuse_registered(db: Session, meta_waba_id: str, *, vendor_id: uuid.UUID | None) -> None:
    """409 when ``meta_waba_id`` is registered already, as anyone's WABA or as the shared one.

    The check reads platform-wide (another vendor's WABA counts) but tells a vendor only
    that the WABA is taken, never by whom.
    """
    with tenancy.unscoped(db):
        own = db.execute(select(Waba.id, Waba.vendor_id).where(Waba.meta_waba_id == meta_waba_id)).first()
        shared = db.scalars(select(SharedWaba.id).where(SharedWaba.meta_waba_id == meta_waba_id)).first()
    if own is not None and vendor_id is not None and own.vendor_id == vendor_id:
        raise Conflict(f"you have already registered WABA {meta_waba_id}: {own.id}", code="waba_registered",
                       details={"waba_id": str(own.id)})
    if own is not None:
        raise Conflict(f"WABA {meta_waba_id} is already registered on Kloyst by another account; if it is yours, "
                       "contact support", code="waba_registered")
    if shared is not None:
        raise Conflict(f"WABA {meta_waba_id} is the platform's shared WABA; it cannot be registered again",
                       code="waba_registered")


def _insert(db: Session, row, meta_waba_id: str, *, vendor_id: uuid.UUID | None) -> None:
    try:
        with db.begin_nested():
            db.add(row)
            db.flush()
    except IntegrityError:
        # Registered by someone else between the check and the insert.
        refuse_registered(db, meta_waba_id, vendor_id=vendor_id)
        raise


def create_waba(db: Session, cipher: FieldCipher, *, vendor_id: uuid.UUID, meta_waba_id: str, name: str,
                access_token: str, business_id: str | None = None) -> Waba:
    """Register a vendor's own WABA (the caller enqueues its first phone-number sync)."""
    refuse_registered(db, meta_waba_id, vendor_id=vendor_id)
    token_enc, kid = access.encrypt_waba_token(cipher, vendor_id, access_token)
    waba = Waba(vendor_id=vendor_id, meta_waba_id=meta_waba_id, name=name, business_id=business_id,
                access_token_enc=token_enc, enc_kid=kid)
    _insert(db, waba, meta_waba_id, vendor_id=vendor_id)
    events.record(Outbox(db), vendor_id, "WabaRegistered", waba_id=str(waba.id), meta_waba_id=meta_waba_id)
    return waba


def update_waba(cipher: FieldCipher, waba: Waba | SharedWaba, *, name: str | None = None,
                access_token: str | None = None) -> bool:
    """Rename and/or replace the token of a vendor's or the shared WABA; True when the token was replaced.

    A new token is worth a new sync: it may fix what the old one could not.
    """
    if name is not None:
        waba.name = name
    if access_token is None:
        return False
    if isinstance(waba, Waba):
        waba.access_token_enc, waba.enc_kid = access.encrypt_waba_token(cipher, waba.vendor_id, access_token)
    else:
        waba.access_token_enc, waba.enc_kid = access.encrypt_shared_token(cipher, access_token)
    return True


def history_references() -> list:
    """Every column of the schema that references ``phone_number.id`` (messages, inbound messages…)."""
    found = []
    for table in Base.metadata.tables.values():
        for fk in table.foreign_keys:
            if fk.column.table.name == PhoneNumber.__tablename__ and fk.column.name == "id":
                found.append(fk.parent)
    return found


def has_history(db: Session, number_ids: list[uuid.UUID]) -> bool:
    """Whether any row anywhere references one of these numbers (and would die with it by cascade).

    Read platform-wide: the ids are of rows the caller already loaded under its own scope,
    so nothing of another vendor can be learnt from the answer.
    """
    if not number_ids:
        return False
    with tenancy.unscoped(db):
        return any(db.scalar(select(exists().where(column.in_(number_ids)))) for column in history_references())


def delete_waba(db: Session, waba: Waba) -> None:
    """Remove a vendor's WABA and its numbers, unless a number has history (409): that would delete it too."""
    number_ids = list(db.scalars(select(PhoneNumber.id).where(PhoneNumber.waba_id == waba.id)))
    if has_history(db, number_ids):
        raise Conflict("this WABA's numbers have message history, which deleting the WABA would delete too; "
                       "keep the WABA (replace its token with PATCH if it changed)", code="waba_has_history")
    db.delete(waba)
    db.flush()


def create_shared_waba(db: Session, cipher: FieldCipher, *, meta_waba_id: str, name: str,
                       access_token: str) -> SharedWaba:
    refuse_registered(db, meta_waba_id, vendor_id=None)
    token_enc, kid = access.encrypt_shared_token(cipher, access_token)
    shared = SharedWaba(meta_waba_id=meta_waba_id, name=name, access_token_enc=token_enc, enc_kid=kid)
    _insert(db, shared, meta_waba_id, vendor_id=None)
    return shared


def copy_shared_fields(source: SharedPhoneNumber, target: PhoneNumber) -> None:
    for field in SHARED_COPY_FIELDS:
        setattr(target, field, getattr(source, field))


def assign(db: Session, number: SharedPhoneNumber, vendor_id: uuid.UUID) -> PhoneNumber:
    """Give a shared number to a vendor (platform-wide session); see the module docstring for the rule."""
    if number.assigned_vendor_id is not None:
        raise Conflict(f"number {number.display_phone_number} is already assigned to vendor "
                       f"{number.assigned_vendor_id}; unassign it first", code="number_assigned",
                       details={"assigned_vendor_id": str(number.assigned_vendor_id)})
    if number.status == DELETED:
        raise Conflict(f"Meta no longer lists number {number.display_phone_number} in the shared WABA",
                       code="number_deleted")
    with tenancy.unscoped(db):
        if db.get(Vendor, vendor_id) is None:
            raise Unprocessable("vendor_id: no vendor has that id", code="unknown_vendor",
                                details={"fields": [{"field": "vendor_id", "problem": "no vendor has that id"}]})
        row = db.scalars(select(PhoneNumber)
                         .where(PhoneNumber.meta_phone_number_id == number.meta_phone_number_id)).one_or_none()
        if row is not None and row.waba_id is not None:
            raise Conflict(f"number {number.display_phone_number} belongs to a vendor's own WABA",
                           code="number_held")
        if row is not None and row.vendor_id != vendor_id:
            if has_history(db, [row.id]):
                raise Conflict(f"number {number.display_phone_number} has message history with vendor "
                               f"{row.vendor_id}; it can only be assigned to that vendor again",
                               code="number_has_history", details={"vendor_id": str(row.vendor_id)})
            db.delete(row)
            db.flush()
            row = None
        if row is None:
            row = PhoneNumber(vendor_id=vendor_id, meta_phone_number_id=number.meta_phone_number_id)
            db.add(row)
        row.shared_waba_id = number.shared_waba_id
        copy_shared_fields(number, row)
        number.assigned_vendor_id = vendor_id
        db.flush()
    shared = db.get(SharedWaba, number.shared_waba_id)
    events.record(Outbox(db), vendor_id, "PhoneNumberAssigned", phone_number_id=str(row.id),
                  meta_phone_number_id=number.meta_phone_number_id, meta_waba_id=shared.meta_waba_id)
    return row


def unassign(db: Session, number: SharedPhoneNumber) -> PhoneNumber | None:
    """Take a shared number back; the vendor's row stays (``UNASSIGNED``) with its history, and is returned."""
    vendor_id = number.assigned_vendor_id
    if vendor_id is None:
        raise Conflict(f"number {number.display_phone_number} is not assigned to anyone", code="number_not_assigned")
    with tenancy.unscoped(db):
        row = db.scalars(select(PhoneNumber).where(
            PhoneNumber.meta_phone_number_id == number.meta_phone_number_id,
            PhoneNumber.vendor_id == vendor_id)).one_or_none()
        if row is not None:
            row.status = UNASSIGNED
        number.assigned_vendor_id = None
        db.flush()
    events.record(Outbox(db), vendor_id, "PhoneNumberUnassigned", meta_phone_number_id=number.meta_phone_number_id,
                  phone_number_id=str(row.id) if row is not None else None)
    return row
