"""A campaign's live counters and its per-recipient export.

Counters are read, not kept: one ``GROUP BY status`` of the campaign's messages on
``ix_message_log_campaign`` (an index-only count), the chunks' written/skipped sums, and the
wallet's holds of the campaign (cost so far = what was captured from them, net of refunds
for messages Meta later reported undelivered). Nothing has to be incremented on the hot path
of the sender, and nothing can drift.

The export streams one row per frozen recipient, joined to its message, in ``seq`` batches
each read in its own short transaction (like the contacts export), with the same
formula-injection escaping.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

from sqlalchemy import Uuid, bindparam, text

from kloyst.crypto import FieldCipher
from kloyst.db import session_scope
from kloyst.db.base import UTCDateTime
from kloyst.money import format_micros
from kloyst_plugins.campaigns.launch import hold_reference
from kloyst_plugins.campaigns.models import Campaign
from kloyst_plugins.messages.models import MessageStatus

COUNTED = tuple(status.value for status in MessageStatus)
_C = (bindparam("campaign", type_=Uuid()), bindparam("vendor", type_=Uuid()))
_BY_STATUS = text("SELECT status, count(*) FROM message_log WHERE campaign_id = :campaign AND vendor_id = :vendor "
                  "GROUP BY status").bindparams(*_C)
_CHUNKS = text("SELECT coalesce(sum(written), 0), coalesce(sum(skipped), 0), count(*) - count(done_at) "
               "FROM campaign_chunk WHERE campaign_id = :campaign AND vendor_id = :vendor").bindparams(*_C)


def stats(db, campaign: Campaign) -> dict:
    from kloyst_plugins.wallet.ledger import Ledger

    params = {"campaign": campaign.id, "vendor": campaign.vendor_id}
    counts = {status.lower(): 0 for status in COUNTED}
    for status, count in db.execute(_BY_STATUS, params):
        counts[str(status).lower()] = int(count)
    written, skipped, pending_chunks = db.execute(_CHUNKS, params).one()
    holds = Ledger(db.connection(), campaign.vendor_id).holds(hold_reference(campaign.id))
    captured = sum(h.captured_micros for h in holds)
    refunded = sum(h.refunded_micros for h in holds)
    return {"campaign_id": campaign.id, "status": campaign.status, "recipients": campaign.recipients,
            "fanned_out": int(written) + int(skipped), "messages": int(written), "skipped": int(skipped),
            "fan_out_complete": campaign.fanout_completed_at is not None and not pending_chunks,
            "counts": counts, "currency": campaign.currency,
            "held": format_micros(sum(h.amount_micros for h in holds)),
            "cost_so_far": format_micros(captured - refunded),
            "held_remaining": format_micros(sum(h.outstanding_micros for h in holds))}


EXPORT_COLUMNS = ("seq", "contact_id", "phone", "name", "country", "status", "wamid", "price", "sent_at",
                  "delivered_at", "read_at", "failed_at", "error_code", "error", "skipped")
EXPORT_BATCH = 2000
_EXPORT = """
SELECT r.seq, r.contact_id, r.country, r.price_micros, r.skipped, c.mobile_enc, c.name_enc,
       m.status, m.wamid, m.sent_at, m.delivered_at, m.read_at, m.failed_at, m.error_code, m.error_message
FROM campaign_recipient r
LEFT JOIN contact c ON c.id = r.contact_id AND c.vendor_id = :vendor
LEFT JOIN message_log m ON m.vendor_id = :vendor AND m.idempotency_key = :prefix || {contact_text}
WHERE r.campaign_id = :campaign AND r.vendor_id = :vendor AND r.seq >= :after
ORDER BY r.seq LIMIT :limit
"""
# The message's idempotency key names the contact as text: a uuid's canonical form on PostgreSQL; on SQLite the
# column holds 32 hex digits, given their dashes back.
_CONTACT_TEXT = {"postgresql": "CAST(r.contact_id AS VARCHAR)",
                 "sqlite": "lower(substr(r.contact_id, 1, 8) || '-' || substr(r.contact_id, 9, 4) || '-' || "
                           "substr(r.contact_id, 13, 4) || '-' || substr(r.contact_id, 17, 4) || '-' || "
                           "substr(r.contact_id, 21))"}
# The result columns typed, so every dialect gives back the same values: SQLite stores a uuid as 32 hex digits and
# a time as text without a zone, and a plain text() query would hand those through as they are stored.
_EXPORT_TYPES = {"contact_id": Uuid(), **{name: UTCDateTime() for name in ("sent_at", "delivered_at", "read_at",
                                                                            "failed_at")}}


def _when(value: dt.datetime | None) -> str:
    """A time as the API writes it: ISO 8601 in UTC with its zone (``2026-12-05T09:30:00.123456+00:00``)."""
    return "" if value is None else value.astimezone(dt.timezone.utc).isoformat()


def export_rows(session_factory, *, vendor_id: uuid.UUID, campaign_id: uuid.UUID, cipher: FieldCipher,
                batch: int = EXPORT_BATCH) -> Iterator[list[str]]:
    """Every recipient as text rows in ``seq`` order, one short transaction per batch."""
    after = 0
    prefix = f"campaign:{campaign_id}:"
    while True:
        with session_scope(session_factory, vendor_id=vendor_id) as db:
            query = (text(_EXPORT.format(contact_text=_CONTACT_TEXT[db.get_bind().dialect.name])).bindparams(*_C)
                     .columns(**_EXPORT_TYPES))
            rows = db.execute(query, {"campaign": campaign_id, "vendor": vendor_id, "prefix": prefix,
                                        "after": after, "limit": batch}).all()
        for (seq, contact_id, country, price, skipped, mobile_enc, name_enc, status, wamid, sent_at, delivered_at,
             read_at, failed_at, error_code, error) in rows:
            phone = cipher.decrypt(bytes(mobile_enc), vendor_id=vendor_id, field="mobile") if mobile_enc else ""
            name = cipher.decrypt(bytes(name_enc), vendor_id=vendor_id, field="name") if name_enc else ""
            yield [str(seq), str(contact_id), phone, name, country or "", status or "", wamid or "",
                   format_micros(price or 0), _when(sent_at), _when(delivered_at), _when(read_at), _when(failed_at),
                   "" if error_code is None else str(error_code), error or "", skipped or ""]
        if len(rows) < batch:
            return
        after = int(rows[-1][0]) + 1
