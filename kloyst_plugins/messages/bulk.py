"""Many messages at once: queueing a batch (a campaign's fan-out chunk), and set-based moves of one campaign's messages.

The messages plugin owns ``message_log``: its columns, its state machine (:mod:`.models`) and
every statement on it. A plugin that queues or steers messages in bulk (campaigns) calls these
functions through ``kloyst_plugins.messages.api`` and names no column of ours.

**Queueing** (:func:`queue_many`): the rows of one batch share everything but the recipient
(:class:`Batch`), and are written in the caller's transaction by the fastest path each database
has — ``COPY message_log FROM STDIN`` on PostgreSQL (one COPY takes ~10,000 rows several times
faster than a multi-row INSERT: no statement to parse, no parameters to bind), one executemany
INSERT on SQLite — then, unless the batch is paused, one ``messages.queued`` doorbell for the
number. There is no conflict handling, on purpose: a batch is written once because its caller
marks it done in the same transaction (a campaign chunk's ``done_at``), and the unique
``(vendor_id, idempotency_key)`` refuses a second copy outright (an integrity error — the driver's
own from COPY, SQLAlchemy's from the INSERT — and the transaction rolls back) rather than skipping it.

**A campaign's messages** (the other functions): each is one statement on
``ix_message_log_campaign`` (``campaign_id, status``), built from the state machine's sets.
"""

from __future__ import annotations

import datetime as dt
import io
import uuid
from dataclasses import dataclass
from os import urandom

from sqlalchemy import Uuid, and_, bindparam, func, insert, not_, or_, select, text

from kloyst.api import tenancy, UTCDateTime
from kloyst_plugins.contacts.api import Contact
from kloyst_plugins.messages.dispatch import notify_queued
from kloyst_plugins.messages.models import DeadLetter, MessageLog, MessageStatus, sql, STATUS_RANK

# -- queueing a batch ---------------------------------------------------------------------------------------------

COLUMNS = ("id", "vendor_id", "phone_number_id", "contact_id", "campaign_id", "template_id", "template_name",
           "template_language", "category", "recipient_hash", "country", "content_enc", "enc_kid", "idempotency_key",
           "status", "status_rank", "next_attempt_at", "attempts", "retry_count", "maybe_sent_before",
           "duplicate_sends", "price_micros", "hold_id", "created_at", "updated_at")


@dataclass(frozen=True)
class Batch:
    """What every message of one :func:`queue_many` call shares."""

    vendor_id: uuid.UUID
    phone_number_id: uuid.UUID
    campaign_id: uuid.UUID | None
    template_id: uuid.UUID
    template_name: str
    template_language: str
    category: str | None
    enc_kid: str  # the key that sealed every row's content
    hold_id: uuid.UUID | None  # the wallet hold paying for them (each row carries its own price)
    next_attempt_at: dt.datetime  # due then
    now: dt.datetime
    paused: bool = False  # written PAUSED (their owner is paused), and no doorbell

    @property
    def status(self) -> MessageStatus:
        return MessageStatus.PAUSED if self.paused else MessageStatus.QUEUED


# One recipient's message, as the fan-out makes it (tuples: a million of them):
# (message id as canonical text, contact id as canonical text, the number's keyed hash as hex, country or None,
#  content sealed (bytes, the message id inside), idempotency key, price in micros or None).
Recipient = tuple


def new_message_id() -> str:
    """A version-4 UUID as canonical text (a third of ``str(uuid.uuid4())``'s cost, per message)."""
    h = ((int.from_bytes(urandom(16), "big") & ~(0xF000 << 64) & ~(0xC000 << 48)) | (0x4000 << 64) | (0x8000 << 48)
         ).to_bytes(16, "big").hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def queue_many(db, batch: Batch, recipients: list[Recipient]) -> int:
    """Write these messages QUEUED (or PAUSED) in ``db``'s transaction and ring the number's doorbell; how many.

    See the module docstring: no conflict handling — a key already queued makes the statement fail.
    """
    if not recipients:
        return 0
    status = batch.status
    constant = {"vendor_id": batch.vendor_id, "phone_number_id": batch.phone_number_id,
                "campaign_id": batch.campaign_id, "template_id": batch.template_id,
                "template_name": batch.template_name,
                "template_language": batch.template_language, "category": batch.category, "enc_kid": batch.enc_kid,
                "status": status.value, "status_rank": STATUS_RANK[status], "next_attempt_at": batch.next_attempt_at,
                "attempts": 0, "retry_count": 0, "maybe_sent_before": False, "duplicate_sends": 0,
                "hold_id": batch.hold_id, "created_at": batch.now, "updated_at": batch.now}
    if db.get_bind().dialect.name == "postgresql":
        _copy(db, constant, recipients)
    else:
        db.execute(tenancy.caller_scoped(insert(MessageLog.__table__)), [_row(constant, r) for r in recipients])
    if not batch.paused:
        notify_queued(db, batch.vendor_id, [batch.phone_number_id])
    return len(recipients)


def _row(constant: dict, recipient: Recipient) -> dict:
    message_id, contact_id, recipient_hash, country, content_enc, key, price = recipient
    return {**constant, "id": uuid.UUID(message_id), "contact_id": uuid.UUID(contact_id),
            "recipient_hash": bytes.fromhex(recipient_hash), "country": country, "content_enc": content_enc,
            "idempotency_key": key, "price_micros": price}


def _copy_text(value) -> str:
    """A constant as a COPY text field (backslash, tab and new lines escaped; None is ``\\N``)."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _copy(db, constant: dict, recipients: list[Recipient]) -> None:
    """``COPY message_log FROM STDIN`` on the session's own connection (its transaction), text format.

    Only ids, hex and fixed values go in, so the only escaping needed is that of the constants, done once.
    """
    fixed = {name: _copy_text(value) for name, value in constant.items()}
    head = "\t".join(fixed[c] for c in COLUMNS[1:3])  # vendor_id, phone_number_id
    middle = "\t".join(fixed[c] for c in COLUMNS[4:9])  # campaign_id … category
    after_content = fixed["enc_kid"]
    tail_before_price = "\t".join(fixed[c] for c in COLUMNS[14:21])  # status … duplicate_sends
    tail_after_price = "\t".join(fixed[c] for c in COLUMNS[22:25])  # hold_id, created_at, updated_at
    null = "\\N"
    lines = []
    append = lines.append
    for message_id, contact_id, recipient_hash, country, content_enc, key, price in recipients:
        append(f"{message_id}\t{head}\t{contact_id}\t{middle}\t\\\\x{recipient_hash}\t{country or null}\t"
               f"\\\\x{content_enc.hex()}\t{after_content}\t{key}\t{tail_before_price}\t{int(price or 0)}\t"
               f"{tail_after_price}\n")
    raw = db.connection().connection.dbapi_connection
    with raw.cursor() as cursor:
        cursor.copy_expert(f"COPY message_log ({', '.join(COLUMNS)}) FROM STDIN", io.StringIO("".join(lines)))


# -- one campaign's messages --------------------------------------------------------------------------------------

_T = MessageLog.__table__.c
S = MessageStatus


def _of(vendor_id: uuid.UUID, campaign_id: uuid.UUID):
    return and_(_T.campaign_id == bindparam("campaign", campaign_id, type_=Uuid()),
                _T.vendor_id == bindparam("vendor", vendor_id, type_=Uuid()))


def _typed(statement: str, **types):
    """A statement with the state machine's words filled in (``{WAITING}``…: :data:`.models.SQL_WORDS`), typed."""
    types = {"campaign": Uuid(), "vendor": Uuid(), "now": UTCDateTime(), **types}
    statement = sql(statement)
    return text(statement).bindparams(*(bindparam(name, type_=t) for name, t in types.items()
                                        if f":{name}" in statement))


_UNFINISHED = _typed("SELECT 1 FROM message_log WHERE campaign_id = :campaign AND vendor_id = :vendor "
                     "AND status IN ({UNFINISHED}) LIMIT 1")
_ANY_ACCEPTED = _typed("SELECT 1 FROM message_log WHERE campaign_id = :campaign AND vendor_id = :vendor "
                       "AND status IN ({ACCEPTED}) LIMIT 1")
_BY_STATUS = _typed("SELECT status, count(*) FROM message_log WHERE campaign_id = :campaign AND vendor_id = :vendor "
                    "GROUP BY status")
_PAUSE = _typed("UPDATE message_log SET status = {PAUSED}, updated_at = :now "
                "WHERE campaign_id = :campaign AND vendor_id = :vendor AND status = {QUEUED}")
_RESUME = _typed("UPDATE message_log SET status = {QUEUED}, status_rank = {QUEUED_RANK}, next_attempt_at = :due, "
                 "updated_at = :now WHERE campaign_id = :campaign AND vendor_id = :vendor AND status = {PAUSED}",
                 due=UTCDateTime())
_CANCEL = ("UPDATE message_log SET status = {CANCELLED}, status_rank = {CANCELLED_RANK}, updated_at = :now "
           "WHERE campaign_id = :campaign AND vendor_id = :vendor AND status IN ({WAITING})")
_CANCEL_PG = _typed(f"""
WITH cancelled AS ({_CANCEL} RETURNING hold_id, price_micros)
SELECT hold_id, coalesce(sum(price_micros), 0), count(*) FROM cancelled GROUP BY hold_id
""")
_WAITING_SQLITE = _typed("SELECT hold_id, coalesce(sum(price_micros), 0), count(*) FROM message_log "
                         "WHERE campaign_id = :campaign AND vendor_id = :vendor AND status IN ({WAITING}) "
                         "GROUP BY hold_id")
_CANCEL_PLAIN = _typed(_CANCEL)
_REQUEUE = _typed("""
UPDATE message_log SET status = {QUEUED}, status_rank = {QUEUED_RANK}, hold_id = :hold, next_attempt_at = :now,
    lease_until = NULL, retry_count = 0, error_code = NULL, error_subcode = NULL, error_message = NULL,
    failed_at = NULL, updated_at = :now
WHERE id = :id AND vendor_id = :vendor AND status = {FAILED}
""", id=Uuid(), hold=Uuid())
_LETTERS_REQUEUED = _typed("UPDATE dead_letter SET requeued_at = :now WHERE message_id = :id AND vendor_id = :vendor "
                           "AND requeued_at IS NULL", id=Uuid())

# Dead letters whose failure may pass if the message is sent again (kloyst's error classification).
RETRYABLE_KINDS = ("transient", "rate_limited")


@dataclass(frozen=True)
class HoldTotal:
    """Messages of one hold, and what their prices add up to."""

    hold_id: uuid.UUID | None
    price_micros: int
    messages: int


def any_unfinished(db, vendor_id: uuid.UUID, campaign_id: uuid.UUID) -> bool:
    """Whether a message of the campaign is still to be sent (:data:`~.models.UNFINISHED`)."""
    return db.execute(_UNFINISHED, {"campaign": campaign_id, "vendor": vendor_id}).first() is not None


def any_accepted(db, vendor_id: uuid.UUID, campaign_id: uuid.UUID) -> bool:
    """Whether Meta accepted at least one message of the campaign (:data:`~.models.ACCEPTED`)."""
    return db.execute(_ANY_ACCEPTED, {"campaign": campaign_id, "vendor": vendor_id}).first() is not None


def count_by_status(db, vendor_id: uuid.UUID, campaign_id: uuid.UUID) -> dict[MessageStatus, int]:
    """The campaign's messages per status, every status present (0 when none): one ``GROUP BY`` (index-only)."""
    counts = dict.fromkeys(MessageStatus, 0)
    for status, count in db.execute(_BY_STATUS, {"campaign": campaign_id, "vendor": vendor_id}):
        counts[MessageStatus(str(status))] = int(count)
    return counts


def pause_waiting(db, vendor_id: uuid.UUID, campaign_id: uuid.UUID, now: dt.datetime) -> int:
    """QUEUED → PAUSED (the sender never claims PAUSED; those SENDING finish); how many."""
    return db.execute(_PAUSE, {"campaign": campaign_id, "vendor": vendor_id, "now": now}).rowcount


def resume_paused(db, vendor_id: uuid.UUID, campaign_id: uuid.UUID, now: dt.datetime, *, due: dt.datetime,
                  phone_number_id: uuid.UUID) -> int:
    """PAUSED → QUEUED due at ``due``, with a doorbell for the number when any moved; how many."""
    moved = db.execute(_RESUME, {"campaign": campaign_id, "vendor": vendor_id, "now": now, "due": due}).rowcount
    if moved:
        notify_queued(db, vendor_id, [phone_number_id])
    return moved


def cancel_waiting(db, vendor_id: uuid.UUID, campaign_id: uuid.UUID, now: dt.datetime, *,
                   totals: bool = True) -> list[HoldTotal]:
    """QUEUED and PAUSED → CANCELLED; with ``totals``, what the cancelled messages' prices add up to per hold."""
    params = {"campaign": campaign_id, "vendor": vendor_id, "now": now}
    if not totals:
        db.execute(_CANCEL_PLAIN, params)
        return []
    if db.get_bind().dialect.name == "postgresql":
        rows = db.execute(_CANCEL_PG, params).all()
    else:
        rows = db.execute(_WAITING_SQLITE, params).all()
        db.execute(_CANCEL_PLAIN, params)
    return [HoldTotal(None if hold is None else uuid.UUID(str(hold)), int(amount), int(count))
            for hold, amount, count in rows]


def retryable_failures(db, vendor_id: uuid.UUID, campaign_id: uuid.UUID) -> list[tuple[uuid.UUID, int]]:
    """The campaign's FAILED messages worth sending again: ``(id, price)`` each.

    Failed before Meta accepted them (no wamid), with a dead letter not requeued yet whose kind is
    :data:`RETRYABLE_KINDS`, and to a contact that has not opted out since (or is gone).
    """
    letter, contact = DeadLetter.__table__.c, Contact.__table__.c
    vendor = bindparam("vendor", vendor_id, type_=Uuid())
    query = tenancy.caller_scoped(  # names the vendor in every table
        select(_T.id, func.coalesce(_T.price_micros, 0))
        .select_from(MessageLog.__table__
                     .join(DeadLetter.__table__, and_(letter.message_id == _T.id, letter.vendor_id == vendor,
                                                      letter.requeued_at.is_(None),
                                                      letter.error_kind.in_(RETRYABLE_KINDS)))
                     .outerjoin(Contact.__table__, and_(contact.id == _T.contact_id, contact.vendor_id == vendor)))
        .where(_of(vendor_id, campaign_id), _T.status == S.FAILED.value, _T.wamid.is_(None),
               or_(contact.id.is_(None), not_(contact.opted_out))))
    return [(uuid.UUID(str(message_id)), int(price)) for message_id, price in db.execute(query)]


def requeue_failed(db, vendor_id: uuid.UUID, message_ids: list[uuid.UUID], *, hold_id: uuid.UUID | None,
                   now: dt.datetime) -> int:
    """FAILED → QUEUED under ``hold_id``, their dead letters marked requeued; how many moved (no doorbell)."""
    moved = 0
    for message_id in message_ids:
        params = {"id": message_id, "hold": hold_id, "vendor": vendor_id, "now": now}
        moved += db.execute(_REQUEUE, params).rowcount
        db.execute(_LETTERS_REQUEUED, params)
    return moved


_EXPORTED = ("idempotency_key", "status", "wamid", "sent_at", "delivered_at", "read_at", "failed_at", "error_code",
             "error_message")


def by_idempotency_keys(db, vendor_id: uuid.UUID, keys: list[str]) -> dict[str, tuple]:
    """The messages with these keys: ``key → (status, wamid, sent_at, delivered_at, read_at, failed_at, error_code,
    error_message)``, in one query on the unique ``(vendor_id, idempotency_key)`` index."""
    if not keys:
        return {}
    query = tenancy.caller_scoped(select(*(_T[name] for name in _EXPORTED)).where(
        _T.vendor_id == bindparam("vendor", vendor_id, type_=Uuid()), _T.idempotency_key.in_(keys)))
    return {row[0]: tuple(row[1:]) for row in db.execute(query)}
