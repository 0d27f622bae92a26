"""Quoting a campaign and launching it: the audience frozen, the quote's total held, the fan-out sent.

The launch is one transaction, in this order, so that any refusal leaves nothing behind:

1. the campaign row is locked (two launches at once: the second sees it launched);
2. the draft is checked again (the template may have been paused since the quote);
3. the quote must be this campaign's, of its template's category, unexpired (409
   ``quote_missing`` / ``quote_expired``);
4. the audience is frozen with each recipient's unit price (:mod:`.freeze`) and its count per
   country compared with the quote's: any difference is a 409 ``audience_changed`` — the
   price of a different audience is not what the vendor accepted;
5. the quote's total is held in the wallet (402 ``insufficient_funds`` with the amounts);
6. the quotation is marked accepted (it now counts toward the month's volume tiers), the
   fan-out chunks are written and their tasks sent after commit, and ``CampaignLaunched`` is
   recorded (a replayed launch records nothing more).

An ``Idempotency-Key`` makes a retried launch answer with the launched campaign instead of a
409; the hold's own key (``campaign:<id>:launch``) means the wallet could not be charged twice
even by a launch that somehow ran twice.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select

from kloyst.api import Conflict, events, Outbox, Unprocessable, utcnow
from kloyst_plugins.campaigns import drafts, freeze
from kloyst_plugins.campaigns.models import Campaign, CampaignStatus
from kloyst_plugins.campaigns.tasks import enqueue_chunks
from kloyst_plugins.contacts.api import count_by_country
from kloyst_plugins.pricing.api import Quotation
from kloyst_plugins.pricing.api import QuotationService, expire_if_due, mark_accepted, quotation_unit_prices
from kloyst_plugins.pricing.api import in_window_by_country
from kloyst_plugins.wallet.api import Ledger


def hold_reference(campaign_id: uuid.UUID) -> str:
    return f"campaign:{campaign_id}"


def locked(db, campaign_id: uuid.UUID) -> Campaign:
    return db.scalars(select(Campaign).where(Campaign.id == campaign_id).with_for_update()
                      .execution_options(populate_existing=True)).one()


def quote(db, registry, campaign: Campaign, *, enqueue, user_id: uuid.UUID | None = None) -> Quotation:
    """Price the draft's audience now, and remember the quotation as the campaign's (its PDF is asked for with
    it, through ``enqueue``, like every quotation's)."""
    drafts.require_draft(campaign, "quoted")
    checked = drafts.check(db, campaign)
    counts = count_by_country(db, checked.audience, vendor_id=campaign.vendor_id)
    # Open customer-service windows are an estimate on the quote; the total, and the hold, stay the full price.
    in_window = in_window_by_country(db, checked.audience, vendor_id=campaign.vendor_id, at=utcnow())
    quotation = QuotationService(db, vendor_id=campaign.vendor_id, registry=registry, enqueue=enqueue).quote(
        counts, checked.template.category, source={"campaign_id": str(campaign.id)}, created_by=user_id,
        in_window=in_window)
    campaign.quotation_id = quotation.id
    db.flush()
    return quotation


def launch(db, registry, campaign_id: uuid.UUID, *, enqueue, idempotency_key: str | None = None) -> tuple[
        Campaign, bool]:
    """Launch the campaign; ``(campaign, replayed)`` — replayed when this key launched it already."""
    campaign = locked(db, campaign_id)
    if campaign.status != CampaignStatus.DRAFT.value:
        if idempotency_key is not None and campaign.launch_key == idempotency_key:
            return campaign, True
        drafts.require_draft(campaign, "launched")
    checked = drafts.check(db, campaign)
    quotation = _usable_quote(db, campaign, checked.template.category)
    unit_prices = quotation_unit_prices(quotation)
    counts, priced = freeze.freeze(db, vendor_id=campaign.vendor_id, campaign_id=campaign.id,
                                   audience=checked.audience, unit_prices=unit_prices)
    quoted = freeze.quoted_counts(unit_prices)
    if counts != quoted:
        changed = sorted({str(c) for c in set(counts) | set(quoted) if counts.get(c, 0) != quoted.get(c, 0)})
        raise Conflict("the audience changed since the quote (contacts added, removed, relabelled or opted out): "
                       "quote again", code="audience_changed",
                       details={"quoted": _counts_json(quoted), "now": _counts_json(counts), "countries": changed})
    expected = quotation.total_micros - quotation.minimum_topup_micros
    if priced != expected:  # the quote's own arithmetic disagrees with itself: never launch on that
        raise RuntimeError(f"campaign {campaign.id}: recipients priced at {priced}, quote items total {expected}")
    ledger = Ledger(db.connection(), campaign.vendor_id)
    wallet = ledger.wallet()
    if wallet.currency != quotation.currency:
        raise Conflict(f"the quote is in {quotation.currency} and the wallet in {wallet.currency}: quote again",
                       code="quote_currency_mismatch")
    hold = ledger.hold(quotation.total_micros, idempotency_key=f"campaign:{campaign.id}:launch",
                       reference=hold_reference(campaign.id))
    mark_accepted(quotation)
    recipients = sum(counts.values())
    now = utcnow()
    campaign.status = (CampaignStatus.SCHEDULED if campaign.start_at is not None else CampaignStatus.LAUNCHING).value
    campaign.category, campaign.currency = quotation.category, quotation.currency
    campaign.hold_id, campaign.held_micros = hold.id, quotation.total_micros
    campaign.minimum_topup_micros = quotation.minimum_topup_micros
    campaign.recipients, campaign.launched_at, campaign.launch_key = recipients, now, idempotency_key
    starts = freeze.add_chunks(db, vendor_id=campaign.vendor_id, campaign_id=campaign.id, recipients=recipients,
                               size=registry.settings["campaigns.chunk_size"])
    enqueue_chunks(enqueue, vendor_id=campaign.vendor_id, campaign_id=campaign.id, seq_froms=starts)
    events.record_event(Outbox(db), campaign.vendor_id,
                        events.CampaignLaunched(campaign_id=campaign.id, recipients=recipients))
    db.flush()
    return campaign, False


def _usable_quote(db, campaign: Campaign, category: str) -> Quotation:
    quotation = db.get(Quotation, campaign.quotation_id) if campaign.quotation_id is not None else None
    if quotation is None:
        raise Conflict("the campaign has no quote: POST /v1/campaigns/{id}/quote first", code="quote_missing")
    expire_if_due(quotation)
    if quotation.status == "EXPIRED":
        raise Conflict(f"the quote expired at {quotation.expires_at.isoformat()}: quote again", code="quote_expired",
                       details={"quotation_id": str(quotation.id), "expired_at": quotation.expires_at.isoformat()})
    if quotation.category != category:
        raise Conflict(f"the quote priced {quotation.category} messages and the template is now {category}: quote "
                       "again", code="quote_category_changed")
    if quotation.recipients <= 0:
        raise Unprocessable("the quote has no recipients", code="empty_audience")
    return quotation


def _counts_json(counts: dict) -> dict:
    return {("unknown" if country is None else country): count for country, count in sorted(
        counts.items(), key=lambda item: (item[0] is None, item[0] or ""))}
