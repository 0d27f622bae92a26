"""A campaign's live counters and its per-recipient export.

Counters are read, not kept: one ``GROUP BY status`` of the campaign's messages on
``ix_message_log_campaign`` (an index-only count), the chunks' written/skipped sums, and the
wallet's holds of the campaign (cost so far = what was captured from them, net of refunds
for messages Meta later reported undelivered). Nothing has to be incremented on the hot path
of the sender, and nothing can drift.

The export streams one row per frozen recipient, joined to its message (the messages plugin
looks a batch's messages up by their idempotency keys, one query), in ``seq`` batches each
read in its own short transaction (like the contacts export), with the same
formula-injection escaping.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

from sqlalchemy import and_, bindparam, select, text, Uuid

from kloyst.api import FieldCipher, format_micros, session_scope, tenancy
from kloyst_plugins.campaigns.launch import hold_reference
from kloyst_plugins.campaigns.models import Campaign, CampaignRecipient
from kloyst_plugins.contacts.api import Contact
from kloyst_plugins.messages.api import by_idempotency_keys, count_by_status, MessageStatus

COUNTED = tuple(status.value for status in MessageStatus)
_C = (bindparam("campaign", type_=Uuid()), bindparam("vendor", type_=Uuid()))
_CHUNKS = text("SELECT coalesce(sum(written), 0), coalesce(sum(skipped), 0), count(*) - count(done_at) "
               "FROM campaign_chunk WHERE campaign_id = :campaign AND vendor_id = :vendor").bindparams(*_C)


def stats(db, campaign: Campaign) -> dict:
    from kloyst_plugins.wallet.api import Ledger

    params = {"campaign": campaign.id, "vendor": campaign.vendor_id}
    counts = {status.value.lower(): count for status, count in
              count_by_status(db, campaign.vendor_id, campaign.id).items()}
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
_R, _K = CampaignRecipient.__table__.c, Contact.__table__.c
# Each recipient with its contact (through the contacts plugin's model: a contact deleted since is a row of NULLs).
_EXPORT_QUERY = tenancy.caller_scoped(  # names the vendor in both tables
    select(_R.seq, _R.contact_id, _R.country, _R.price_micros, _R.skipped, _K.mobile_enc, _K.name_enc)
    .select_from(CampaignRecipient.__table__.outerjoin(
        Contact.__table__, and_(_K.id == _R.contact_id, _K.vendor_id == bindparam("vendor", type_=Uuid()))))
    .where(_R.campaign_id == bindparam("campaign", type_=Uuid()), _R.vendor_id == bindparam("vendor", type_=Uuid()),
           _R.seq >= bindparam("after"))
    .order_by(_R.seq).limit(bindparam("limit")))
_NO_MESSAGE = (None,) * 8


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
            rows = db.execute(_EXPORT_QUERY, {"campaign": campaign_id, "vendor": vendor_id, "after": after,
                                              "limit": batch}).all()
            # Each recipient's message (if it has one) by its idempotency key: one query per batch, messages' own.
            messages = by_idempotency_keys(db, vendor_id, [f"{prefix}{row[1]}" for row in rows])
        for seq, contact_id, country, price, skipped, mobile_enc, name_enc in rows:
            (status, wamid, sent_at, delivered_at, read_at, failed_at, error_code, error) = messages.get(
                f"{prefix}{contact_id}", _NO_MESSAGE)
            phone = cipher.decrypt(bytes(mobile_enc), vendor_id=vendor_id, field="mobile") if mobile_enc else ""
            name = cipher.decrypt(bytes(name_enc), vendor_id=vendor_id, field="name") if name_enc else ""
            yield [str(seq), str(contact_id), phone, name, country or "", status or "", wamid or "",
                   format_micros(price or 0), _when(sent_at), _when(delivered_at), _when(read_at), _when(failed_at),
                   "" if error_code is None else str(error_code), error or "", skipped or ""]
        if len(rows) < batch:
            return
        after = int(rows[-1][0]) + 1
