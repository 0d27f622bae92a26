"""Meta's ``messages`` webhooks for one vendor: delivery statuses and inbound messages.

Called by the webhook drainer through ``kloyst_webhook_changes`` (one transaction per vendor
and batch). Deliveries are at least once and out of order, so every write here is
idempotent:

* **Statuses** are applied by :mod:`.statuses`: recorded once per ``(wamid, status)``, moved
  forward only, adopted by the message they name when the sender has not recorded Meta's
  answer (so that message is never sent again), and counted when Meta accepted a message twice.
* **Inbound messages** are stored once per wamid, encrypted (field ``inbound.content``). The
  sender's contact is found by its number's keyed hash or its BSUID's, or created (source
  ``webhook``, name and username from the WhatsApp profile); ``last_inbound_at`` opens the
  24-hour customer-service window; a text that is an opt-out keyword (STOP, UNSUBSCRIBE, plus
  ``messages.opt_out_keywords``) opts the contact out.

**WhatsApp usernames and BSUIDs.** Meta names the sender in ``contacts[]`` (``wa_id`` — the
number, only when Meta shares it —, ``user_id`` — the business-scoped user id, always —,
``parent_user_id``, ``profile.name``, ``profile.username``) and in the message (``from``, the
number when shared; ``from_user_id``, the BSUID). A user with a username may come with no number
at all: the contact is then found or created by its BSUID, the message's ``sender_hash`` is the
BSUID's keyed hash, and a STOP opts that contact out like any other. When a later message (or a
status, below) carries both the number and the BSUID, the contacts plugin links them
(``ContactService.identify``): the contact of the number gains the BSUID, or the BSUID's contact
gains the number; if both exist as separate contacts, the number's is kept and the other merged
into it and deleted — its inbound messages and messages are re-pointed here first.

**Statuses** carry ``contacts[]`` too (``wa_id`` and ``user_id``; none on failed statuses). Each
batch's BSUIDs are looked up in one query; only those no contact has yet are linked to the
contact of the number (no contact is created from a status: it is about a message Kloyst sent,
to a number or a contact it already knows).
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update

from kloyst.api import events, new_id, Outbox, WebhookChange
from kloyst_plugins.contacts.api import InvalidPhone, normalize
from kloyst_plugins.contacts.api import Contact, ContactSource
from kloyst_plugins.contacts.api import Actor, ContactService, Identity
from kloyst_plugins.contacts.api import clean_username, InvalidBsuid, normalize_bsuid
from kloyst_plugins.messages.models import InboundMessage, MessageLog
from kloyst_plugins.messages.statuses import CHUNK, StatusUpdate, apply_statuses, timestamp
from kloyst_plugins.waba.api import PhoneNumber

log = logging.getLogger(__name__)

FIELD = "messages"
INBOUND_FIELD = "inbound.content"
BUILT_IN_OPT_OUT_KEYWORDS = frozenset({"STOP", "UNSUBSCRIBE"})
WEBHOOK_ACTOR = Actor(ContactSource.WEBHOOK)


def parse_keywords(value: Any) -> frozenset[str]:
    """``messages.opt_out_keywords``: comma-separated words (a keyword may hold spaces), compared upper-case."""
    parts = value if isinstance(value, (list, tuple, set, frozenset)) else str(value or "").split(",")
    return frozenset(" ".join(str(part).split()).upper() for part in parts if str(part).strip())


def apply(changes: list[WebhookChange], ctx) -> None:
    """Apply the ``messages`` changes of one vendor (the ``kloyst_webhook_changes`` hook)."""
    statuses: list[StatusUpdate] = []
    inbound: list[WebhookChange] = []
    recipients: list[dict] = []  # the statuses' contacts[]: who each status's message went to
    for change in changes:
        if change.field != FIELD:
            continue
        for raw in change.value.get("statuses") or ():
            if (update := StatusUpdate.parse(raw, change.received_at)) is not None:
                statuses.append(update)
        if change.value.get("statuses"):
            recipients.extend(c for c in change.value.get("contacts") or () if isinstance(c, dict))
        if change.value.get("messages"):
            inbound.append(change)
    for start in range(0, len(statuses), CHUNK):
        apply_statuses(ctx, statuses[start:start + CHUNK])
    if recipients:
        link_status_contacts(ctx, recipients)
    if inbound:
        receive_messages(ctx, inbound, BUILT_IN_OPT_OUT_KEYWORDS | ctx.settings["messages.opt_out_keywords"])


# -- inbound messages --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Arrival:
    """One inbound message of a batch, checked: whose number it came to and who sent it."""

    change: WebhookChange
    number_id: uuid.UUID
    message: dict
    wamid: str
    identity: Identity | None


def receive_messages(ctx, changes: list[WebhookChange], keywords: frozenset[str]) -> None:
    """Store the batch's inbound messages once each, find or create their senders, honour opt-outs.

    Set-based, because a busy number's customers write hundreds of messages a second: the
    batch's numbers, replays and senders are each read with one query (per 500), new rows go in
    with one multi-row INSERT and their ``MessageReceived`` events with another. Only what is
    rare costs a statement per message: a sender's first message (its contact is created), a
    sender newly linked to a BSUID or username, an opt-out.
    """
    db, vendor_id = ctx.db, ctx.vendor_id
    arrivals = _arrivals(db, vendor_id, changes)
    if not arrivals:
        return
    registry = ctx.registry
    cipher = registry["kloyst.cipher"]
    contacts = ContactService(db, vendor_id=vendor_id, cipher=cipher, hasher=registry["kloyst.mobile_hasher"])
    senders = iter(contacts.identify_many([a.identity for a in arrivals if a.identity is not None],
                                          actor=WEBHOOK_ACTOR, before_merge=lambda kept, gone: repoint(db, kept, gone)))
    rows: list[InboundMessage] = []
    received: list[events.Event] = []
    for arrival in arrivals:
        message = arrival.message
        contact = next(senders) if arrival.identity is not None else None
        sent_at = timestamp(message.get("timestamp"), arrival.change.received_at)
        opt_out = _words(message) in keywords
        if contact is not None:
            contact.last_inbound_at = max(contact.last_inbound_at or sent_at, sent_at)
            if opt_out:
                contacts.opt_out(contact, actor=WEBHOOK_ACTOR)
        inbound = InboundMessage(
            id=new_id(), vendor_id=vendor_id, wamid=arrival.wamid, phone_number_id=arrival.number_id,
            contact_id=contact.id if contact is not None else None, sender_hash=_sender_hash(contacts, arrival),
            type=str(message.get("type") or "unknown")[:32],
            content_enc=cipher.encrypt(json.dumps(message, separators=(",", ":"), ensure_ascii=False),
                                       vendor_id=vendor_id, field=INBOUND_FIELD),
            enc_kid=cipher.active_kid, opt_out=opt_out, sent_at=sent_at)
        rows.append(inbound)
        received.append(events.MessageReceived(
            inbound_id=inbound.id, wamid=arrival.wamid, phone_number_id=arrival.number_id,
            contact_id=inbound.contact_id, type=inbound.type, sent_at=sent_at, opt_out=opt_out,
            media_id=media_id_of(message)))
    db.add_all(rows)
    db.flush()
    events.record_events(Outbox(db), vendor_id, received)


def _arrivals(db, vendor_id, changes: list[WebhookChange]) -> list[_Arrival]:
    """The changes' messages worth storing: to a number the vendor holds, with an id and a sender, not seen before."""
    meta_ids = sorted({change.meta_phone_number_id or "" for change in changes})
    numbers = dict(db.execute(select(PhoneNumber.meta_phone_number_id, PhoneNumber.id)
                              .where(PhoneNumber.meta_phone_number_id.in_(meta_ids))).all())
    arrivals: dict[str, _Arrival] = {}  # by wamid: a message twice in one batch is stored once
    for change in changes:
        number_id = numbers.get(change.meta_phone_number_id or "")
        if number_id is None:
            log.warning("inbound messages for phone number %s, which vendor %s does not hold, ignored",
                        change.meta_phone_number_id, vendor_id)
            continue
        entries = [c for c in change.value.get("contacts") or () if isinstance(c, dict)]
        for message in change.value.get("messages") or ():
            if not isinstance(message, dict) or not message.get("id") or not (
                    message.get("from") or message.get("from_user_id") or _only(entries, "user_id")):
                log.warning("inbound message without id or sender ignored (delivery %s)", change.delivery_id)
                continue
            wamid = str(message["id"])[:128]
            if wamid not in arrivals:
                arrivals[wamid] = _Arrival(change, number_id, message, wamid, _sender_identity(message, entries))
    wamids = sorted(arrivals)
    for start in range(0, len(wamids), 500):  # replays
        chunk = wamids[start:start + 500]
        for wamid in db.scalars(select(InboundMessage.wamid).where(InboundMessage.wamid.in_(chunk))):
            arrivals.pop(wamid, None)
    return list(arrivals.values())


MEDIA_TYPES = frozenset({"image", "video", "audio", "document", "sticker"})


def media_id_of(message: dict) -> str | None:
    """Meta's id of the media an inbound message carries (image, video, audio, document, sticker), else None."""
    kind = message.get("type")
    if kind not in MEDIA_TYPES:
        return None
    media = message.get(kind)
    return str(media["id"])[:128] if isinstance(media, dict) and media.get("id") else None


def _only(entries: list[dict], key: str):
    """``key`` of the change's one contact entry; None when there are several (then each message names its own)."""
    return entries[0].get(key) if len(entries) == 1 else None


def _entry_for(message: dict, entries: list[dict]) -> dict:
    """The ``contacts[]`` entry of the message's sender: by BSUID, else by number, else the only one."""
    user_id, wa_id = message.get("from_user_id"), message.get("from")
    for entry in entries:
        if (user_id and entry.get("user_id") == user_id) or (wa_id and str(entry.get("wa_id")) == str(wa_id)):
            return entry
    return entries[0] if len(entries) == 1 else {}


def identity_of(wa_id, user_id, parent_user_id, profile) -> Identity | None:
    """A WhatsApp user as Meta names them, checked: a bad number or BSUID is left out (logged); None if none is left."""
    phone = bsuid = parent = None
    if wa_id:
        try:
            phone = normalize("+" + "".join(ch for ch in str(wa_id) if ch.isdigit()))
        except InvalidPhone as exc:
            log.warning("WhatsApp user with an invalid number (%s): known by its BSUID only, if any", exc)
    if user_id:
        try:
            bsuid = normalize_bsuid(str(user_id))
        except InvalidBsuid:
            log.warning("WhatsApp user with a malformed business-scoped user id; ignored")
    if parent_user_id:
        try:
            parent = normalize_bsuid(str(parent_user_id), parent=True)
        except InvalidBsuid:
            log.warning("WhatsApp user with a malformed parent business-scoped user id; ignored")
    if phone is None and bsuid is None:
        return None
    profile = profile if isinstance(profile, dict) else {}
    name = (str(profile.get("name") or "")).strip()[:200] or None
    return Identity(phone=phone, bsuid=bsuid, parent_bsuid=parent, username=clean_username(profile.get("username")),
                    name=name)


def _sender_identity(message: dict, entries: list[dict]) -> Identity | None:
    """Who sent ``message``, as Meta names them in it and in its change's ``contacts[]``; None without a valid id."""
    entry = _entry_for(message, entries)
    identity = identity_of(message.get("from") or entry.get("wa_id"), message.get("from_user_id") or
                           entry.get("user_id"), message.get("from_parent_user_id") or entry.get("parent_user_id"),
                           entry.get("profile"))
    if identity is None:
        log.warning("inbound message from a sender with neither a valid number nor a BSUID: stored without a contact")
    return identity


def _sender_hash(contacts: ContactService, arrival: _Arrival) -> bytes:
    """The sender's keyed hash: its number's when known, else its BSUID's (else the raw ``from``'s)."""
    identity = arrival.identity
    if identity is None:
        return contacts.mobile_hash("+" + "".join(ch for ch in str(arrival.message.get("from") or "") if ch.isdigit()))
    if identity.phone is not None:
        return contacts.mobile_hash(identity.phone.e164)
    return contacts.bsuid_hash(identity.bsuid or "")


def repoint(db, kept: Contact, gone: Contact) -> None:
    """Before the contacts plugin merges ``gone`` into ``kept``: their messages follow (set-based, two statements)."""
    for model in (InboundMessage, MessageLog):
        db.execute(update(model).where(model.contact_id == gone.id).values(contact_id=kept.id)
                   .execution_options(synchronize_session=False))


def link_status_contacts(ctx, entries: list[dict]) -> None:
    """Give the contacts of the numbers these statuses went to the BSUIDs Meta reports for them.

    One look-up of the batch's BSUIDs; those no contact has yet are linked set-based to their
    numbers' contacts (``ContactService.link_bsuids``: one look-up, one UPDATE, one audit INSERT),
    so a campaign's first statuses after Meta began sending BSUIDs cost no query per status. Only a
    number whose contact has another BSUID goes through ``identify`` alone. No contact is created
    from a status, and a number the vendor has no contact for costs nothing more.
    """
    contacts = ContactService(ctx.db, vendor_id=ctx.vendor_id, cipher=ctx.registry["kloyst.cipher"],
                              hasher=ctx.registry["kloyst.mobile_hasher"])
    unknown: dict[bytes, Identity] = {}
    for entry in entries:
        if not entry.get("user_id"):
            continue
        profile = entry.get("profile")
        profile = profile if isinstance(profile, dict) else {}
        identity = identity_of(entry.get("wa_id"), entry.get("user_id"), entry.get("parent_user_id"),
                               {"username": entry.get("username") or profile.get("username")})
        if identity is not None and identity.bsuid and identity.phone is not None:
            unknown.setdefault(contacts.bsuid_hash(identity.bsuid), identity)
    if not unknown:
        return
    hashes = sorted(unknown)
    for start in range(0, len(hashes), 500):
        batch = hashes[start:start + 500]
        for known in ctx.db.scalars(select(Contact.bsuid_hash).where(Contact.bsuid_hash.in_(batch))):
            unknown.pop(bytes(known), None)
    for identity in contacts.link_bsuids([unknown[h] for h in sorted(unknown)], actor=WEBHOOK_ACTOR):
        contacts.identify(identity, actor=WEBHOOK_ACTOR, create=False,
                          before_merge=lambda kept, gone: repoint(ctx.db, kept, gone))


def _words(message: dict) -> str:
    """What the customer wrote or tapped, trimmed and upper-case (for opt-out keywords)."""
    kind = message.get("type")
    said = None
    if kind == "text":
        said = (message.get("text") or {}).get("body")
    elif kind == "button":  # a template's quick-reply button ("Stop promotions")
        said = (message.get("button") or {}).get("text")
    return " ".join(str(said or "").split()).upper()

