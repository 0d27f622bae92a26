"""Meta's ``messages`` webhooks for one vendor: delivery statuses and inbound messages.

Called by the webhook drainer through ``kloyst_webhook_changes`` (one transaction per vendor
and batch). Deliveries are at least once and out of order, so every write here is
idempotent:

* **Statuses** are applied by :mod:`.statuses`: recorded once per ``(wamid, status)``, moved
  forward only, adopted by the message they name when the sender has not recorded Meta's
  answer (so that message is never sent again), and counted when Meta accepted a message twice.
* **Inbound messages** are stored once per wamid, encrypted (field ``inbound.content``). The
  sender's contact is found by its number's keyed hash, or created (source ``webhook``, name
  from the WhatsApp profile); ``last_inbound_at`` opens the 24-hour customer-service
  window; a text that is an opt-out keyword (STOP, UNSUBSCRIBE, plus
  ``messages.opt_out_keywords``) opts the contact out.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import select

from kloyst.api import Conflict, events, Outbox, WebhookChange
from kloyst_plugins.contacts.api import InvalidPhone, normalize
from kloyst_plugins.contacts.api import Contact, ContactSource
from kloyst_plugins.contacts.api import Actor, ContactService
from kloyst_plugins.messages.models import InboundMessage
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
    for change in changes:
        if change.field != FIELD:
            continue
        for raw in change.value.get("statuses") or ():
            if (update := StatusUpdate.parse(raw, change.received_at)) is not None:
                statuses.append(update)
        if change.value.get("messages"):
            inbound.append(change)
    for start in range(0, len(statuses), CHUNK):
        apply_statuses(ctx, statuses[start:start + CHUNK])
    if inbound:
        keywords = BUILT_IN_OPT_OUT_KEYWORDS | ctx.settings["messages.opt_out_keywords"]
        for change in inbound:
            receive_messages(ctx, change, keywords)


# -- inbound messages --------------------------------------------------------------------------------------


def receive_messages(ctx, change: WebhookChange, keywords: frozenset[str]) -> None:
    """Store the change's inbound messages once each, find or create their senders, honour opt-outs."""
    db, vendor_id = ctx.db, ctx.vendor_id
    number = db.scalars(select(PhoneNumber)
                        .where(PhoneNumber.meta_phone_number_id == (change.meta_phone_number_id or ""))).first()
    if number is None:
        log.warning("inbound messages for phone number %s, which vendor %s does not hold, ignored",
                    change.meta_phone_number_id, vendor_id)
        return
    registry = ctx.registry
    cipher = registry["kloyst.cipher"]
    contacts = ContactService(db, vendor_id=vendor_id, cipher=cipher, hasher=registry["kloyst.mobile_hasher"])
    names = {str(c.get("wa_id")): (c.get("profile") or {}).get("name")
             for c in change.value.get("contacts") or () if isinstance(c, dict)}
    for message in change.value.get("messages") or ():
        if not isinstance(message, dict) or not message.get("id") or not message.get("from"):
            log.warning("inbound message without id or sender ignored (delivery %s)", change.delivery_id)
            continue
        wamid = str(message["id"])[:128]
        if db.scalar(select(InboundMessage.id).where(InboundMessage.wamid == wamid)) is not None:
            continue  # a replay
        sender = "+" + "".join(ch for ch in str(message["from"]) if ch.isdigit())
        sent_at = timestamp(message.get("timestamp"), change.received_at)
        contact, e164 = _sender_contact(contacts, sender, names.get(str(message["from"])))
        opt_out = _words(message) in keywords
        if contact is not None:
            contact.last_inbound_at = max(contact.last_inbound_at or sent_at, sent_at)
            if opt_out:
                contacts.opt_out(contact, actor=WEBHOOK_ACTOR)
        inbound = InboundMessage(
            vendor_id=vendor_id, wamid=wamid, phone_number_id=number.id,
            contact_id=contact.id if contact is not None else None, sender_hash=contacts.mobile_hash(e164),
            type=str(message.get("type") or "unknown")[:32],
            content_enc=cipher.encrypt(json.dumps(message, separators=(",", ":"), ensure_ascii=False),
                                       vendor_id=vendor_id, field=INBOUND_FIELD),
            enc_kid=cipher.active_kid, opt_out=opt_out, sent_at=sent_at)
        db.add(inbound)
        db.flush()
        events.record_event(Outbox(db), vendor_id, events.MessageReceived(
            inbound_id=inbound.id, wamid=wamid, phone_number_id=number.id, contact_id=inbound.contact_id,
            type=inbound.type, sent_at=sent_at, opt_out=opt_out, media_id=media_id_of(message)))


MEDIA_TYPES = frozenset({"image", "video", "audio", "document", "sticker"})


def media_id_of(message: dict) -> str | None:
    """Meta's id of the media an inbound message carries (image, video, audio, document, sticker), else None."""
    kind = message.get("type")
    if kind not in MEDIA_TYPES:
        return None
    media = message.get(kind)
    return str(media["id"])[:128] if isinstance(media, dict) and media.get("id") else None


def _sender_contact(contacts: ContactService, sender: str, name: str | None) -> tuple[Contact | None, str]:
    """The vendor's contact for ``sender`` (created if new) and the number as hashed; no contact for a bad number."""
    try:
        phone = normalize(sender)
    except InvalidPhone as exc:
        log.warning("inbound message from an invalid number (%s): stored without a contact", exc)
        return None, sender
    contact = contacts.find_by_phone(phone)
    if contact is None:
        try:
            contact = contacts.create(phone, actor=WEBHOOK_ACTOR, name=(name or "").strip()[:200] or None)
        except Conflict:  # created by a concurrent transaction since our lookup
            contact = contacts.find_by_phone(phone)
    return contact, phone.e164


def _words(message: dict) -> str:
    """What the customer wrote or tapped, trimmed and upper-case (for opt-out keywords)."""
    kind = message.get("type")
    said = None
    if kind == "text":
        said = (message.get("text") or {}).get("body")
    elif kind == "button":  # a template's quick-reply button ("Stop promotions")
        said = (message.get("button") or {}).get("text")
    return " ".join(str(said or "").split()).upper()

