"""Reading the inbox: the conversation list with its filters, a thread, and how both are answered.

**Pages cost the page, not the vendor's volume.** The list is ordered by ``(last_message_at, id)``,
newest first, with an opaque cursor of the last row's pair, on ``ix_conversation_recent`` (or
``ix_conversation_unread`` / ``ix_conversation_assignee`` when those filters are given); the
open-window filter adds ``last_message_at > now − 24 h``, which every open conversation satisfies
(its customer wrote in the last 24 hours), so that scan stops at the window's edge. A page then reads
its conversations' last messages by primary key to show a preview: at most one row per conversation.
A thread page is two bounded index scans (``messages.api.thread_page``).

Content is decrypted for the vendor here, when it is answered: an inbound message as the object
Meta delivered, an outbound one as the payload sent (its type's object — for a template, its name,
language and parameters). The address (``to``/``recipient``) is left out: it is the contact's.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from typing import Any

from sqlalchemy import exists, func, literal, or_, select, tuple_, type_coerce
from sqlalchemy.dialects.postgresql import JSONB

from kloyst.api import classify, Unprocessable
from kloyst_plugins.conversations.models import INBOUND, Conversation
from kloyst_plugins.conversations.schemas import ConversationListQuery
from kloyst_plugins.conversations.services import WINDOW, window_expires_at, window_open
from kloyst_plugins.media.api import media_for_inbound, media_json
from kloyst_plugins.messages.api import (
    inbound_by_ids,
    messages_by_ids,
    open_inbound,
    open_outbound,
    thread_page,
    ThreadItem,
)

PREVIEW_LENGTH = 120
_ADDRESS = frozenset({"messaging_product", "recipient_type", "to", "recipient", "biz_opaque_callback_data"})
# Who sent an inbound message is the conversation's contact: its identifiers are not repeated per message.
_SENDER = frozenset({"from", "from_user_id", "from_parent_user_id", "id", "timestamp"})


def encode_cursor(at: dt.datetime, ident: uuid.UUID) -> str:
    raw = json.dumps([at.isoformat(), str(ident)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, ident = json.loads(raw)
        when = dt.datetime.fromisoformat(at)
        return (when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)), uuid.UUID(ident)
    except (ValueError, TypeError) as exc:
        raise Unprocessable("the cursor is not valid; use next_cursor from the previous page",
                            code="invalid_cursor", field="cursor") from exc


def has_label(label: str, dialect: str):
    if dialect == "postgresql":
        return type_coerce(Conversation.labels, JSONB).contains([label])
    element = func.json_each(Conversation.labels).table_valued("value")
    return exists(select(literal(1)).select_from(element).where(element.c.value == label))


def list_conversations(db, query: ConversationListQuery, *, user_id: uuid.UUID | None,
                       now: dt.datetime) -> tuple[list[Conversation], str | None]:
    """One page of the inbox (tenant scoping adds the vendor)."""
    where = []
    if query.unread is not None:
        where.append(Conversation.unread_count > 0 if query.unread else Conversation.unread_count == 0)
    if query.window_open is not None:
        cutoff = now - WINDOW
        if query.window_open:
            where += [Conversation.last_inbound_at > cutoff, Conversation.last_message_at > cutoff]
        else:
            where.append(or_(Conversation.last_inbound_at.is_(None), Conversation.last_inbound_at <= cutoff))
    if query.assigned_to_me:
        where.append(Conversation.assignee_user_id == user_id)
    if query.assignee == "none":
        where.append(Conversation.assignee_user_id.is_(None))
    elif query.assignee is not None:
        where.append(Conversation.assignee_user_id == query.assignee)
    if query.label:
        where.append(has_label(query.label, db.get_bind().dialect.name))
    if query.phone_number_id:
        where.append(Conversation.phone_number_id == query.phone_number_id)
    if query.contact_id:
        where.append(Conversation.contact_id == query.contact_id)
    if query.cursor:
        at, ident = decode_cursor(query.cursor)
        # A row-value comparison: the cursor is part of the index condition, so a deep page starts at it.
        where.append(tuple_(Conversation.last_message_at, Conversation.id) < tuple_(at, ident))
    rows = list(db.scalars(select(Conversation).where(*where)
                           .order_by(Conversation.last_message_at.desc(), Conversation.id.desc())
                           .limit(query.limit + 1)))
    next_cursor = None
    if len(rows) > query.limit:
        rows = rows[:query.limit]
        next_cursor = encode_cursor(rows[-1].last_message_at, rows[-1].id)
    return rows, next_cursor


def conversations_json(db, cipher, conversations: list[Conversation], now: dt.datetime) -> list[dict]:
    """The conversations as answered, their last messages read in two primary-key look-ups."""
    inbound_ids = [c.last_message_id for c in conversations
                   if c.last_message_id is not None and c.last_message_direction == INBOUND]
    outbound_ids = [c.last_message_id for c in conversations
                    if c.last_message_id is not None and c.last_message_direction != INBOUND]
    inbound, outbound = inbound_by_ids(db, inbound_ids), messages_by_ids(db, outbound_ids)
    answers = []
    for conversation in conversations:
        row = (inbound if conversation.last_message_direction == INBOUND else outbound).get(
            conversation.last_message_id) if conversation.last_message_id is not None else None
        last = None
        if row is not None:
            item = ThreadItem(conversation.last_message_direction or INBOUND,
                              conversation.last_message_at, row.id, row)
            shown = thread_item_json(cipher, item)
            last = {"id": row.id, "direction": item.direction, "at": item.at, "type": shown["type"],
                    "preview": preview(shown), "status": shown["status"]}
        answers.append(conversation_json(conversation, now, last))
    return answers


def conversation_json(conversation: Conversation, now: dt.datetime, last: dict | None) -> dict:
    return {"id": conversation.id, "contact_id": conversation.contact_id,
            "phone_number_id": conversation.phone_number_id, "last_message": last,
            "last_message_at": conversation.last_message_at, "last_inbound_at": conversation.last_inbound_at,
            "unread_count": conversation.unread_count,
            "window": {"open": window_open(conversation.last_inbound_at, now),
                       "expires_at": window_expires_at(conversation.last_inbound_at)},
            "assignee_user_id": conversation.assignee_user_id, "labels": conversation.labels or [],
            "created_at": conversation.created_at, "updated_at": conversation.updated_at}


def thread(db, cipher, conversation: Conversation, *, cursor: str | None, limit: int,
           newest_first: bool) -> tuple[list[dict], str | None]:
    after = decode_cursor(cursor) if cursor else None
    items = thread_page(db, contact_id=conversation.contact_id, phone_number_id=conversation.phone_number_id,
                        after=after, limit=limit + 1, newest_first=newest_first)
    next_cursor = None
    if len(items) > limit:
        items = items[:limit]
        next_cursor = encode_cursor(items[-1].at, items[-1].id)
    # The media plugin's copies of the page's inbound media: one query.
    media = media_for_inbound(db, conversation.vendor_id, [i.id for i in items if i.direction == INBOUND])
    return [thread_item_json(cipher, item, media.get(item.id)) for item in items], next_cursor


def thread_item_json(cipher, item: ThreadItem, media=None) -> dict[str, Any]:
    row = item.row
    if item.direction == INBOUND:
        message = open_inbound(cipher, row)
        body = {k: v for k, v in message.items() if k not in _SENDER}
        return {"id": row.id, "direction": item.direction, "at": item.at, "type": row.type, "content": body,
                "template": None, "wamid": row.wamid, "status": None, "error": None, "sent_at": row.sent_at,
                "delivered_at": None, "read_at": None, "failed_at": None, "campaign_id": None,
                "media": media_json(media) if media is not None else None}
    payload = open_outbound(cipher, row)
    error = None
    if row.error_code is not None or row.error_message:
        error = {"code": row.error_code, "subcode": row.error_subcode,
                 "title": classify(row.error_code).reason if row.error_code is not None else None,
                 "message": row.error_message}
    return {"id": row.id, "direction": item.direction, "at": item.at, "type": str(payload.get("type", "template")),
            "content": {k: v for k, v in payload.items() if k not in _ADDRESS}, "template": row.template_name,
            "wamid": row.wamid, "status": row.status, "error": error, "sent_at": row.sent_at,
            "delivered_at": row.delivered_at, "read_at": row.read_at, "failed_at": row.failed_at,
            "campaign_id": row.campaign_id, "media": None}


def preview(shown: dict[str, Any]) -> str:
    """A line of the message for the inbox: its text, else what it is (``[image] caption``, ``[template name]``)."""
    kind, content = shown["type"], shown["content"]
    part = content.get(kind) if isinstance(content, dict) else None
    text = None
    if kind == "text" and isinstance(part, dict):
        text = part.get("body")
    elif kind == "template":
        return f"[template {shown['template'] or (part or {}).get('name', '')}]"[:PREVIEW_LENGTH]
    elif kind == "interactive" and isinstance(part, dict):
        chosen = part.get("button_reply") or part.get("list_reply")  # a customer's tap
        text = (chosen or {}).get("title") or (part.get("body") or {}).get("text")
    elif kind == "button" and isinstance(part, dict):
        text = part.get("text")
    elif isinstance(part, dict):
        text = f"[{kind}] {part.get('caption') or part.get('name') or ''}".strip()
    else:
        text = f"[{kind}]"
    return " ".join(str(text or "").split())[:PREVIEW_LENGTH]
