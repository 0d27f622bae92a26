"""Free-form messages (replies in a conversation), and one conversation's messages read back in order.

**Queueing a reply** (:func:`queue_reply`): a reply is a ``message_log`` row like a template send, so it
goes through the same sender, retries, statuses and dead letters; the payload is Meta's message object
as the caller built it (text, media, location, contacts, interactive), addressed with ``to`` (the
contact's number) or, for a customer known only by a business-scoped user id, ``recipient``. A reply is
a *service* message: free inside the customer-service window, so it carries no price and no wallet
hold (``category = "service"``), and settlement never hears of it. The rules that decide whether a
reply may be sent at all — the window, opt-outs, the number — are the caller's (the conversations
plugin); this module owns the row.

Idempotency is the template send's (:mod:`.services`): the same ``Idempotency-Key`` and body answer
with the message already queued, another body is a 422, and two concurrent requests meet at the
unique ``(vendor_id, idempotency_key)``.

**Reading a thread** (:func:`thread_page`): a contact's messages on one number, both directions,
newest or oldest first, by ``(time, id)`` cursor. Outbound messages are read through
``ix_message_log_thread`` (``contact_id, phone_number_id, created_at, id``), inbound ones through
``ix_inbound_message_thread`` (``…, sent_at, id``): each page is two bounded index range scans
merged, whatever the vendor's volume.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kloyst.api import FieldCipher, new_id, Unprocessable, utcnow
from kloyst_plugins.messages import content, dispatch
from kloyst_plugins.messages.models import STATUS_RANK, InboundMessage, MessageLog, MessageStatus
from kloyst_plugins.messages.services import Idempotency, Queued

SERVICE = "service"  # the category of a free-form message: Meta's "service" conversation, free in the window
INBOUND = "inbound"
OUTBOUND = "outbound"


@dataclass(frozen=True)
class Reply:
    """One free-form message to one contact, from one of the vendor's numbers (already checked by the caller)."""

    phone_number_id: uuid.UUID
    contact_id: uuid.UUID
    recipient_hash: bytes  # the contact's keyed hash (as contacts stores it)
    country: str | None
    type: str  # Meta's message type: text, image, video, audio, document, sticker, location, contacts, interactive
    body: Any  # the object Meta takes under ``type`` (a list for contacts)
    to: str | None = None  # +E.164, when the contact's number is known
    bsuid: str | None = None  # Meta's business-scoped user id, used when no number is known


def reply_payload(reply: Reply, message_id: uuid.UUID) -> dict[str, Any]:
    """Meta's send body for ``reply``; the message id travels back in status webhooks."""
    if reply.to is None and reply.bsuid is None:
        raise ValueError("a reply needs a number (to) or a business-scoped user id (bsuid)")
    payload: dict[str, Any] = {"messaging_product": "whatsapp", "recipient_type": "individual"}
    if reply.to is not None:
        payload["to"] = reply.to
    else:
        payload["recipient"] = reply.bsuid
    payload["type"] = reply.type
    payload[reply.type] = reply.body
    payload["biz_opaque_callback_data"] = str(message_id)
    return payload


def replayed(db: Session, idempotency: Idempotency | None) -> Queued | None:
    """The message an earlier request with this key queued, if any (a 422 if that request had another body)."""
    if idempotency is None:
        return None
    earlier = db.scalars(select(MessageLog).where(MessageLog.idempotency_key == idempotency.key)).one_or_none()
    if earlier is None:
        return None
    if earlier.request_hash != idempotency.request_hash:
        raise Unprocessable("Idempotency-Key reused with different parameters: a key names one request; "
                            "send a new key for a different message", code="idempotency_key_reused",
                            field="Idempotency-Key", details={"message_id": str(earlier.id)})
    return Queued(earlier, replayed=True)


def queue_reply(db: Session, cipher: FieldCipher, vendor_id: uuid.UUID, reply: Reply, *,
                idempotency: Idempotency | None = None) -> Queued:
    """Queue ``reply`` (QUEUED, sealed, no price, no hold) with its doorbell, in ``db``'s transaction.

    A key already used answers with its message (see :func:`replayed`), including when the concurrent
    request that used it commits first.
    """
    if (earlier := replayed(db, idempotency)) is not None:
        return earlier
    message_id = new_id()
    content_enc, enc_kid = content.seal_content(cipher, vendor_id, reply_payload(reply, message_id))
    message = MessageLog(
        id=message_id, vendor_id=vendor_id, phone_number_id=reply.phone_number_id, contact_id=reply.contact_id,
        category=SERVICE, recipient_hash=reply.recipient_hash, country=reply.country, content_enc=content_enc,
        enc_kid=enc_kid, status=MessageStatus.QUEUED.value, status_rank=STATUS_RANK[MessageStatus.QUEUED],
        next_attempt_at=utcnow(), idempotency_key=idempotency.key if idempotency else None,
        request_hash=idempotency.request_hash if idempotency else None, price_micros=None, hold_id=None)
    try:
        with db.begin_nested():
            db.add(message)
            db.flush()
    except IntegrityError:
        winner = replayed(db, idempotency)
        if winner is None:
            raise
        return winner
    dispatch.notify_queued(db, vendor_id, [reply.phone_number_id])
    return Queued(message, replayed=False)


# -- one conversation's messages ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThreadItem:
    direction: str  # INBOUND or OUTBOUND
    at: dt.datetime  # inbound: when the customer sent it (Meta's timestamp); outbound: when it was queued
    id: uuid.UUID
    row: Any  # InboundMessage or MessageLog


def thread_page(db: Session, *, contact_id: uuid.UUID, phone_number_id: uuid.UUID,
                after: tuple[dt.datetime, uuid.UUID] | None, limit: int, newest_first: bool = True) -> list[ThreadItem]:
    """Up to ``limit`` messages of the thread past the cursor ``after`` (exclusive), in the order asked.

    Each direction is one index range scan of at most ``limit`` rows; the merge keeps the first
    ``limit`` of both. The session's tenant scope keeps another vendor's rows out.
    """
    outbound = _scan(db, MessageLog, MessageLog.created_at, contact_id, phone_number_id, after, limit, newest_first)
    inbound = _scan(db, InboundMessage, InboundMessage.sent_at, contact_id, phone_number_id, after, limit,
                    newest_first)
    items = [ThreadItem(OUTBOUND, m.created_at, m.id, m) for m in outbound]
    items += [ThreadItem(INBOUND, m.sent_at, m.id, m) for m in inbound]
    items.sort(key=lambda item: (item.at, item.id), reverse=newest_first)
    return items[:limit]


def _scan(db, model, at, contact_id, phone_number_id, after, limit, newest_first):
    query = select(model).where(model.contact_id == contact_id, model.phone_number_id == phone_number_id)
    if after is not None:
        # A row-value comparison, so that the cursor is part of the index condition: a page deep in a long
        # thread starts at the cursor instead of scanning from the newest message to it.
        position, cursor = tuple_(at, model.id), tuple_(*after)
        query = query.where(position < cursor if newest_first else position > cursor)
    order = (at.desc(), model.id.desc()) if newest_first else (at.asc(), model.id.asc())
    return list(db.scalars(query.order_by(*order).limit(limit)))


def latest_inbound(db: Session, contact_id: uuid.UUID, phone_number_id: uuid.UUID) -> InboundMessage | None:
    """The contact's last message to this number (by Meta's timestamp): what opens the window, what a read
    receipt names."""
    return db.scalars(select(InboundMessage)
                      .where(InboundMessage.contact_id == contact_id, InboundMessage.phone_number_id == phone_number_id)
                      .order_by(InboundMessage.sent_at.desc(), InboundMessage.id.desc()).limit(1)).first()


def count_inbound_since(db: Session, contact_id: uuid.UUID, phone_number_id: uuid.UUID,
                        since: dt.datetime | None, *, cap: int) -> int:
    """How many of the contact's messages to this number were sent after ``since`` (all if None), at most ``cap``.

    Capped so that a customer who wrote ten thousand times costs a bounded scan per message received.
    """
    query = select(InboundMessage.id).where(InboundMessage.contact_id == contact_id,
                                            InboundMessage.phone_number_id == phone_number_id)
    if since is not None:
        query = query.where(InboundMessage.sent_at > since)
    return db.scalar(select(func.count()).select_from(query.limit(cap).subquery())) or 0


def inbound_by_ids(db: Session, ids) -> dict[uuid.UUID, InboundMessage]:
    ids = list(ids)
    return {m.id: m for m in db.scalars(select(InboundMessage).where(InboundMessage.id.in_(ids)))} if ids else {}


def messages_by_ids(db: Session, ids) -> dict[uuid.UUID, MessageLog]:
    ids = list(ids)
    return {m.id: m for m in db.scalars(select(MessageLog).where(MessageLog.id.in_(ids)))} if ids else {}


def open_outbound(cipher: FieldCipher, message: MessageLog) -> dict[str, Any]:
    """The payload sent (or to be sent) to Meta, decrypted for its vendor."""
    return content.open_content(cipher, message.vendor_id, message.content_enc)
