"""Meta's delivery statuses applied to messages: each recorded once, moved forward only, none left unapplied.

Statuses reach Kloyst through the webhook drainer (:mod:`.webhooks`, one transaction per vendor
and batch). Deliveries are at least once and out of order, so everything here is idempotent:

* **Recorded once.** Each ``(wamid, status)`` is inserted once into ``message_status_event``
  (``ON CONFLICT DO NOTHING … RETURNING``); only statuses new there touch ``message_log``, so a
  replay is a no-op.
* **Whose status.** The message that carries the wamid. Failing that, the message the sender
  named in ``biz_opaque_callback_data`` (it puts the message id there on every call) — only a
  message of *this* vendor: another vendor's id finds nothing. Those messages are read and
  locked in id order, and then:

  - it carries the wamid already (the sender recorded Meta's answer after our look-up): the
    status is its own;
  - it carries none and is QUEUED, SENDING or PAUSED: Meta accepted a call whose answer Kloyst
    has not read (its sender died mid-call, or the answer is still on its way). It **adopts**
    the wamid and is SENT, and is never sent again — whether its lease was live or expired, or
    it was waiting for a retry;
  - it carries none and ended FAILED or CANCELLED: the status is kept, linked to it, and not
    applied (Kloyst had given up on it and settled its money before Meta's word came; logged);
  - it carries another wamid: Meta accepted two calls of it. The second is counted once per
    wamid (``duplicate_send`` and the message's ``duplicate_sends``);
  - no message: the status is kept without one (no opaque data, or an id none of this vendor's
    messages has) and not applied. :func:`link_unlinked` applies it later if a message comes to
    carry its wamid; ``kloyst messages check`` shows the rest.
* **Forward only.** ``status_rank`` orders SENT 2 < DELIVERED 3 < READ 4: a ``delivered`` after
  ``read`` changes nothing, a ``delivered`` before its ``sent`` ends DELIVERED, and every
  status's time is kept. On PostgreSQL one ``UPDATE … FROM unnest(…)`` per 1,000 statuses;
  SQLite row by row. ``failed`` marks the message FAILED (rank 5) with one dead letter, only
  while Meta has not delivered it; a priced one is reported undelivered (Meta charges only for
  delivered messages).

**Events.** Each message a batch moved to another status (adopted, advanced or failed) is one
``MessageStatusChanged`` (old and new status), recorded with ``record_events`` in the batch's
transaction — only when an installed plugin subscribes to it; otherwise the statements are
exactly those without it. PostgreSQL reads the status before from the update itself (a
self-join, ``RETURNING``); SQLite, which has no concurrent writer, reads it around the update.

The race the lock closes: the drainer may look the wamids up just *before* the sender's
writer commits the wamid of the same message. The look-up misses it, but ``FOR UPDATE`` on the
named message waits for the writer's commit and then reads the wamid it stored, so the status
is recognised as the message's own — applied, and never mistaken for a second send.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Uuid, bindparam, select, text

from kloyst.api import (
    ApiError,
    classify,
    events as kevents,
    insert_skipping_conflicts,
    META_STATUSES,
    metrics as kmetrics,
    Outbox,
    session_scope,
    tenancy,
    UTCDateTime,
    utcnow,
)
from kloyst_plugins.messages import settlement
from kloyst_plugins.messages import statements as sql
from kloyst_plugins.messages.models import STATUS_RANK, DeadLetter, MessageLog, MessageStatus, MessageStatusEvent
from kloyst_plugins.messages.models import sql as sql_words, UNFINISHED
from kloyst_plugins.pricing.api import QuotationService

log = logging.getLogger(__name__)

CHUNK = 1000  # statuses per statement
# Meta's word → the message status it moves to; other statuses (played, deleted…) are recorded only.
ADVANCING = {"SENT": MessageStatus.SENT, "DELIVERED": MessageStatus.DELIVERED, "READ": MessageStatus.READ}
FAILED = MessageStatus.FAILED.value
# What a message carrying no wamid may be in to adopt one: not yet sent, being sent, or waiting to be sent again.
ADOPTABLE = frozenset(s.value for s in UNFINISHED)


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
        if pricing.get("type") in settlement.FREE_TYPES:  # per-message pricing's word wins over deprecated billable
            billable = False
        elif not isinstance(billable, bool):  # deprecated under per-message pricing: "regular" messages are billed
            billable = pricing["type"] == "regular" if "type" in pricing else None
        category = pricing.get("category")
        return cls(wamid=str(raw["id"])[:128], status=str(raw["status"]).upper()[:16],
                   at=timestamp(raw.get("timestamp"), received_at),
                   message_ref=_uuid(raw.get("biz_opaque_callback_data")),
                   error=errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else None,
                   pricing_category=str(category)[:32] if category else None, billable=billable)

    @property
    def error_code(self) -> int | None:
        code = (self.error or {}).get("code")
        return code if isinstance(code, int) else None


@dataclass
class _Matches:
    """Statuses for wamids no message carried at the look-up, sorted out by the message they name."""

    linked: dict[str, uuid.UUID] = field(default_factory=dict)  # kept on a message that ended without it
    duplicates: dict[str, uuid.UUID] = field(default_factory=dict)  # a second wamid of a message
    adopted: int = 0


def apply_statuses(ctx, updates: list[StatusUpdate]) -> None:
    """Record up to :data:`CHUNK` statuses of ``ctx.vendor_id`` and move their messages forward (module docstring)."""
    db, vendor_id = ctx.db, ctx.vendor_id
    wamids = list(dict.fromkeys(u.wamid for u in updates))
    ours: dict[str, uuid.UUID] = dict(db.execute(select(MessageLog.wamid, MessageLog.id)
                                                 .where(MessageLog.wamid.in_(wamids))).all())
    settled: list[settlement.SettledMessage] = []
    outbox = Outbox(db)
    changes = _changes(outbox)
    matches = _match_unknown_wamids(db, vendor_id, updates, ours, settled, changes)
    new = _record_events(db, vendor_id, updates, {**matches.linked, **matches.duplicates, **ours})
    duplicates = sum(count_duplicate(db, vendor_id, matches.duplicates[wamid], wamid, "webhook")
                     for wamid in sorted({u.wamid for u in new if u.wamid in matches.duplicates}))
    apply_to_messages(db, vendor_id, [u for u in new if u.wamid in ours], settled, changes=changes)
    applied = [u for u in new if u.wamid in ours and u.status in ADVANCING]
    price_of = _price_of(db, getattr(ctx, "registry", None), vendor_id)
    settled.extend(settlement.by_meta_price(db, vendor_id, applied, price_of))
    if changes:
        kevents.record_events(outbox, vendor_id, changes)
    settlement.report(ctx.plugin_manager, db.connection(), settled)
    _count_after_commit(ctx, [u for u in new if u.wamid in ours], matches.adopted, duplicates)


def _price_of(db, registry, vendor_id: uuid.UUID):
    """``(country, category) → price`` of one message for this vendor now: what Meta's category is settled at.

    Remembered for the batch: a campaign Meta recategorised reports a thousand messages of one
    country and category, priced once.
    """
    prices: dict[tuple[str | None, str], int | ApiError] = {}

    def price_of(country: str | None, category: str) -> int:
        key = (country, category)
        if key not in prices:
            try:
                prices[key] = QuotationService(db, vendor_id=vendor_id, registry=registry,
                                               enqueue=_no_quotation).message_price(country, category)
            except ApiError as exc:  # unpriceable (no card, no rate): the same answer for the whole batch
                prices[key] = exc
        found = prices[key]
        if isinstance(found, ApiError):
            raise found
        return found
    return price_of


def _no_quotation(*args, **kwargs):
    raise RuntimeError("pricing one message never creates a quotation, so it has nothing to enqueue")


def apply_to_messages(db, vendor_id: uuid.UUID, updates: list[StatusUpdate], settled: list, *,
                      changes: list | None = None) -> None:
    """Move the messages carrying these statuses' wamids forward, and fail those Meta failed.

    With a ``changes`` list, one :class:`MessageStatusChanged` is added to it per message whose status moved.
    """
    _advance(db, vendor_id, [u for u in updates if u.status in ADVANCING], changes)
    for update in updates:
        if update.status == FAILED:
            _fail(db, vendor_id, update, settled, changes)


def _changes(outbox) -> list | None:
    """A list to collect status changes in when a plugin wants ``MessageStatusChanged`` events, else None."""
    return [] if kevents.is_subscribed(outbox, kevents.MessageStatusChanged) else None


def _changed(message_id, campaign_id, old: str, new: str, wamid: str | None):
    return kevents.MessageStatusChanged(message_id=_as_uuid(message_id),
                                        campaign_id=None if campaign_id is None else _as_uuid(campaign_id),
                                        old_status=str(old), new_status=str(new), wamid=wamid)


def adopt(db, vendor_id: uuid.UUID, message_id: uuid.UUID, wamid: str, at: dt.datetime) -> list:
    """Make ``wamid`` the message's send (SENT) if it carries none and is not finished; its settlement rows.

    Used wherever a wamid of a message is learnt after the call: a status webhook, a late
    answer of the sender, a status found when the message's sender died. An empty list when
    the message carries a wamid already, has ended, or the wamid belongs to another message.
    """
    return db.execute(sql.ADOPT, {"id": message_id, "vendor": vendor_id, "wamid": wamid, "at": at,
                                  "now": utcnow()}).all()


def count_duplicate(db, vendor_id: uuid.UUID, message_id: uuid.UUID, wamid: str, detected_by: str) -> bool:
    """Record ``wamid`` as a second send of ``message_id`` once; True the first time (then counted)."""
    inserted = db.execute(sql.DUPLICATE, {"wamid": wamid, "vendor": vendor_id, "message": message_id,
                                          "by": detected_by, "now": utcnow()}).rowcount
    if inserted:
        db.execute(sql.COUNT_DUPLICATE, {"id": message_id})
        log.warning("message %s was sent twice (second wamid %s found by the %s)", message_id, wamid, detected_by)
    return bool(inserted)


def _match_unknown_wamids(db, vendor_id: uuid.UUID, updates: list[StatusUpdate], ours: dict[str, uuid.UUID],
                          settled: list, changes: list | None = None) -> _Matches:
    """Statuses for wamids no message carried, sorted out by the message they name; adopted wamids join ``ours``."""
    matches = _Matches()
    named: dict[str, StatusUpdate] = {}  # unknown wamid → its earliest status that names a message
    for update in sorted(updates, key=lambda u: u.at):
        if update.wamid not in ours and update.message_ref is not None:
            named.setdefault(update.wamid, update)
    if not named:
        return matches
    # Locked in id order (concurrent drainers take these rows in the same order), scoped to this vendor.
    rows = {message_id: (wamid, status) for message_id, wamid, status in db.execute(
        select(MessageLog.id, MessageLog.wamid, MessageLog.status)
        .where(MessageLog.id.in_(sorted({u.message_ref for u in named.values()})))
        .order_by(MessageLog.id).with_for_update()).all()}
    for wamid, update in named.items():
        message_id = update.message_ref
        if message_id not in rows:
            continue  # kept without a message
        carried, status = rows[message_id]
        if carried is None and status in ADOPTABLE:
            adopted = adopt(db, vendor_id, message_id, wamid, update.at)
            if adopted:
                ours[wamid] = message_id
                rows[message_id] = (wamid, MessageStatus.SENT.value)
                settled.extend(settlement.settled_from_rows(adopted, settlement.SENT))
                matches.adopted += 1
                if changes is not None:
                    changes.append(_changed(message_id, adopted[0][2], status, MessageStatus.SENT.value, wamid))
                # Routine while SENDING (a status can beat the answer to its own call); worth telling otherwise.
                log.log(logging.DEBUG if status == MessageStatus.SENDING.value else logging.INFO,
                        "message %s (%s) adopted wamid %s from a %s status: Meta had accepted it; not sent again",
                        message_id, status, wamid, update.status.lower())
                continue
            # The message changed after it was read. PostgreSQL's row lock rules that out; SQLite has no row locks,
            # and the sender's answer can land in between (this write now holds the database's lock): read it again.
            carried, status = rows[message_id] = db.execute(
                select(MessageLog.wamid, MessageLog.status).where(MessageLog.id == message_id)).one()
        if carried == wamid:
            ours[wamid] = message_id
        elif carried is None and status in ADOPTABLE:  # the wamid is another message's: not this one's to take
            log.warning("status %s names message %s but its wamid belongs to another message; kept unlinked",
                        wamid, message_id)
        elif carried is None:
            matches.linked[wamid] = message_id
            log.warning("message %s ended %s, but Meta accepted a call of it (wamid %s, %s): status kept, not "
                        "applied", message_id, status, wamid, update.status.lower())
        else:
            matches.duplicates[wamid] = message_id
    return matches


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


def _count_after_commit(ctx, reported: list[StatusUpdate], adopted: int, duplicates: int) -> None:
    """Statuses (``kloyst_message_status_total{source="webhook"}``, each message and status once), adoptions and
    duplicates, counted once the transaction commits.

    Only with a transaction to wait for: a context without one (a test applying statuses on its own
    session) counts nothing rather than counting what may roll back.
    """
    transaction_manager = getattr(ctx, "tm", None)
    if not (reported or adopted or duplicates) or transaction_manager is None:
        return
    counts = collections.Counter(
        (ctx.vendor_id, status if status in META_STATUSES else "other")
        for status in (u.status.lower() for u in reported))
    metrics = kmetrics.of(ctx.registry)

    def count() -> None:
        metrics.messages_reached(counts, kmetrics.WEBHOOK)
        metrics.wamids_adopted(kmetrics.WEBHOOK, adopted)
        metrics.duplicate_sends(kmetrics.WEBHOOK, duplicates)

    kmetrics.after_commit(transaction_manager, count)


def _not_before(value: str, floor: str) -> str:
    """SQL for ``value``, raised to ``floor`` when ``floor`` is later; NULL stays NULL (the status was not seen).

    A comparison with a NULL is not true, so either side unknown keeps ``value``. Written with CASE
    because SQLite's two-argument MAX is NULL when either side is, while PostgreSQL's GREATEST
    ignores NULLs: the same text must mean the same on both.
    """
    return f"CASE WHEN {floor} > {value} THEN {floor} ELSE {value} END"


# The monotonic move, shared by both dialects: {v} is "v." (a row of unnest) on PostgreSQL, ":" (bound) on SQLite.
# Times move forward too. Meta's webhook times have one-second precision while ``sent_at`` is the sender's own
# clock to the microsecond, so a message sent at 12:00:00.734 and delivered in the same second is reported
# delivered at 12:00:00. A status is never stored earlier than the one before it: ``delivered_at`` is at least
# ``sent_at``, and ``read_at`` at least ``delivered_at`` (or ``sent_at`` while no delivery is known), each the
# stored time or the one this statement sets.
_SENT = "COALESCE(m.sent_at, {v}sent_at)"
_DELIVERED = f"COALESCE(m.delivered_at, {_not_before('{v}delivered_at', _SENT)})"
_ADVANCE_SET = f"""
    status = CASE WHEN {{v}}rank > m.status_rank THEN {{v}}status ELSE m.status END,
    status_rank = CASE WHEN {{v}}rank > m.status_rank THEN {{v}}rank ELSE m.status_rank END,
    sent_at = {_SENT},
    delivered_at = {_DELIVERED},
    read_at = COALESCE(m.read_at, {_not_before('{v}read_at', f'COALESCE({_DELIVERED}, {_SENT})')}),
    pricing_category = COALESCE({{v}}pricing_category, m.pricing_category),
    billable = COALESCE({{v}}billable, m.billable),
    updated_at = :now"""

_ADVANCE_PG = text(f"""
UPDATE message_log AS m SET {_ADVANCE_SET.format(v="v.")}
FROM unnest(CAST(:wamid AS text[]), CAST(:status AS text[]), CAST(:rank AS integer[]),
            CAST(:sent_at AS timestamptz[]), CAST(:delivered_at AS timestamptz[]), CAST(:read_at AS timestamptz[]),
            CAST(:pricing_category AS text[]), CAST(:billable AS boolean[]))
     AS v(wamid, status, rank, sent_at, delivered_at, read_at, pricing_category, billable)
WHERE m.wamid = v.wamid AND m.vendor_id = :vendor
""").bindparams(bindparam("vendor", type_=Uuid()), bindparam("now", type_=UTCDateTime()))

# The same, telling each message's status before (``o``: the row as the statement found it) and after.
_ADVANCE_PG_CHANGES = text(f"""
UPDATE message_log AS m SET {_ADVANCE_SET.format(v="v.")}
FROM unnest(CAST(:wamid AS text[]), CAST(:status AS text[]), CAST(:rank AS integer[]),
            CAST(:sent_at AS timestamptz[]), CAST(:delivered_at AS timestamptz[]), CAST(:read_at AS timestamptz[]),
            CAST(:pricing_category AS text[]), CAST(:billable AS boolean[]))
     AS v(wamid, status, rank, sent_at, delivered_at, read_at, pricing_category, billable),
     message_log AS o
WHERE m.wamid = v.wamid AND m.vendor_id = :vendor AND o.id = m.id
RETURNING m.id, m.campaign_id, m.wamid, o.status, m.status
""").bindparams(bindparam("vendor", type_=Uuid()), bindparam("now", type_=UTCDateTime()))

_ADVANCE_SQLITE = text(f"""
UPDATE message_log AS m SET {_ADVANCE_SET.format(v=":")}
WHERE m.wamid = :wamid AND m.vendor_id = :vendor
""").bindparams(bindparam("vendor", type_=Uuid()), bindparam("now", type_=UTCDateTime()),
                *(bindparam(name, type_=UTCDateTime()) for name in ("sent_at", "delivered_at", "read_at")))

_TIME_COLUMN = {"SENT": "sent_at", "DELIVERED": "delivered_at", "READ": "read_at"}


def _advance(db, vendor_id: uuid.UUID, updates: list[StatusUpdate], changes: list | None = None) -> None:
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
        if changes is None:
            db.execute(_ADVANCE_PG, {**columns, "vendor": vendor_id, "now": now})
            return
        moved = db.execute(_ADVANCE_PG_CHANGES, {**columns, "vendor": vendor_id, "now": now}).all()
        changes.extend(_changed(i, c, old, new, w) for i, c, w, old, new in sorted(moved, key=lambda r: str(r[0]))
                       if old != new)
        return
    before = _statuses(db, list(rows)) if changes is not None else None
    db.execute(_ADVANCE_SQLITE, [{**row, "vendor": vendor_id, "now": now} for row in rows.values()])
    if before:
        after = _statuses(db, list(rows))
        changes.extend(_changed(i, c, old, after[w][2], w) for w, (i, c, old) in sorted(before.items())
                       if w in after and after[w][2] != old)


def _statuses(db, wamids: list[str]) -> dict[str, tuple]:
    """``wamid → (id, campaign_id, status)`` of this vendor's messages carrying these wamids (the session's scope)."""
    return {w: (i, c, s) for w, i, c, s in db.execute(
        select(MessageLog.wamid, MessageLog.id, MessageLog.campaign_id, MessageLog.status)
        .where(MessageLog.wamid.in_(wamids)).execution_options(populate_existing=True))}


_FAIL = text(sql_words("""
UPDATE message_log SET status = {FAILED}, status_rank = {FAILED_RANK}, failed_at = :at, error_code = :code,
    error_message = :message, updated_at = :now
WHERE wamid = :wamid AND vendor_id = :vendor AND status_rank < {FAILABLE_BELOW}
RETURNING id, vendor_id, campaign_id, hold_id, price_micros
""")).bindparams(bindparam("vendor", type_=Uuid()), bindparam("at", type_=UTCDateTime()),
                bindparam("now", type_=UTCDateTime())).columns(id=Uuid(), vendor_id=Uuid(), campaign_id=Uuid(),
                                                               hold_id=Uuid())


_STATUS_OF_WAMID = select(MessageLog.status).where(MessageLog.wamid == bindparam("wamid"))


def _fail(db, vendor_id: uuid.UUID, update: StatusUpdate, settled: list, changes: list | None = None) -> None:
    """A ``failed`` status: FAILED and one dead letter, unless Meta already delivered (or we already failed) it.

    The message had been sent (it has a wamid), so a priced one is reported undelivered: Meta charges
    only for delivered messages."""
    error = update.error or {}
    error_data = error.get("error_data") if isinstance(error.get("error_data"), dict) else {}
    message = " — ".join(str(part) for part in (error.get("title") or error.get("message"), error_data.get("details"))
                         if part)
    message = (message or "Meta reported the message failed")[:500]
    old = None
    if changes is not None:  # its status before, read under the lock the update takes anyway
        old = db.execute(_STATUS_OF_WAMID.with_for_update() if db.get_bind().dialect.name == "postgresql"
                         else _STATUS_OF_WAMID, {"wamid": update.wamid}).scalar()
    row = db.execute(_FAIL, {"wamid": update.wamid, "vendor": vendor_id, "at": update.at,
                             "code": update.error_code, "message": message, "now": utcnow()}).first()
    if row is None:
        return
    message_id = row[0]
    if changes is not None and old is not None:
        changes.append(_changed(message_id, row[2], old, FAILED, update.wamid))
    settled.extend(settlement.settled_from_rows([row], settlement.UNDELIVERED))
    db.add(DeadLetter(vendor_id=vendor_id, message_id=message_id, error_code=update.error_code,
                      error_kind=classify(update.error_code).kind.value, reason=message,
                      details={"source": "webhook", "wamid": update.wamid, "error": error}))
    db.flush()


# -- statuses kept without a message --------------------------------------------------------------------------

_UNLINKED = text("""
SELECT e.id, e.vendor_id, e.wamid, e.status, e.occurred_at, e.error_code, e.pricing_category, m.id
FROM message_status_event e JOIN message_log m ON m.wamid = e.wamid AND m.vendor_id = e.vendor_id
WHERE e.message_id IS NULL AND e.received_at >= :since
ORDER BY e.id LIMIT 1000
""").bindparams(bindparam("since", type_=UTCDateTime())).columns(vendor_id=Uuid(), occurred_at=UTCDateTime())

_LINK = text("UPDATE message_status_event SET message_id = :message WHERE id = :id AND message_id IS NULL"
             ).bindparams(bindparam("message", type_=Uuid()))


def link_unlinked(registry, since: dt.datetime) -> int:
    """Statuses kept without a message (received since ``since``) whose wamid a message of their vendor carries
    now: link them and apply them. Returns how many were applied.

    The case: a status with no ``biz_opaque_callback_data`` arriving before the sender committed
    Meta's answer. Kloyst names the message in every call, so this is a safety net, run by the
    sender's recovery every half minute; ``kloyst messages check`` lists what it has not caught.
    """
    factory = registry["kloyst.session_factory"]
    with session_scope(factory, vendor_id=tenancy.ALL_VENDORS) as db:
        rows = db.execute(_UNLINKED, {"since": since}).all()
    by_vendor: dict[uuid.UUID, list] = collections.defaultdict(list)
    for row in rows:
        by_vendor[_as_uuid(row[1])].append(row)
    applied = 0
    for vendor_id, vendor_rows in by_vendor.items():
        with session_scope(factory, vendor_id=vendor_id) as db:
            updates, settled = [], []
            for event_id, _, wamid, status, at, error_code, category, message_id in vendor_rows:
                if db.execute(_LINK, {"id": event_id, "message": _as_uuid(message_id)}).rowcount:
                    error = {"code": error_code} if error_code is not None else None
                    updates.append(StatusUpdate(wamid, status, at, None, error, category, None))
            outbox = Outbox(db)
            changes = _changes(outbox)
            apply_to_messages(db, vendor_id, updates, settled, changes=changes)
            settled.extend(settlement.by_meta_price(db, vendor_id, [u for u in updates if u.status in ADVANCING],
                                                    _price_of(db, registry, vendor_id)))
            if changes:
                kevents.record_events(outbox, vendor_id, changes)
            settlement.report(registry["kloyst.plugin_manager"], db.connection(), settled)
        if updates:
            log.warning("applied %d statuses of vendor %s that had arrived before their message's wamid was known",
                        len(updates), vendor_id)
        applied += len(updates)
    return applied


def timestamp(value: Any, default: dt.datetime) -> dt.datetime:
    try:
        return dt.datetime.fromtimestamp(int(value), dt.timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return default


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


def _as_uuid(value) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
