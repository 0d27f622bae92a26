"""Meta's ``messages`` webhooks for one vendor: delivery statuses and inbound messages.

Called by the webhook drainer through ``kloyst_webhook_changes`` (one transaction per vendor
and batch). Deliveries are at least once and out of order, so every write here is
idempotent:

* **Statuses.** Each ``(wamid, status)`` is inserted once into ``message_status_event``
  (``ON CONFLICT DO NOTHING … RETURNING``); only statuses new there touch ``message_log``, so a
  replay is a no-op. ``message_log`` moves **monotonically** by ``status_rank`` (SENT 2 <
  DELIVERED 3 < READ 4): a ``delivered`` after ``read`` changes nothing, a ``delivered``
  before its ``sent`` ends DELIVERED. On PostgreSQL a batch is one ``UPDATE … FROM
  unnest(…)`` per 1,000 statuses; SQLite updates row by row. ``failed`` marks the message
  FAILED (rank 5) only while Meta has not delivered it, with one ``dead_letter`` row.
* **The crash window.** The sender puts the message id in ``biz_opaque_callback_data``. A
  status for a wamid no message carries, naming message M there, means Meta accepted a call
  Kloyst has no answer for: if M waits to be sent again (QUEUED, no wamid), it adopts the
  wamid — and is not sent again; if M's send is in flight, the delivery waits
  (:class:`~kloyst.webhooks.RetryLater`) until the sender records its answer; otherwise M went
  twice, counted once per wamid (``duplicate_send``).
* **Inbound messages** are stored once per wamid, encrypted (field ``inbound.content``). The
  sender's contact is found by its number's keyed hash, or created (source ``webhook``, name
  from the WhatsApp profile); ``last_inbound_at`` opens the 24-hour customer-service
  window; a text that is an opt-out keyword (STOP, UNSUBSCRIBE, plus
  ``messages.opt_out_keywords``) opts the contact out.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Uuid, bindparam, select, text

from kloyst import metrics as kmetrics
from kloyst.db import tenancy, utcnow
from kloyst.db.base import UTCDateTime
from kloyst.errors import Conflict
from kloyst.meta.errors import classify
from kloyst.metrics.definitions import META_STATUSES
from kloyst.webhooks import RetryLater, WebhookChange, insert_skipping_conflicts
from kloyst_plugins.contacts import phones
from kloyst_plugins.contacts.models import Contact, ContactSource
from kloyst_plugins.contacts.services import Actor, ContactService
from kloyst_plugins.messages import settlement
from kloyst_plugins.messages.models import (STATUS_RANK, DeadLetter, InboundMessage, MessageLog, MessageStatus,
                                            MessageStatusEvent)
from kloyst_plugins.waba.models import PhoneNumber

log = logging.getLogger(__name__)

FIELD = "messages"
INBOUND_FIELD = "inbound.content"
BUILT_IN_OPT_OUT_KEYWORDS = frozenset({"STOP", "UNSUBSCRIBE"})
CHUNK = 1000  # statuses per statement
WEBHOOK_ACTOR = Actor(ContactSource.WEBHOOK)
# Meta's word → the message status it moves to; other statuses (played, deleted…) are recorded only.
ADVANCING = {"SENT": MessageStatus.SENT, "DELIVERED": MessageStatus.DELIVERED, "READ": MessageStatus.READ}
FAILED = MessageStatus.FAILED.value


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


# -- statuses ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusUpdate:
    wamid: str
    status: str  # upper case: SENT, DELIVERED, READ, FAILED, or another word of Meta's
    at: dt.datetime
    message_ref: uuid.UUID | None  # biz_opaque_callback_data: the message id the sender put there
    error: dict | None
    pricing_category: str | None
    billable: bool | None

    @classmethod
    def parse(cls, raw: Any, received_at: dt.datetime) -> StatusUpdate | None:
        if not isinstance(raw, dict) or not raw.get("id") or not raw.get("status"):
            log.warning("status without id or status ignored: %r", raw)
            return None
        errors = raw.get("errors")
        pricing = raw.get("pricing") if isinstance(raw.get("pricing"), dict) else {}
        billable = pricing.get("billable")
        if not isinstance(billable, bool):  # deprecated under per-message pricing: "regular" messages are billed
            billable = pricing["type"] == "regular" if "type" in pricing else None
        category = pricing.get("category")
        return cls(wamid=str(raw["id"])[:128], status=str(raw["status"]).upper()[:16],
                   at=_timestamp(raw.get("timestamp"), received_at),
                   message_ref=_uuid(raw.get("biz_opaque_callback_data")),
                   error=errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else None,
                   pricing_category=str(category)[:32] if category else None, billable=billable)

    @property
    def error_code(self) -> int | None:
        code = (self.error or {}).get("code")
        return code if isinstance(code, int) else None


def apply_statuses(ctx, updates: list[StatusUpdate]) -> None:
    """Record up to :data:`CHUNK` statuses and move their messages forward; see the module docstring."""
    db, vendor_id = ctx.db, ctx.vendor_id
    wamids = list(dict.fromkeys(u.wamid for u in updates))
    ours: dict[str, uuid.UUID] = dict(db.execute(select(MessageLog.wamid, MessageLog.id)
                                                 .where(MessageLog.wamid.in_(wamids))).all())
    settled: list[settlement.SettledMessage] = []
    others = _match_unknown_wamids(db, updates, ours, settled)
    new = _record_events(db, vendor_id, updates, {**others, **ours})
    if others:
        from kloyst_plugins.messages.outcomes import count_duplicate

        for wamid in sorted({u.wamid for u in new if u.wamid in others}):
            count_duplicate(db, vendor_id, others[wamid], wamid, "webhook")
    _advance(db, vendor_id, [u for u in new if u.wamid in ours and u.status in ADVANCING])
    for update in new:
        if update.wamid in ours and update.status == FAILED:
            _fail(db, vendor_id, update, settled)
    settlement.report(ctx.plugin_manager, db.connection(), settled)
    _count_after_commit(ctx, [u for u in new if u.wamid in ours])


def _count_after_commit(ctx, reported: list[StatusUpdate]) -> None:
    """``kloyst_message_status_total{source="webhook"}``: each of our messages and status once, once committed.

    Only with a transaction to wait for: a context without one (a test applying statuses on its own
    session) counts nothing rather than counting what may roll back.
    """
    transaction_manager = getattr(ctx, "tm", None)
    if not reported or transaction_manager is None:
        return
    counts = collections.Counter(
        (ctx.vendor_id, status if status in META_STATUSES else "other")
        for status in (u.status.lower() for u in reported))
    metrics = kmetrics.of(ctx.registry)
    kmetrics.after_commit(transaction_manager, lambda: metrics.messages_reached(counts, kmetrics.WEBHOOK))


def _match_unknown_wamids(db, updates: list[StatusUpdate], ours: dict[str, uuid.UUID],
                          settled: list) -> dict[str, uuid.UUID]:
    """Statuses for wamids no message carries, whose opaque data names one of ours: adopt, wait, or a duplicate.

    Adopted wamids join ``ours``; the returned ``{wamid: message id}`` are second sends.
    The message row is locked first, so the sender cannot claim it meanwhile.
    """
    others: dict[str, uuid.UUID] = {}
    for update in updates:
        if update.wamid in ours or update.wamid in others or update.message_ref is None:
            continue
        message = db.scalars(select(MessageLog).where(MessageLog.id == update.message_ref).with_for_update()).first()
        if message is None:
            continue
        if message.wamid is None and message.status == MessageStatus.QUEUED.value:
            # Its lease ran out after Meta accepted the call: this wamid is its send; do not send it again.
            message.wamid, message.status = update.wamid, MessageStatus.SENT.value
            message.status_rank, message.sent_at = STATUS_RANK[MessageStatus.SENT], update.at
            db.flush()
            ours[update.wamid] = message.id
            settled.extend(settlement.settled_from_rows(
                [(message.id, message.vendor_id, message.campaign_id, message.hold_id, message.price_micros)],
                settlement.SENT))
            log.warning("message %s adopted wamid %s from a status webhook (its send had reached Meta)",
                        message.id, update.wamid)
        elif message.wamid is None and message.status == MessageStatus.SENDING.value:
            raise RetryLater(f"message {message.id} is being sent; its status {update.wamid} waits for the answer")
        else:
            others[update.wamid] = message.id
    return others


def _record_events(db, vendor_id: uuid.UUID, updates: list[StatusUpdate],
                   messages: dict[str, uuid.UUID]) -> list[StatusUpdate]:
    """Insert each ``(wamid, status)`` once; return the updates that were new (first occurrence each)."""
    table = MessageStatusEvent.__table__
    now = utcnow()
    first: dict[tuple[str, str], StatusUpdate] = {}
    for update in updates:
        first.setdefault((update.wamid, update.status), update)
    rows = [{"vendor_id": vendor_id, "message_id": messages.get(u.wamid), "wamid": u.wamid, "status": u.status,
             "occurred_at": u.at, "error_code": u.error_code, "pricing_category": u.pricing_category,
             "received_at": now} for u in first.values()]
    statement = tenancy.caller_scoped(  # every row names the vendor
        insert_skipping_conflicts(db, table).on_conflict_do_nothing(index_elements=["wamid", "status"])
        .returning(table.c.wamid, table.c.status))
    inserted = {(wamid, status) for wamid, status in db.execute(statement, rows)}
    return [update for key, update in first.items() if key in inserted]


# The monotonic move, shared by both dialects: {v} is "v." (a row of unnest) on PostgreSQL, ":" (bound) on SQLite.
_ADVANCE_SET = """
    status = CASE WHEN {v}rank > m.status_rank THEN {v}status ELSE m.status END,
    status_rank = CASE WHEN {v}rank > m.status_rank THEN {v}rank ELSE m.status_rank END,
    sent_at = COALESCE(m.sent_at, {v}sent_at),
    delivered_at = COALESCE(m.delivered_at, {v}delivered_at),
    read_at = COALESCE(m.read_at, {v}read_at),
    pricing_category = COALESCE({v}pricing_category, m.pricing_category),
    billable = COALESCE({v}billable, m.billable),
    updated_at = :now"""

_ADVANCE_PG = text(f"""
UPDATE message_log AS m SET {_ADVANCE_SET.format(v="v.")}
FROM unnest(CAST(:wamid AS text[]), CAST(:status AS text[]), CAST(:rank AS integer[]),
            CAST(:sent_at AS timestamptz[]), CAST(:delivered_at AS timestamptz[]), CAST(:read_at AS timestamptz[]),
            CAST(:pricing_category AS text[]), CAST(:billable AS boolean[]))
     AS v(wamid, status, rank, sent_at, delivered_at, read_at, pricing_category, billable)
WHERE m.wamid = v.wamid AND m.vendor_id = :vendor
""").bindparams(bindparam("vendor", type_=Uuid()), bindparam("now", type_=UTCDateTime()))

_ADVANCE_SQLITE = text(f"""
UPDATE message_log AS m SET {_ADVANCE_SET.format(v=":")}
WHERE m.wamid = :wamid AND m.vendor_id = :vendor
""").bindparams(bindparam("vendor", type_=Uuid()), bindparam("now", type_=UTCDateTime()),
                *(bindparam(name, type_=UTCDateTime()) for name in ("sent_at", "delivered_at", "read_at")))

_TIME_COLUMN = {"SENT": "sent_at", "DELIVERED": "delivered_at", "READ": "read_at"}


def _advance(db, vendor_id: uuid.UUID, updates: list[StatusUpdate]) -> None:
    """Move each message to its highest new status, never back; fill the time of every status seen."""
    rows: dict[str, dict] = {}
    for update in updates:
        row = rows.setdefault(update.wamid, {"wamid": update.wamid, "status": update.status, "rank": -1,
                                             "sent_at": None, "delivered_at": None, "read_at": None,
                                             "pricing_category": None, "billable": None})
        rank = STATUS_RANK[ADVANCING[update.status]]
        if rank > row["rank"]:
            row["status"], row["rank"] = update.status, rank
        column = _TIME_COLUMN[update.status]
        row[column] = min(row[column] or update.at, update.at)
        row["pricing_category"] = update.pricing_category or row["pricing_category"]
        row["billable"] = update.billable if update.billable is not None else row["billable"]
    if not rows:
        return
    now = utcnow()
    if db.get_bind().dialect.name == "postgresql":
        columns = {key: [row[key] for row in rows.values()] for key in next(iter(rows.values()))}
        db.execute(_ADVANCE_PG, {**columns, "vendor": vendor_id, "now": now})
    else:
        db.execute(_ADVANCE_SQLITE, [{**row, "vendor": vendor_id, "now": now} for row in rows.values()])


_FAIL = text("""
UPDATE message_log SET status = 'FAILED', status_rank = 5, failed_at = :at, error_code = :code,
    error_message = :message, updated_at = :now
WHERE wamid = :wamid AND vendor_id = :vendor AND status_rank < 3
RETURNING id, vendor_id, campaign_id, hold_id, price_micros
""").bindparams(bindparam("vendor", type_=Uuid()), bindparam("at", type_=UTCDateTime()),
                bindparam("now", type_=UTCDateTime())).columns(id=Uuid(), vendor_id=Uuid(), campaign_id=Uuid(),
                                                               hold_id=Uuid())


def _fail(db, vendor_id: uuid.UUID, update: StatusUpdate, settled: list) -> None:
    """A ``failed`` status: FAILED and one dead letter, unless Meta already delivered (or we already failed) it.

    The message had been sent (it has a wamid), so a priced one is reported undelivered: Meta charges
    only for delivered messages."""
    error = update.error or {}
    error_data = error.get("error_data") if isinstance(error.get("error_data"), dict) else {}
    message = " — ".join(str(part) for part in (error.get("title") or error.get("message"), error_data.get("details"))
                         if part)
    message = (message or "Meta reported the message failed")[:500]
    row = db.execute(_FAIL, {"wamid": update.wamid, "vendor": vendor_id, "at": update.at,
                             "code": update.error_code, "message": message, "now": utcnow()}).first()
    if row is None:
        return
    message_id = row[0]
    settled.extend(settlement.settled_from_rows([row], settlement.UNDELIVERED))
    db.add(DeadLetter(vendor_id=vendor_id, message_id=message_id, error_code=update.error_code,
                      error_kind=classify(update.error_code).kind.value, reason=message,
                      details={"source": "webhook", "wamid": update.wamid, "error": error}))
    db.flush()


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
        sent_at = _timestamp(message.get("timestamp"), change.received_at)
        contact, e164 = _sender_contact(contacts, sender, names.get(str(message["from"])))
        opt_out = _words(message) in keywords
        if contact is not None:
            contact.last_inbound_at = max(contact.last_inbound_at or sent_at, sent_at)
            if opt_out:
                contacts.opt_out(contact, actor=WEBHOOK_ACTOR)
        db.add(InboundMessage(
            vendor_id=vendor_id, wamid=wamid, phone_number_id=number.id,
            contact_id=contact.id if contact is not None else None, sender_hash=contacts.mobile_hash(e164),
            type=str(message.get("type") or "unknown")[:32],
            content_enc=cipher.encrypt(json.dumps(message, separators=(",", ":"), ensure_ascii=False),
                                       vendor_id=vendor_id, field=INBOUND_FIELD),
            enc_kid=cipher.active_kid, opt_out=opt_out, sent_at=sent_at))
        db.flush()


def _sender_contact(contacts: ContactService, sender: str, name: str | None) -> tuple[Contact | None, str]:
    """The vendor's contact for ``sender`` (created if new) and the number as hashed; no contact for a bad number."""
    try:
        phone = phones.normalize(sender)
    except phones.InvalidPhone as exc:
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


def _timestamp(value: Any, default: dt.datetime) -> dt.datetime:
    try:
        return dt.datetime.fromtimestamp(int(value), dt.timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return default


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None
