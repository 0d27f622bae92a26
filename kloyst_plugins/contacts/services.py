"""Writing one contact: create, update, delete, opt-out and opt-in, each with its audit row.

Every path that changes a single contact goes through :class:`ContactService` — the API
today, webhooks (an inbound "STOP" opts the sender out through :meth:`opt_out_by_phone`)
tomorrow — so the rules hold everywhere:

* the number is normalized to E.164 (:mod:`.phones`) and only its keyed hash
  (``mobile_hash``) and ciphertext are stored; number and name are encrypted with the
  active data key, bound to the vendor and field;
* one contact per number per vendor: a second one is a 409 naming the first;
* every change writes an immutable :class:`ContactAuditLog` row with who, from where, and
  ``{field: [before, after]}``. Encrypted fields never appear in the clear there: their
  before/after is :data:`SECRET_MARK` when a value is present and ``null`` when it is not.

Bulk writers (the import pipeline, bulk label/delete in :mod:`.bulk`) work set-based on
their own, but use :func:`snapshot` and :data:`SECRET_MARK` so their audit rows read the same.

Each single-contact change records its domain event (``ContactCreated``, ``ContactUpdated``,
``ContactOptedOut``, ``ContactOptedIn``; docs/events.md) in the same transaction. Bulk writers
record none per contact: an import reports its contacts by ``ImportCompleted`` and its counts.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kloyst.api import Conflict, events, FieldCipher, MobileHasher, Outbox, tenancy, Unprocessable, utcnow
from kloyst_plugins.contacts import phones
from kloyst_plugins.contacts.models import AuditAction, Contact, ContactAuditLog, ContactSource

# What the audit log says instead of a number or a name.
SECRET_MARK = "changed"

_KEEP: Any = object()  # "leave this field as it is" for update()


@dataclass(frozen=True)
class Actor:
    """Who changes a contact and through which door; recorded on every audit row."""

    source: ContactSource
    user_id: uuid.UUID | None = None
    import_job_id: uuid.UUID | None = None


def read_phone(raw: str, default_country: str | None, *, field: str = "mobile") -> phones.Phone:
    """Normalize ``raw`` or answer 422 with the reason, naming the request field."""
    try:
        return phones.normalize(raw, default_country)
    except phones.InvalidPhone as exc:
        reason = str(exc)
        raise Unprocessable(f"{field}: {reason}", code="invalid_phone",
                            details={"fields": [{"field": field, "problem": reason}]}) from None


def snapshot(*, has_name: bool, country: str | None, labels: list, attributes: dict, opted_out: bool) -> dict:
    """The audited fields of a contact, with the encrypted ones as :data:`SECRET_MARK`; absent ones left out."""
    values = {"mobile": SECRET_MARK, "name": SECRET_MARK if has_name else None, "country": country,
              "labels": list(labels), "attributes": dict(attributes), "opted_out": opted_out}
    return {key: value for key, value in values.items() if value is not None}


def contact_snapshot(contact: Contact) -> dict:
    return snapshot(has_name=contact.name_enc is not None, country=contact.country, labels=contact.labels or [],
                    attributes=contact.attributes or {}, opted_out=contact.opted_out)


class ContactService:
    """Single-contact writes for one vendor, in the caller's session and transaction.

    The session must be scoped to that vendor (a request's session, or a task's), so every
    lookup here is tenant-scoped by the core and none filters by hand.
    """

    def __init__(self, db: Session, *, vendor_id: uuid.UUID, cipher: FieldCipher, hasher: MobileHasher) -> None:
        if tenancy.current_scope(db) != vendor_id:
            raise tenancy.TenancyError("ContactService needs a session scoped to the contact's vendor")
        self.db = db
        self.vendor_id = vendor_id
        self.cipher = cipher
        self.hasher = hasher

    @classmethod
    def for_request(cls, request) -> ContactService:
        registry = request.registry
        return cls(request.db, vendor_id=request.vendor_id, cipher=registry["kloyst.cipher"],
                   hasher=registry["kloyst.mobile_hasher"])

    def mobile_hash(self, e164: str) -> bytes:
        return self.hasher(self.vendor_id, e164)

    def decrypt_mobile(self, contact: Contact) -> str:
        return self.cipher.decrypt(contact.mobile_enc, vendor_id=self.vendor_id, field="mobile")

    def decrypt_name(self, contact: Contact) -> str | None:
        if contact.name_enc is None:
            return None
        return self.cipher.decrypt(contact.name_enc, vendor_id=self.vendor_id, field="name")

    def find_by_phone(self, phone: phones.Phone) -> Contact | None:
        return self.db.scalars(select(Contact).where(Contact.mobile_hash == self.mobile_hash(phone.e164))).first()

    def create(self, phone: phones.Phone, *, actor: Actor, name: str | None = None, labels=(),
               attributes: dict | None = None) -> Contact:
        mobile_hash = self.mobile_hash(phone.e164)
        self._refuse_duplicate(mobile_hash)
        contact = Contact(vendor_id=self.vendor_id, mobile_hash=mobile_hash, country=phone.region,
                          calling_code=phone.calling_code, labels=list(labels), attributes=dict(attributes or {}),
                          source=actor.source.value)
        self._seal(contact, phone.e164, name or None)
        try:
            with self.db.begin_nested():
                self.db.add(contact)
                self.db.flush()
        except IntegrityError:
            # Another transaction created the same number between our check and our insert.
            self._refuse_duplicate(mobile_hash)
            raise
        self._audit(contact, AuditAction.CREATE, actor,
                    {key: [None, value] for key, value in contact_snapshot(contact).items()})
        self._event(events.ContactCreated(contact_id=contact.id, source=actor.source.value))
        return contact

    def update(self, contact: Contact, *, actor: Actor, phone: phones.Phone | None = None, name: Any = _KEEP,
               labels: list | None = None, attributes: dict | None = None) -> dict:
        """Apply the given fields; return the audited changes (empty when nothing changed, and then no row)."""
        changes: dict[str, list] = {}
        mobile = name_plain = None
        reseal = False
        if phone is not None:
            mobile_hash = self.mobile_hash(phone.e164)
            if mobile_hash != contact.mobile_hash:
                self._refuse_duplicate(mobile_hash)
                contact.mobile_hash, mobile, reseal = mobile_hash, phone.e164, True
                changes["mobile"] = [SECRET_MARK, SECRET_MARK]
                self._set(contact, changes, "country", phone.region)
                self._set(contact, changes, "calling_code", phone.calling_code)
        if name is not _KEEP:
            current = self.decrypt_name(contact)
            name_plain = name or None
            if name_plain != current:
                changes["name"] = [SECRET_MARK if current else None, SECRET_MARK if name_plain else None]
                reseal = True
        if labels is not None:
            self._set(contact, changes, "labels", list(labels))
        if attributes is not None:
            self._set(contact, changes, "attributes", dict(attributes))
        if reseal:
            self._seal(contact, mobile if mobile is not None else self.decrypt_mobile(contact),
                       name_plain if "name" in changes else self.decrypt_name(contact))
        if changes:
            try:
                with self.db.begin_nested():
                    self.db.flush()
            except IntegrityError:
                self._refuse_duplicate(contact.mobile_hash, other_than=contact.id)
                raise
            self._audit(contact, AuditAction.UPDATE, actor, changes)
            self._event(events.ContactUpdated(contact_id=contact.id, source=actor.source.value,
                                              changed=tuple(sorted(changes))))
        return changes

    def delete(self, contact: Contact, *, actor: Actor) -> None:
        self._audit(contact, AuditAction.DELETE, actor,
                    {key: [value, None] for key, value in contact_snapshot(contact).items()})
        self.db.delete(contact)
        self.db.flush()

    def opt_out(self, contact: Contact, *, actor: Actor) -> bool:
        """Stop all sending to the contact; returns False when it was already opted out (nothing written)."""
        if contact.opted_out:
            return False
        contact.opted_out, contact.opted_out_at = True, utcnow()
        self._audit(contact, AuditAction.OPT_OUT, actor, {"opted_out": [False, True]})
        self._event(events.ContactOptedOut(contact_id=contact.id, source=actor.source.value))
        return True

    def opt_in(self, contact: Contact, *, actor: Actor) -> bool:
        if not contact.opted_out:
            return False
        contact.opted_out, contact.opted_out_at = False, None
        self._audit(contact, AuditAction.OPT_IN, actor, {"opted_out": [True, False]})
        self._event(events.ContactOptedIn(contact_id=contact.id, source=actor.source.value))
        return True

    def opt_out_by_phone(self, e164: str, *, actor: Actor) -> Contact | None:
        """For inbound "STOP" messages: opt the sender out if the vendor knows the number; None if not."""
        contact = self.db.scalars(select(Contact).where(Contact.mobile_hash == self.mobile_hash(e164))
                                  .with_for_update()).first()
        if contact is not None:
            self.opt_out(contact, actor=actor)
        return contact

    def _event(self, event) -> None:
        """A domain event in this transaction (nothing is written when no installed plugin subscribes)."""
        events.record_event(Outbox(self.db), self.vendor_id, event)

    def _seal(self, contact: Contact, mobile: str, name: str | None) -> None:
        # Both fields with the active key, always together, so enc_kid describes the whole row.
        contact.mobile_enc = self.cipher.encrypt(mobile, vendor_id=self.vendor_id, field="mobile")
        contact.name_enc = None if name is None else self.cipher.encrypt(name, vendor_id=self.vendor_id, field="name")
        contact.enc_kid = self.cipher.active_kid

    @staticmethod
    def _set(contact: Contact, changes: dict, field: str, value) -> None:
        before = getattr(contact, field)
        if before != value:
            changes[field] = [before, value]
            setattr(contact, field, value)

    def _refuse_duplicate(self, mobile_hash: bytes, *, other_than: uuid.UUID | None = None) -> None:
        query = select(Contact.id).where(Contact.mobile_hash == mobile_hash)
        if other_than is not None:
            query = query.where(Contact.id != other_than)
        existing = self.db.scalars(query).first()
        if existing is not None:
            raise Conflict(f"this vendor already has a contact with that number: {existing}",
                           code="duplicate_contact", details={"contact_id": str(existing)})

    def _audit(self, contact: Contact, action: AuditAction, actor: Actor, changes: dict) -> None:
        self.db.add(ContactAuditLog(vendor_id=self.vendor_id, contact_id=contact.id, action=action.value,
                                    source=actor.source.value, actor_user_id=actor.user_id,
                                    import_job_id=actor.import_job_id, changes=changes))
