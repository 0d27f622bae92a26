"""Writing one contact: create, update, delete, opt-out and opt-in, each with its audit row.

Every path that changes a single contact goes through :class:`ContactService` — the API
today, webhooks (an inbound "STOP" opts the sender out through :meth:`opt_out_by_phone`)
tomorrow — so the rules hold everywhere:

* the number is normalized to E.164 (:mod:`.phones`) and only its keyed hash
  (``mobile_hash``) and ciphertext are stored; number and name are encrypted with the
  active data key, bound to the vendor and field;
* a contact is known by its number, its WhatsApp BSUID (:mod:`.bsuids`), or both — the BSUID
  and parent BSUID kept like the number (keyed hash + ciphertext), the username like the name;
  :meth:`ContactService.identify` finds, links or creates the contact of a webhook's sender;
* one contact per number and one per BSUID per vendor: a second one is a 409 naming the first;
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

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kloyst.api import Conflict, events, FieldCipher, MobileHasher, Outbox, tenancy, Unprocessable, utcnow
from kloyst_plugins.contacts import bsuids, phones
from kloyst_plugins.contacts.models import AuditAction, Contact, ContactAuditLog, ContactSource
from kloyst_plugins.contacts.schemas import MAX_LABELS

log = logging.getLogger(__name__)

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


def read_bsuid(raw: str, *, field: str = "bsuid", parent: bool = False) -> str:
    """A BSUID (or parent BSUID) as Meta writes it, or a 422 naming the request field and the expected shape."""
    try:
        return bsuids.normalize_bsuid(raw, parent=parent)
    except bsuids.InvalidBsuid as exc:
        reason = str(exc)
        raise Unprocessable(f"{field}: {reason}", code="invalid_bsuid",
                            details={"fields": [{"field": field, "problem": reason}]}) from None


def snapshot(*, has_name: bool, country: str | None, labels: list, attributes: dict, opted_out: bool,
             has_mobile: bool = True, has_bsuid: bool = False, has_parent_bsuid: bool = False,
             has_username: bool = False) -> dict:
    """The audited fields of a contact, with the encrypted ones as :data:`SECRET_MARK`; absent ones left out."""
    values = {"mobile": SECRET_MARK if has_mobile else None, "name": SECRET_MARK if has_name else None,
              "bsuid": SECRET_MARK if has_bsuid else None, "parent_bsuid": SECRET_MARK if has_parent_bsuid else None,
              "username": SECRET_MARK if has_username else None, "country": country,
              "labels": list(labels), "attributes": dict(attributes), "opted_out": opted_out}
    return {key: value for key, value in values.items() if value is not None}


def contact_snapshot(contact: Contact) -> dict:
    return snapshot(has_name=contact.name_enc is not None, country=contact.country, labels=contact.labels or [],
                    attributes=contact.attributes or {}, opted_out=contact.opted_out,
                    has_mobile=contact.mobile_hash is not None, has_bsuid=contact.bsuid_hash is not None,
                    has_parent_bsuid=contact.parent_bsuid_hash is not None,
                    has_username=contact.username_enc is not None)


# The encrypted fields of a contact: request/audit name -> column. Sealed together, so enc_kid describes the row.
SEALED = {"mobile": "mobile_enc", "name": "name_enc", "bsuid": "bsuid_enc", "parent_bsuid": "parent_bsuid_enc",
          "username": "username_enc"}


# Called with (kept, duplicate) before a duplicate contact is merged away (see ContactService.identify).
MergeHook = Callable[[Contact, Contact], None]


class _KnownContacts:
    """The contacts an :meth:`ContactService.identify` pass has seen, by number hash and by BSUID hash."""

    def __init__(self) -> None:
        self.by_mobile: dict[bytes, Contact] = {}
        self.by_bsuid: dict[bytes, Contact] = {}

    def add(self, contacts: list[Contact]) -> None:
        for contact in contacts:
            if contact.mobile_hash is not None:
                self.by_mobile[bytes(contact.mobile_hash)] = contact
            if contact.bsuid_hash is not None:
                self.by_bsuid[bytes(contact.bsuid_hash)] = contact

    def forget(self, contact: Contact) -> None:
        """A contact merged into another and deleted: no later identity may find it."""
        for index in (self.by_mobile, self.by_bsuid):
            for key in [k for k, c in index.items() if c is contact]:
                del index[key]


@dataclass(frozen=True)
class Identity:
    """Who a WhatsApp message is from or to, as Meta's webhook names them; any part may be missing.

    A phone alone is how Kloyst always knew people; a BSUID alone is a username user whose
    number Meta withheld; both together link the two (see :meth:`ContactService.identify`).
    """

    phone: phones.Phone | None = None
    bsuid: str | None = None
    parent_bsuid: str | None = None
    username: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class Addressee:
    """Where a message to a contact goes: ``to`` (an E.164 number) when the number is known, else
    ``recipient`` (its BSUID) — Meta's advice: a number keeps phone fields appearing in webhooks."""

    field: str  # "to" or "recipient"
    value: str

    @property
    def is_bsuid(self) -> bool:
        return self.field == "recipient"


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
        self._deferred_events: list | None = None  # set while identify_many collects its events

    @classmethod
    def for_request(cls, request) -> ContactService:
        registry = request.registry
        return cls(request.db, vendor_id=request.vendor_id, cipher=registry["kloyst.cipher"],
                   hasher=registry["kloyst.mobile_hasher"])

    def mobile_hash(self, e164: str) -> bytes:
        return self.hasher(self.vendor_id, e164)

    def bsuid_hash(self, bsuid: str) -> bytes:
        """The keyed hash of a BSUID or parent BSUID: the number's hasher (a BSUID never looks like ``+…``)."""
        return self.hasher(self.vendor_id, bsuid)

    def _open(self, contact: Contact, field: str) -> str | None:
        token = getattr(contact, SEALED[field])
        return None if token is None else self.cipher.decrypt(token, vendor_id=self.vendor_id, field=field)

    def decrypt_mobile(self, contact: Contact) -> str | None:
        """The contact's E.164 number; None for a contact known only by its BSUID."""
        return self._open(contact, "mobile")

    def decrypt_name(self, contact: Contact) -> str | None:
        return self._open(contact, "name")

    def decrypt_bsuid(self, contact: Contact) -> str | None:
        return self._open(contact, "bsuid")

    def decrypt_parent_bsuid(self, contact: Contact) -> str | None:
        return self._open(contact, "parent_bsuid")

    def decrypt_username(self, contact: Contact) -> str | None:
        return self._open(contact, "username")

    def addressee(self, contact: Contact) -> Addressee:
        """Where a message to ``contact`` goes: its number when known, else its BSUID (Meta's ``recipient``)."""
        mobile = self.decrypt_mobile(contact)
        if mobile is not None:
            return Addressee("to", mobile)
        bsuid = self.decrypt_bsuid(contact)
        if bsuid is None:  # ck_contact_identified makes this impossible
            raise RuntimeError(f"contact {contact.id} has neither a number nor a BSUID")
        return Addressee("recipient", bsuid)

    def find_by_phone(self, phone: phones.Phone) -> Contact | None:
        return self.db.scalars(select(Contact).where(Contact.mobile_hash == self.mobile_hash(phone.e164))).first()

    def find_by_bsuid(self, bsuid: str) -> Contact | None:
        return self.db.scalars(select(Contact).where(Contact.bsuid_hash == self.bsuid_hash(bsuid))).first()

    def find_by_parent_bsuid(self, parent_bsuid: str) -> list[Contact]:
        """Every contact carrying this parent BSUID (several when the vendor has several portfolios)."""
        return list(self.db.scalars(select(Contact).where(
            Contact.parent_bsuid_hash == self.bsuid_hash(parent_bsuid)).order_by(Contact.created_at, Contact.id)))

    def create(self, phone: phones.Phone | None, *, actor: Actor, name: str | None = None, labels=(),
               attributes: dict | None = None, bsuid: str | None = None, parent_bsuid: str | None = None,
               username: str | None = None, looked_up: bool = False) -> Contact:
        """A new contact known by ``phone``, by ``bsuid``, or by both (at least one: 422 otherwise).

        ``looked_up``: the caller has just found no contact with either id in this transaction
        (:meth:`identify`), so the duplicate check is left to the unique indexes alone.
        """
        if phone is None and not bsuid:
            raise Unprocessable("a contact needs a mobile number or a BSUID (bsuid): give one of them",
                                code="contact_identity_required",
                                details={"fields": [{"field": "mobile", "problem": "give a mobile or a bsuid"}]})
        mobile_hash = self.mobile_hash(phone.e164) if phone is not None else None
        bsuid_hash = self.bsuid_hash(bsuid) if bsuid else None
        if not looked_up:
            self._refuse_duplicate(mobile_hash, bsuid_hash)
        country = phone.region if phone is not None else bsuids.country_of(bsuid)
        contact = Contact(vendor_id=self.vendor_id, mobile_hash=mobile_hash, bsuid_hash=bsuid_hash,
                          parent_bsuid_hash=self.bsuid_hash(parent_bsuid) if parent_bsuid else None,
                          country=country, calling_code=phone.calling_code if phone is not None else None,
                          labels=list(labels), attributes=dict(attributes or {}), source=actor.source.value)
        self._seal(contact, {"mobile": phone.e164 if phone is not None else None, "name": name or None,
                             "bsuid": bsuid or None, "parent_bsuid": parent_bsuid or None,
                             "username": username or None})
        try:
            with self.db.begin_nested():
                self.db.add(contact)
                self.db.flush()
        except IntegrityError:
            # Another transaction created the same number or BSUID between our check and our insert.
            self._refuse_duplicate(mobile_hash, bsuid_hash)
            raise
        self._audit(contact, AuditAction.CREATE, actor,
                    {key: [None, value] for key, value in contact_snapshot(contact).items()})
        self._event(events.ContactCreated(contact_id=contact.id, source=actor.source.value))
        return contact

    def update(self, contact: Contact, *, actor: Actor, phone: phones.Phone | None = None, name: Any = _KEEP,
               labels: list | None = None, attributes: dict | None = None, bsuid: Any = _KEEP,
               parent_bsuid: Any = _KEEP, username: Any = _KEEP) -> dict:
        """Apply the given fields; return the audited changes (empty when nothing changed, and then no row).

        ``bsuid``, ``parent_bsuid`` and ``username`` given as None clear them; a contact keeps a
        number or a BSUID (clearing the BSUID of a contact without a number is a 422).
        """
        changes: dict[str, list] = {}
        plain = self._plain(contact)
        if phone is not None:
            mobile_hash = self.mobile_hash(phone.e164)
            if mobile_hash != contact.mobile_hash:
                self._refuse_duplicate(mobile_hash, None, other_than=contact.id)
                changes["mobile"] = [SECRET_MARK if contact.mobile_hash is not None else None, SECRET_MARK]
                contact.mobile_hash, plain["mobile"] = mobile_hash, phone.e164
                self._set(contact, changes, "country", phone.region)
                self._set(contact, changes, "calling_code", phone.calling_code)
        if bsuid is not _KEEP:
            bsuid = bsuid or None
            bsuid_hash = self.bsuid_hash(bsuid) if bsuid else None
            if bsuid_hash != contact.bsuid_hash:
                if bsuid_hash is None and contact.mobile_hash is None:
                    raise Unprocessable("bsuid: this contact has no mobile number, so it keeps its BSUID (give it a "
                                        "mobile first)", code="contact_identity_required",
                                        details={"fields": [{"field": "bsuid", "problem": "the contact's only id"}]})
                if bsuid_hash is not None:
                    self._refuse_duplicate(None, bsuid_hash, other_than=contact.id)
                changes["bsuid"] = [SECRET_MARK if contact.bsuid_hash is not None else None,
                                    SECRET_MARK if bsuid_hash is not None else None]
                contact.bsuid_hash, plain["bsuid"] = bsuid_hash, bsuid
                if contact.mobile_hash is None:
                    self._set(contact, changes, "country", bsuids.country_of(bsuid))
        for field, value in (("parent_bsuid", parent_bsuid), ("username", username), ("name", name)):
            if value is _KEEP:
                continue
            value = value or None
            if value != plain[field]:
                changes[field] = [SECRET_MARK if plain[field] else None, SECRET_MARK if value else None]
                plain[field] = value
                if field == "parent_bsuid":
                    contact.parent_bsuid_hash = self.bsuid_hash(value) if value else None
        if labels is not None:
            self._set(contact, changes, "labels", list(labels))
        if attributes is not None:
            self._set(contact, changes, "attributes", dict(attributes))
        if changes.keys() & SEALED.keys():
            self._seal(contact, plain)
        if changes:
            try:
                with self.db.begin_nested():
                    self.db.flush()
            except IntegrityError:
                self._refuse_duplicate(contact.mobile_hash, contact.bsuid_hash, other_than=contact.id)
                raise
            self._audit(contact, AuditAction.UPDATE, actor, changes)
            self._event(events.ContactUpdated(contact_id=contact.id, source=actor.source.value,
                                              changed=tuple(sorted(changes))))
        return changes

    def identify(self, identity: Identity, *, actor: Actor, create: bool = True,
                 before_merge: MergeHook | None = None) -> tuple[Contact | None, Contact | None]:
        """The vendor's contact for a WhatsApp user (found, linked, or created), and the duplicate it replaces.

        * Found by number or by BSUID: it gains what it lacked (the BSUID, the number, the parent
          BSUID) and the username from the profile when it changed; one audited update.
        * Found twice — a contact of the number and another of the BSUID, because the user first
          wrote with the number withheld: the **number's contact is kept** (campaigns, imports and
          the vendor's own records know it by number) and takes over the other: labels are joined,
          attributes it lacks are copied, the later ``last_inbound_at`` and an opt-out carry over
          (an opt-out is never lost). The BSUID contact is deleted, each side audited as a ``merge``
          naming the other. ``before_merge(kept, duplicate)`` runs first, while the duplicate
          still exists, so the caller re-points what it owns (the messages plugin: inbound messages
          and message rows; a foreign key's ON DELETE SET NULL would otherwise detach them). The
          deleted duplicate is returned too (its id still readable).
        * Not found: created with everything known (source: the actor's), unless ``create`` is false.
        """
        known = _KnownContacts()
        known.add(self._look_up([identity]))
        return self._identify(identity, known, actor=actor, create=create, before_merge=before_merge)

    def identify_many(self, identities: list[Identity], *, actor: Actor,
                      before_merge: MergeHook | None = None) -> list[Contact | None]:
        """:meth:`identify` for each of ``identities`` in turn (a webhook batch's senders), with one look-up for all.

        The senders' contacts are read with one query per 500 identities instead of one each;
        what an identity creates, links or merges is known to the identities after it, so a
        sender's second message in the batch finds the contact its first one created.
        """
        known = _KnownContacts()
        for start in range(0, len(identities), 500):
            known.add(self._look_up(identities[start:start + 500]))
        self._deferred_events = []  # the batch's ContactCreated/ContactUpdated, written with one INSERT at the end
        try:
            found = [self._identify(identity, known, actor=actor, create=True, before_merge=before_merge)[0]
                     for identity in identities]
            events.record_events(Outbox(self.db), self.vendor_id, self._deferred_events)
        finally:
            self._deferred_events = None
        return found

    def _look_up(self, identities: list[Identity]) -> list[Contact]:
        """The contacts holding any of these identities' numbers or BSUIDs (one query, each id on its own index)."""
        mobiles = {self.mobile_hash(i.phone.e164) for i in identities if i.phone is not None}
        bsuids_ = {self.bsuid_hash(i.bsuid) for i in identities if i.bsuid}
        either = [column.in_(sorted(values)) for column, values in ((Contact.mobile_hash, mobiles),
                                                                    (Contact.bsuid_hash, bsuids_)) if values]
        return list(self.db.scalars(select(Contact).where(or_(*either)))) if either else []

    def _identify(self, identity: Identity, known: _KnownContacts, *, actor: Actor, create: bool,
                  before_merge: MergeHook | None) -> tuple[Contact | None, Contact | None]:
        mobile_hash = self.mobile_hash(identity.phone.e164) if identity.phone is not None else None
        bsuid_hash = self.bsuid_hash(identity.bsuid) if identity.bsuid else None
        by_phone = known.by_mobile.get(mobile_hash) if mobile_hash is not None else None
        by_bsuid = known.by_bsuid.get(bsuid_hash) if bsuid_hash is not None else None
        duplicate = None
        if by_phone is not None and by_bsuid is not None and by_phone.id != by_bsuid.id:
            duplicate = by_bsuid
            if before_merge is not None:
                before_merge(by_phone, by_bsuid)
            self._absorb(by_phone, by_bsuid, actor=actor)
            known.forget(by_bsuid)
            by_bsuid = by_phone
        contact = by_phone or by_bsuid
        if contact is None:
            if not create:
                return None, None
            try:  # create() inserts in a savepoint of its own: a concurrent duplicate leaves this transaction whole
                contact = self.create(identity.phone, actor=actor, name=identity.name, bsuid=identity.bsuid,
                                      parent_bsuid=identity.parent_bsuid, username=identity.username, looked_up=True)
            except Conflict:  # created by a concurrent transaction since our look-up
                return self.identify(identity, actor=actor, create=False, before_merge=before_merge)
            known.add([contact])
            return contact, None
        fields: dict[str, Any] = {}
        if identity.phone is not None and contact.mobile_hash is None:
            fields["phone"] = identity.phone
        if bsuid_hash is not None and contact.bsuid_hash != bsuid_hash:
            fields["bsuid"] = identity.bsuid
        if identity.parent_bsuid and contact.parent_bsuid_hash != self.bsuid_hash(identity.parent_bsuid):
            fields["parent_bsuid"] = identity.parent_bsuid
        if identity.username and (contact.username_enc is None or self.decrypt_username(contact) != identity.username):
            fields["username"] = identity.username
        if fields:
            try:
                self.update(contact, actor=actor, **fields)
            except Conflict:
                # The BSUID belongs to a contact created concurrently; the next message links them.
                log.warning("contact %s: BSUID or number taken by another contact meanwhile; not linked", contact.id)
            known.add([contact])
        return contact, duplicate

    def link_bsuids(self, identities: list[Identity], *, actor: Actor) -> list[Identity]:
        """Give the contacts of these numbers the BSUIDs Meta pairs them with, set-based (a status batch's).

        For identities with both a number and a BSUID that no contact of this vendor has yet (the
        caller checked): the number's contacts without a BSUID take it in one UPDATE, with their
        audit rows and ``ContactUpdated`` events in one INSERT each. Returned, for
        :meth:`identify` one by one: the identities whose number's contact has another BSUID
        (rare: a number given to a new user). A number the vendor has no contact for is skipped:
        nothing is created, and nothing is looked up again per identity.
        """
        by_mobile = {self.mobile_hash(i.phone.e164): i for i in identities if i.phone is not None and i.bsuid}
        keys = sorted(by_mobile)
        linked: list[tuple[uuid.UUID, Identity]] = []
        leftovers: list[Identity] = []
        for start in range(0, len(keys), 500):
            for contact_id, mobile_hash, bsuid_hash in self.db.execute(
                    select(Contact.id, Contact.mobile_hash, Contact.bsuid_hash)
                    .where(Contact.mobile_hash.in_(keys[start:start + 500]))):
                identity = by_mobile[bytes(mobile_hash)]
                if bsuid_hash is None:
                    linked.append((contact_id, identity))
                else:
                    leftovers.append(identity)
        if not linked:
            return leftovers
        encrypt, now = self.cipher.encrypt, utcnow()
        table = Contact.__table__
        statement = (update(table).where(table.c.id == bindparam("contact"), table.c.vendor_id == self.vendor_id,
                                         table.c.bsuid_hash.is_(None))
                     .values(bsuid_hash=bindparam("bsuid_hash"), bsuid_enc=bindparam("bsuid_enc"),
                             parent_bsuid_hash=func.coalesce(bindparam("parent_hash"), table.c.parent_bsuid_hash),
                             parent_bsuid_enc=func.coalesce(bindparam("parent_enc"), table.c.parent_bsuid_enc),
                             username_enc=func.coalesce(bindparam("username_enc"), table.c.username_enc),
                             updated_at=now))
        sealed = []
        for contact_id, identity in linked:
            bsuid, parent, username = identity.bsuid or "", identity.parent_bsuid, identity.username
            sealed.append({"contact": contact_id, "bsuid_hash": self.bsuid_hash(bsuid),
                           "bsuid_enc": encrypt(bsuid, vendor_id=self.vendor_id, field="bsuid"),
                           "parent_hash": self.bsuid_hash(parent) if parent else None,
                           "parent_enc": encrypt(parent, vendor_id=self.vendor_id, field="parent_bsuid")
                           if parent else None,
                           "username_enc": encrypt(username, vendor_id=self.vendor_id, field="username")
                           if username else None})
        with tenancy.unscoped(self.db):
            self.db.execute(statement, sealed)
        # The parent BSUID and username are recorded as set when given (a value already there is kept).
        audited = [(contact_id, {"bsuid": [None, SECRET_MARK],
                                 **({"parent_bsuid": [None, SECRET_MARK]} if identity.parent_bsuid else {}),
                                 **({"username": [None, SECRET_MARK]} if identity.username else {})})
                   for contact_id, identity in linked]
        self.db.add_all([ContactAuditLog(vendor_id=self.vendor_id, contact_id=contact_id,
                                         action=AuditAction.UPDATE.value, source=actor.source.value,
                                         actor_user_id=actor.user_id, import_job_id=actor.import_job_id,
                                         changes=changes) for contact_id, changes in audited])
        self.db.flush()
        events.record_events(Outbox(self.db), self.vendor_id, [
            events.ContactUpdated(contact_id=contact_id, source=actor.source.value, changed=tuple(sorted(changes)))
            for contact_id, changes in audited])
        return leftovers

    def _absorb(self, kept: Contact, duplicate: Contact, *, actor: Actor) -> None:
        """Move ``duplicate`` (a BSUID-only contact) into ``kept`` (the number's), then delete it (see identify)."""
        plain = self._plain(duplicate)
        labels = list(dict.fromkeys([*(kept.labels or []), *(duplicate.labels or [])]))[:MAX_LABELS]
        attributes = {**(duplicate.attributes or {}), **(kept.attributes or {})}
        if duplicate.last_inbound_at is not None:
            kept.last_inbound_at = max(kept.last_inbound_at or duplicate.last_inbound_at, duplicate.last_inbound_at)
        self._audit(duplicate, AuditAction.MERGE, actor, {"merged_into": [None, str(kept.id)], **{
            key: [value, None] for key, value in contact_snapshot(duplicate).items()}})
        opted_out = duplicate.opted_out and not kept.opted_out
        # The BSUID is unique per vendor: the duplicate goes before the kept contact takes it.
        self.db.delete(duplicate)
        self.db.flush()
        changes = self.update(kept, actor=actor, bsuid=plain["bsuid"],
                              parent_bsuid=plain["parent_bsuid"] or _KEEP, username=plain["username"] or _KEEP,
                              name=_KEEP if kept.name_enc is not None or not plain["name"] else plain["name"],
                              labels=labels, attributes=attributes)
        self._audit(kept, AuditAction.MERGE, actor, {"merged_from": [str(duplicate.id), None],
                                                     **{key: value for key, value in changes.items()}})
        if opted_out:
            self.opt_out(kept, actor=actor)

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
        return self._opt_out_where(Contact.mobile_hash == self.mobile_hash(e164), actor)

    def opt_out_by_bsuid(self, bsuid: str, *, actor: Actor) -> Contact | None:
        """:meth:`opt_out_by_phone` for a sender known by BSUID (a username user whose number Meta withheld)."""
        return self._opt_out_where(Contact.bsuid_hash == self.bsuid_hash(bsuid), actor)

    def _opt_out_where(self, condition, actor: Actor) -> Contact | None:
        contact = self.db.scalars(select(Contact).where(condition).with_for_update()).first()
        if contact is not None:
            self.opt_out(contact, actor=actor)
        return contact

    def _event(self, event) -> None:
        """A domain event in this transaction (nothing is written when no installed plugin subscribes)."""
        if self._deferred_events is not None:
            self._deferred_events.append(event)
        else:
            events.record_event(Outbox(self.db), self.vendor_id, event)

    def _plain(self, contact: Contact) -> dict[str, str | None]:
        return {field: self._open(contact, field) for field in SEALED}

    def _seal(self, contact: Contact, plain: dict[str, str | None]) -> None:
        # Every encrypted field with the active key, always together, so enc_kid describes the whole row.
        encrypt = self.cipher.encrypt
        for field, column in SEALED.items():
            value = plain.get(field)
            setattr(contact, column, None if value is None else encrypt(value, vendor_id=self.vendor_id, field=field))
        contact.enc_kid = self.cipher.active_kid

    @staticmethod
    def _set(contact: Contact, changes: dict, field: str, value) -> None:
        before = getattr(contact, field)
        if before != value:
            changes[field] = [before, value]
            setattr(contact, field, value)

    def _refuse_duplicate(self, mobile_hash: bytes | None, bsuid_hash: bytes | None, *,
                          other_than: uuid.UUID | None = None) -> None:
        for column, value, what in ((Contact.mobile_hash, mobile_hash, "number"),
                                    (Contact.bsuid_hash, bsuid_hash, "BSUID")):
            if value is None:
                continue
            query = select(Contact.id).where(column == value)
            if other_than is not None:
                query = query.where(Contact.id != other_than)
            existing = self.db.scalars(query).first()
            if existing is not None:
                raise Conflict(f"this vendor already has a contact with that {what}: {existing}",
                               code="duplicate_contact", details={"contact_id": str(existing)})

    def _audit(self, contact: Contact, action: AuditAction, actor: Actor, changes: dict) -> None:
        self.db.add(ContactAuditLog(vendor_id=self.vendor_id, contact_id=contact.id, action=action.value,
                                    source=actor.source.value, actor_user_id=actor.user_id,
                                    import_job_id=actor.import_job_id, changes=changes))
