"""Freezing a campaign's audience at launch: one ``INSERT … SELECT``, prices included, then chunks.

The audience is a query (:func:`kloyst_plugins.contacts.audience.audience_query`); freezing
it writes its result into ``campaign_recipient`` in the launch transaction, so contacts
added, relabelled or opted out afterwards change nothing about who this campaign is for
(opting out still stops the message: the fan-out and the sender both check). Each recipient
gets ``seq`` (its place in the campaign, what chunks are cut by) and the unit price the
quote gave it: the quote prices a country's recipients in bands (volume tiers), so the
recipients of a country, in a fixed order, take the bands in turn — computed by a window
function and a ``CASE`` in the same statement, never by a Python loop over a million rows.
``seq`` follows (country, contact id), the order the per-country rank already sorts by, so
PostgreSQL sorts the audience once for both numbers.
"""

from __future__ import annotations

import uuid

from sqlalchemy import Integer, Uuid, and_, bindparam, case, func, insert, literal, select, text

from kloyst.api import tenancy, utcnow
from kloyst_plugins.campaigns.models import CampaignChunk, CampaignRecipient
from kloyst_plugins.contacts.api import Audience, audience_query

UnitPrices = dict  # country (None: unknown) → [(quantity, unit_price_micros), …] in band order

_COUNTS = text("SELECT country, count(*), coalesce(sum(price_micros), 0) FROM campaign_recipient "
               "WHERE campaign_id = :campaign AND vendor_id = :vendor GROUP BY country").bindparams(
    bindparam("campaign", type_=Uuid()), bindparam("vendor", type_=Uuid()))


def _price_case(country_column, rank_column, unit_prices: UnitPrices):
    whens = []
    for country, bands in unit_prices.items():
        same = country_column.is_(None) if country is None else country_column == country
        upper = 0
        for quantity, unit in bands:
            upper += int(quantity)
            whens.append((and_(same, rank_column <= upper), literal(int(unit))))
    return case(*whens, else_=literal(0)) if whens else literal(0)


def freeze(db, *, vendor_id: uuid.UUID, campaign_id: uuid.UUID, audience: Audience,
           unit_prices: UnitPrices) -> tuple[dict, int]:
    """Write the recipients; return ``({country: count}, Σ price)`` of what was frozen."""
    dialect = db.get_bind().dialect.name
    found = audience_query(audience, vendor_id=vendor_id, dialect=dialect).subquery("audience")
    ranked = select(found.c.id, found.c.country,
                    func.row_number().over(partition_by=found.c.country, order_by=found.c.id).label("rank")
                    ).subquery("ranked")
    rows = select(bindparam("vendor", vendor_id, type_=Uuid()), bindparam("campaign", campaign_id, type_=Uuid()),
                  (func.row_number().over(order_by=(ranked.c.country, ranked.c.id)) - 1).cast(Integer), ranked.c.id,
                  ranked.c.country,
                  _price_case(ranked.c.country, ranked.c.rank, unit_prices))
    table = CampaignRecipient.__table__
    statement = insert(table).from_select(
        [table.c.vendor_id, table.c.campaign_id, table.c.seq, table.c.contact_id, table.c.country,
         table.c.price_micros], rows)
    db.execute(tenancy.caller_scoped(statement))
    counts, total = {}, 0
    for country, count, price in db.execute(_COUNTS, {"campaign": campaign_id, "vendor": vendor_id}):
        counts[country] = int(count)
        total += int(price)
    return counts, total


def quoted_counts(unit_prices: UnitPrices) -> dict:
    return {country: sum(int(q) for q, _ in bands) for country, bands in unit_prices.items()
            if sum(int(q) for q, _ in bands)}


def add_chunks(db, *, vendor_id: uuid.UUID, campaign_id: uuid.UUID, recipients: int, size: int) -> list[int]:
    """Cut ``seq`` 0…recipients-1 into chunks of ``size``; return their starts (one task each)."""
    now = utcnow()
    starts = list(range(0, recipients, max(1, size)))
    db.add_all([CampaignChunk(vendor_id=vendor_id, campaign_id=campaign_id, seq_from=start,
                              seq_to=min(recipients, start + size), enqueued_at=now) for start in starts])
    db.flush()
    return starts
