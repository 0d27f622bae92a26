"""Rate-card snapshots: creating one from Meta's files, finding the one in force, and keeping used ones frozen.

A snapshot is written whole or not at all: both files are parsed first and every problem
is reported together (:class:`~.cards.CardError`); only a clean card is saved, with its
rates, bands and the country → market mapping of :mod:`.markets`.

Immutability is the models' (:func:`.models.refuse_if_used`): a snapshot a quotation used
never changes; a price change is a new snapshot with a later effective date.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

from sqlalchemy import select

from kloyst.api import Conflict, utcnow
from kloyst_plugins.pricing import cards, markets
from kloyst_plugins.pricing.models import PricingMarket, PricingRate, PricingSnapshot, PricingTier

SEED = Path(__file__).with_name("seed")
DEVELOPMENT_EFFECTIVE_FROM = dt.datetime(2025, 7, 1, tzinfo=dt.timezone.utc)
DEVELOPMENT_NOTE = ("Development card: figures from Meta's July 2025 rate card, other markets estimated; "
                    "plausible volume bands. Not for billing.")


class DuplicateSnapshot(Conflict):
    code = "duplicate_snapshot"

    def __init__(self, snapshot: PricingSnapshot) -> None:
        super().__init__(f"this card was already loaded as snapshot {snapshot.id}", details={"id": str(snapshot.id)})
        self.snapshot = snapshot


def fingerprint(pricing: bytes, tiers: bytes | None, effective_from: dt.datetime) -> str:
    digest = hashlib.sha256()
    for part in (pricing, b"\0", tiers or b"", b"\0", effective_from.isoformat().encode()):
        digest.update(part)
    return digest.hexdigest()


def create(db, *, pricing: bytes, tiers: bytes | None, effective_from: dt.datetime, note: str = "",
           created_by=None) -> PricingSnapshot:
    """Parse both files and save the snapshot; :class:`~.cards.CardError` (nothing saved) when any row is wrong."""
    mapping = markets.default_mapping()
    problems: list[dict] = []
    try:
        card = cards.parse_pricing(cards.decode(pricing, "pricing"), known_markets={m for _, m in mapping.values()})
    except cards.CardError as exc:
        problems.extend(exc.problems)
        card = None
    bands: list[cards.Band] = []
    if tiers is not None:
        currency = card.currency if card else "USD"
        try:
            bands = cards.parse_tiers(cards.decode(tiers, "tiers"), currency=currency,
                                      markets=set(card.markets) if card else {m for _, m in mapping.values()})
        except cards.CardError as exc:
            problems.extend(exc.problems)
    if problems:
        raise cards.CardError(problems)
    sha = fingerprint(pricing, tiers, effective_from)
    existing = db.scalar(select(PricingSnapshot).where(PricingSnapshot.source_sha256 == sha))
    if existing is not None:
        raise DuplicateSnapshot(existing)
    snapshot = PricingSnapshot(currency=card.currency, effective_from=effective_from, note=note,
                               source_sha256=sha, created_by=created_by)
    db.add(snapshot)
    db.flush()
    db.add_all([PricingRate(snapshot_id=snapshot.id, market=market, category=category, rate_micros=micros)
                for (market, category), micros in card.rates.items()])
    db.add_all([PricingMarket(snapshot_id=snapshot.id, country=country, calling_code=code, market=market)
                for country, (code, market) in sorted(mapping.items())])
    db.add_all([PricingTier(snapshot_id=snapshot.id, market=b.market, category=b.category, band_from=b.band_from,
                            band_to=b.band_to, rate_type=b.rate_type, rate_micros=b.rate_micros,
                            discount_micropercent=b.discount_micropercent) for b in bands])
    db.flush()
    return snapshot


def current(db, currency: str, at: dt.datetime | None = None) -> PricingSnapshot | None:
    """The snapshot in force at ``at`` (default now): the latest effective one in ``currency``."""
    at = at or utcnow()
    return db.scalar(select(PricingSnapshot)
                     .where(PricingSnapshot.currency == currency, PricingSnapshot.effective_from <= at)
                     .order_by(PricingSnapshot.effective_from.desc(), PricingSnapshot.created_at.desc()).limit(1))


def load_development_card(db) -> PricingSnapshot:
    """Load the development card (USD) shipped in ``seed/``; idempotent: a second call returns the same snapshot."""
    pricing = (SEED / "Pricing.csv").read_bytes()
    tiers = (SEED / "Tier Pricing.csv").read_bytes()
    existing = db.scalar(select(PricingSnapshot).where(
        PricingSnapshot.source_sha256 == fingerprint(pricing, tiers, DEVELOPMENT_EFFECTIVE_FROM)))
    if existing is not None:
        return existing
    return create(db, pricing=pricing, tiers=tiers, effective_from=DEVELOPMENT_EFFECTIVE_FROM, note=DEVELOPMENT_NOTE)
