"""Fan-out: a launched campaign's frozen recipients become ``message_log`` rows, one chunk per task.

Why chunks with their own rows (``campaign_chunk``), not one long task with a cursor: a chunk
is written in one transaction that also marks it done, so

* a task delivered twice, or run by two workers at once, writes its messages once (the
  chunk row is taken ``FOR UPDATE SKIP LOCKED``, a done chunk is a no-op and a held one is
  tried again shortly; the messages' unique ``(vendor_id, idempotency_key)`` =
  ``campaign:<id>:<contact>`` would refuse a second copy anyway);
* a worker killed midway loses only its uncommitted chunk, whose task the outbox's
  reconciler publishes again within seconds (and the periodic loop, :mod:`.ticker`, as a
  last resort when a task looks lost for long);
* chunks run in parallel on every worker, which is what makes a million recipients a matter
  of seconds: each worker decrypts, renders and seals its chunk (CPU, in Python) while
  PostgreSQL takes another chunk's ``COPY``.

A chunk holds its campaign row ``FOR SHARE`` while it writes: a pause or cancel (which update
the row) waits for the chunks in hand, and chunks that start after it see the new status —
PAUSED writes its messages PAUSED, CANCELLING writes none. A recipient whose contact was
deleted or opted out since the freeze gets no message; its price goes back to the wallet
in the same transaction. A contact known only by its WhatsApp BSUID is addressed by Meta's
``recipient`` field instead of ``to``, except with an authentication template, which Meta refuses
for BSUIDs (error 131062): that recipient is skipped with the reason and its price released.

The messages themselves are written by the messages plugin (``messages.api.queue_many``: COPY on
PostgreSQL, one executemany INSERT on SQLite, and the number's doorbell): this module renders and
seals them, and names none of ``message_log``'s columns.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import Uuid, bindparam, select, text

from kloyst.api import utcnow
from kloyst_plugins.campaigns.models import Campaign, CampaignChunk, CampaignStatus
from kloyst_plugins.campaigns.render import Renderer
from kloyst_plugins.contacts.api import sending_columns
from kloyst_plugins.messages.api import MessageBatch, new_message_id, queue_many
from kloyst_plugins.templates.api import MessageTemplate
from kloyst_plugins.wallet.api import Ledger

SKIP_DELETED = "contact deleted"
SKIP_OPTED_OUT = "contact opted out"
SKIP_NO_VALUE = "a variable has no value"
# Meta refuses authentication templates to a business-scoped user id (error 131062): not sent, not paid.
SKIP_NO_NUMBER = "no number: Meta refuses authentication templates to a BSUID"
AUTHENTICATION = "AUTHENTICATION"

# The contact columns and their join come from the contacts plugin, which owns the table.
_RECIPIENTS = """
SELECT r.seq, {contact_id}, r.country, r.price_micros, {contact_columns}
FROM campaign_recipient r {contact_join}
WHERE r.campaign_id = :campaign AND r.seq >= :lo AND r.seq < :hi
ORDER BY r.seq
"""

_SKIP = text("UPDATE campaign_recipient SET skipped = :reason WHERE campaign_id = :campaign AND seq = :seq "
             "AND vendor_id = :vendor").bindparams(bindparam("campaign", type_=Uuid()), bindparam("vendor",
                                                                                                 type_=Uuid()))


@dataclass
class ChunkResult:
    written: int = 0
    skipped: int = 0
    skipped_micros: int = 0
    already_done: bool = False
    busy: bool = False  # another transaction holds the chunk now: the caller tries again shortly


def write_chunk(db, registry, *, vendor_id: uuid.UUID, campaign_id: uuid.UUID, seq_from: int) -> ChunkResult:
    """Write one chunk's messages in ``db``'s transaction (vendor-scoped); a done chunk is a no-op.

    A chunk another transaction holds is reported ``busy`` rather than taken for done: the
    holder may be another copy of this task, which will finish it, but it may just as well be
    the campaign loop looking at the chunks' progress, which writes nothing — a task that gave
    up then would leave the chunk to the loop's staleness check, minutes later.
    """
    where = (CampaignChunk.campaign_id == campaign_id, CampaignChunk.seq_from == seq_from)
    chunk = db.scalars(select(CampaignChunk).where(*where).with_for_update(skip_locked=True)).one_or_none()
    if chunk is None:
        state = db.execute(select(CampaignChunk.done_at).where(*where)).one_or_none()
        return ChunkResult(busy=True) if state is not None and state.done_at is None else ChunkResult(
            already_done=True)
    if chunk.done_at is not None:
        return ChunkResult(already_done=True)
    campaign = db.scalars(select(Campaign).where(Campaign.id == campaign_id).with_for_update(read=True)
                          .execution_options(populate_existing=True)).one()
    result = ChunkResult()
    if campaign.status in (CampaignStatus.CANCELLING.value, CampaignStatus.CANCELLED.value):
        # Nothing more is sent; the hold's remainder is released when the campaign settles.
        result.skipped = chunk.seq_to - chunk.seq_from
    else:
        result = _write(db, registry, campaign, chunk)
        if result.skipped_micros and campaign.hold_id is not None:
            Ledger(db.connection(), vendor_id).release(campaign.hold_id, result.skipped_micros,
                                                       idempotency_key=f"campaign:{campaign.id}:skip:{seq_from}")
    chunk.done_at = utcnow()
    chunk.written, chunk.skipped = result.written, result.skipped
    db.flush()
    return result


def _write(db, registry, campaign: Campaign, chunk: CampaignChunk) -> ChunkResult:
    cipher, vendor_id = registry["kloyst.cipher"], campaign.vendor_id
    template = db.get(MessageTemplate, campaign.template_id)
    mapping = {**(template.variable_mapping or {}), **(campaign.variable_mapping or {})}
    renderer = Renderer(template, mapping, campaign.buttons or [], cipher=cipher, vendor_id=vendor_id)
    dialect = db.get_bind().dialect.name
    postgres = dialect == "postgresql"
    # On PostgreSQL the contact id and the number's hash come as text, as COPY wants them (no UUID or bytes
    # objects per row, no hex encoding in Python).
    contact_id = "CAST(r.contact_id AS TEXT)" if postgres else "r.contact_id"
    contact = sending_columns("r.contact_id", dialect=dialect, name=renderer.needs_name,
                              attributes=renderer.needs_attributes)
    query = text(_RECIPIENTS.format(contact_id=contact_id, contact_columns=contact.columns,
                                    contact_join=contact.join)).bindparams(
        bindparam("vendor", type_=Uuid()), bindparam("campaign", type_=Uuid()))
    rows = db.execute(query, {"vendor": vendor_id, "campaign": campaign.id, "lo": chunk.seq_from,
                              "hi": chunk.seq_to}).all()
    now = utcnow()
    paused = campaign.status == CampaignStatus.PAUSED.value
    due = max(now, campaign.start_at) if campaign.start_at is not None else now
    batch = MessageBatch(vendor_id=vendor_id, phone_number_id=campaign.phone_number_id, campaign_id=campaign.id,
                         template_id=template.id, template_name=template.name, template_language=template.language,
                         category=template.category, enc_kid=cipher.active_kid, hold_id=campaign.hold_id,
                         next_attempt_at=due, now=now, paused=paused)
    result, messages, skipped = ChunkResult(), [], []
    decrypt = cipher.decrypt
    authentication = template.category == AUTHENTICATION
    for (seq, contact_id, country, price, found, mobile_enc, mobile_hash, opted_out, name_enc, attributes,
         bsuid_enc) in rows:
        if len(contact_id) != 36:  # SQLite keeps 32 hex digits
            contact_id = str(uuid.UUID(contact_id))
        reason = SKIP_DELETED if not found else SKIP_OPTED_OUT if opted_out else None
        values = None
        if reason is None and mobile_enc is None:  # known only by its BSUID: sent to Meta's ``recipient``
            reason = SKIP_NO_NUMBER if authentication else None
        if reason is None:
            mobile = decrypt(bytes(mobile_enc), vendor_id=vendor_id, field="mobile") if mobile_enc is not None else None
            name = decrypt(bytes(name_enc), vendor_id=vendor_id, field="name") if name_enc is not None else None
            values = renderer.values(mobile=mobile, name=name, country=country, attributes=attributes)
            reason = SKIP_NO_VALUE if values is None else None
        if reason is not None:
            skipped.append((seq, reason))
            result.skipped_micros += int(price or 0)
            continue
        message_id = new_message_id()
        if mobile is not None:
            sealed = renderer.seal(mobile, message_id, values)
        else:
            sealed = renderer.seal(decrypt(bytes(bsuid_enc), vendor_id=vendor_id, field="bsuid"), message_id, values,
                                   bsuid=True)
        messages.append((message_id, contact_id, mobile_hash if postgres else bytes(mobile_hash).hex(), country,
                         sealed, f"campaign:{campaign.id}:{contact_id}", price))
    queue_many(db, batch, messages)  # rings the number's doorbell unless paused
    for seq, reason in skipped:
        db.execute(_SKIP, {"reason": reason, "campaign": campaign.id, "seq": seq, "vendor": vendor_id})
    result.written, result.skipped = len(messages), len(skipped)
    return result
