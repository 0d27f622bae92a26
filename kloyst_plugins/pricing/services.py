"""QuotationService: recipients per country → an itemised, priced, persisted quotation.

The arithmetic, in order (docs/pricing.md has a worked example):

1. each country goes to its market through the snapshot's mapping (an unknown country, or
   none, to "Other");
2. the market's list rate for the category comes from the snapshot;
3. volume tiers: a market's bands count the vendor's messages of that category this calendar
   month (UTC) — those of quotations already ACCEPTED, then this quote's own, country after
   country — and a quantity that crosses a band edge becomes one line per band;
4. every pricing rule of the vendor's enabled plugins adjusts the unit price of each line
   (rounded half up to a whole micro-unit after each rule, so a line is exactly
   quantity × unit), then may add quotation-level charges (the minimum-charge top-up);
5. total = Σ lines + charges, in the currency of the vendor's wallet, priced from the
   snapshot in force in that currency, whose id the quotation keeps.

Every quotation gets its PDF: :meth:`QuotationService.quote` is the one place a quotation is
created, and it asks for the PDF (``pricing.generate_quotation_pdf``) in the same transaction,
so the quotes of ``POST /v1/quotations`` and of a campaign alike become READY.

The work is per country and band, never per contact: counting is the audience's one
``GROUP BY``, so a million recipients cost the same as a hundred.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import object_session

from kloyst.api import (Conflict, events, format_micros, Outbox, round_micros, TenantHooks, Unprocessable,
                        utcnow)
from kloyst_plugins.pricing import markets, snapshots
from kloyst_plugins.pricing.models import (QUOTABLE, Category, PricingMarket, PricingRate, PricingSnapshot,
                                           PricingTier, Quotation, QuotationItem, QuotationStatus)
from kloyst_plugins.pricing.rules import Charge, Line, RuleContext, SnapshotRef, ordered_with_plugins
from kloyst_plugins.pricing.tasks import GENERATE_PDF
from kloyst_plugins.pricing.window import SERVICE

DEFAULT_TTL_SECONDS = 24 * 3600
# What one message may be priced as: a template's category, or the one Meta reports charging (settlement).
PRICEABLE = (*QUOTABLE, Category.AUTHENTICATION_INTERNATIONAL.value)


@dataclass(frozen=True)
class WalletView:
    currency: str
    available_micros: int | None


def wallet_of(db, vendor_id: uuid.UUID) -> WalletView:
    """The vendor's wallet currency and available funds (the wallet plugin creates the wallet on first use)."""
    from kloyst_plugins.wallet.api import Ledger

    state = Ledger(db.connection(), vendor_id).wallet()
    return WalletView(currency=state.currency, available_micros=state.available_micros)


def month_start(now: dt.datetime) -> dt.datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def split_into_bands(start: int, quantity: int, bands: list[PricingTier]) -> list[tuple[int, PricingTier | None]]:
    """Messages ``start+1 … start+quantity`` of the month, cut at band edges: ``[(count, band or None)]``.

    Messages no band covers (a market without tiers) come back with ``None``: they pay the list rate.
    """
    pieces: list[tuple[int, PricingTier | None]] = []
    position, remaining = start + 1, quantity
    for band in bands:
        if remaining == 0:
            break
        if band.band_to is not None and band.band_to < position:
            continue
        if band.band_from > position:  # a gap before this band (or no band at all yet)
            take = min(remaining, band.band_from - position)
            pieces.append((take, None))
            position, remaining = position + take, remaining - take
            if remaining == 0:
                break
        take = remaining if band.band_to is None else min(remaining, band.band_to - position + 1)
        pieces.append((take, band))
        position, remaining = position + take, remaining - take
    if remaining:
        pieces.append((remaining, None))
    return pieces


@dataclass
class Priced:
    """A priced audience before it is saved: lines with their unit prices, and quotation-level charges."""

    snapshot: PricingSnapshot
    wallet: WalletView
    category: str
    now: dt.datetime
    lines: list[tuple[Line, int]]
    charges: list[Charge]
    rules: list[str]

    @property
    def subtotal_micros(self) -> int:
        return sum(line.quantity * line.rate_micros for line, _ in self.lines)

    @property
    def items_micros(self) -> int:
        return sum(line.quantity * unit for line, unit in self.lines)

    @property
    def charges_micros(self) -> int:
        return sum(charge.micros for charge in self.charges)

    @property
    def total_micros(self) -> int:
        return self.items_micros + self.charges_micros


class QuotationService:
    """Prices and saves one vendor's quotations, in the caller's transaction.

    ``enqueue`` is that transaction's ``enqueue(name, **kwargs)`` (``request.enqueue``,
    ``ctx.enqueue`` in a task): it is required because a quotation cannot be created without
    asking for its PDF, whoever creates it.
    """

    def __init__(self, db, *, vendor_id: uuid.UUID, registry, enqueue: Callable[..., object]) -> None:
        self.db = db
        self.vendor_id = vendor_id
        self.registry = registry
        self.enqueue = enqueue

    @classmethod
    def for_request(cls, request) -> QuotationService:
        return cls(request.db, vendor_id=request.vendor_id, registry=request.registry, enqueue=request.enqueue)

    def _ttl(self) -> int:
        return int(self.registry.settings.get("pricing.quote_ttl_seconds", DEFAULT_TTL_SECONDS))

    def _rules(self) -> tuple[list[tuple[str, object]], TenantHooks]:
        """``(plugin, rule)`` of the vendor's enabled plugins, in order, and the hooks that hold their settings."""
        hooks = TenantHooks.for_vendor(self.db, self.registry["kloyst.plugin_manager"], self.vendor_id,
                                       self.registry.settings)
        return ordered_with_plugins(hooks.collect("kloyst_pricing_rules")), hooks

    def month_volume(self, category: str, now: dt.datetime) -> dict[str, int]:
        """Messages per market of ``category`` in this vendor's ACCEPTED quotations of ``now``'s calendar month."""
        rows = self.db.execute(
            select(QuotationItem.market, func.sum(QuotationItem.quantity))
            .join(Quotation, Quotation.id == QuotationItem.quotation_id)
            # Named explicitly: the service also runs on platform-wide sessions (tasks, the CLI, tests).
            .where(Quotation.vendor_id == self.vendor_id, Quotation.status == QuotationStatus.ACCEPTED.value,
                   Quotation.category == category,
                   Quotation.accepted_at >= month_start(now))
            .group_by(QuotationItem.market)).all()
        return {market: int(total) for market, total in rows}

    def price(self, counts_by_country: dict[str | None, int], category: str, *,
              now: dt.datetime | None = None, categories: tuple[str, ...] = QUOTABLE) -> Priced:
        """Price without saving: what :meth:`quote` would persist (``categories``: those accepted)."""
        if category not in categories:
            raise Unprocessable(f"category must be one of {', '.join(categories)}", code="invalid_category")
        counts = {country: int(n) for country, n in counts_by_country.items() if n}
        if sum(counts.values()) <= 0:
            raise Unprocessable("the audience has no recipients (opted-out contacts are never counted)",
                                code="empty_audience")
        now = now or utcnow()
        wallet = wallet_of(self.db, self.vendor_id)
        snapshot = snapshots.current(self.db, wallet.currency, now)
        if snapshot is None:
            raise Unprocessable(f"no rate card in {wallet.currency} is in force; a platform admin must load one",
                                code="no_pricing_snapshot", details={"currency": wallet.currency})
        market_of = self._markets(snapshot.id, [c for c in counts if c is not None])
        rates = dict(self.db.execute(select(PricingRate.market, PricingRate.rate_micros).where(
            PricingRate.snapshot_id == snapshot.id, PricingRate.category == category)).all())
        bands: dict[str, list[PricingTier]] = defaultdict(list)
        for band in self.db.scalars(select(PricingTier).where(PricingTier.snapshot_id == snapshot.id,
                                                              PricingTier.category == category)
                                    .order_by(PricingTier.market, PricingTier.band_from)):
            bands[band.market].append(band)
        ordered_countries = sorted(counts, key=lambda c: (c is None, c or ""))
        unpriced = sorted({market_of.get(c, markets.OTHER) for c in ordered_countries} - set(rates))
        if unpriced:
            raise Unprocessable(f"snapshot {snapshot.id} has no {category} rate for {', '.join(unpriced)}",
                                code="no_rate", details={"markets": unpriced})

        owned_rules, hooks = self._rules()
        volume = self.month_volume(category, now)
        vendor_settings = {name: dict(hooks.settings_of(name).vendor) for name in sorted(hooks.enabled)}
        ctx = RuleContext(db=self.db, vendor_id=self.vendor_id, plugin_settings=vendor_settings,
                          snapshot=SnapshotRef(snapshot.id, snapshot.currency, snapshot.effective_from),
                          currency=snapshot.currency, category=category, month_volume=dict(volume), now=now)
        # Each rule sees its own plugin's settings in ctx.settings; memo and the rest stay shared.
        contexts = {plugin: replace(ctx, settings=hooks.settings_of(plugin)) for plugin, _ in owned_rules}
        rules = [(contexts[plugin], rule) for plugin, rule in owned_rules]
        running = dict(volume)
        priced: list[tuple[Line, int]] = []
        for country in ordered_countries:
            market = market_of.get(country, markets.OTHER)
            list_rate = rates[market]
            for count, band in split_into_bands(running.get(market, 0), counts[country], bands.get(market, [])):
                line = Line(country=country, market=market, category=category, quantity=count,
                            list_rate_micros=list_rate, rate_micros=band.rate_micros if band else list_rate,
                            tier_from=band.band_from if band else None, tier_to=band.band_to if band else None,
                            discount_micropercent=band.discount_micropercent if band else 0)
                unit = line.rate_micros
                for rule_ctx, rule in rules:
                    unit = max(0, round_micros(Decimal(rule.unit_price(rule_ctx, line, unit))))
                priced.append((line, unit))
            running[market] = running.get(market, 0) + counts[country]
        items_micros = sum(line.quantity * unit for line, unit in priced)
        charges = [charge for rule_ctx, rule in rules for charge in rule.quote_charges(rule_ctx, priced, items_micros)]
        if any(charge.micros < 0 for charge in charges):
            raise ValueError("a pricing rule returned a negative quotation charge; discounts belong in unit_price")
        return Priced(snapshot=snapshot, wallet=wallet, category=category, now=now, lines=priced, charges=charges,
                      rules=[rule.name for _, rule in rules])

    def message_price(self, country: str | None, category: str) -> int:
        """What one message of ``category`` to ``country`` costs this vendor now, to hold when it is queued.

        A free-form message inside the customer-service window (category ``SERVICE``) costs 0
        — Meta charges nothing for it and no pricing rule or platform fee applies — so it is
        queued unpriced and never held. A template is priced from the rate card, tiers and rules,
        a utility template at its full price even when the recipient's window is open: the
        window may close before delivery, and settlement follows Meta's word (:mod:`.window`).
        """
        if category.upper() == SERVICE:
            return 0
        return self.price({country: 1}, category.upper(), categories=PRICEABLE).items_micros

    def quote(self, counts_by_country: dict[str | None, int], category: str, *, source: dict | None = None,
              created_by: uuid.UUID | None = None, in_window: dict[str | None, int] | None = None) -> Quotation:
        """Price ``counts_by_country`` (recipients per ISO country, None = unknown), save the quotation and ask
        for its PDF (sent once the caller's transaction commits).

        ``in_window`` counts, per country, the recipients whose customer-service window is open
        now (:func:`.window.in_window_by_country`): for a UTILITY quote they become the estimate
        ``estimated_free_in_window`` (:func:`estimate_free_in_window`); the total is unchanged.
        """
        priced = self.price(counts_by_country, category)
        total = priced.total_micros
        available = priced.wallet.available_micros
        free_count, free_micros = estimate_free_in_window(priced, in_window or {})
        quotation = Quotation(
            vendor_id=self.vendor_id, snapshot_id=priced.snapshot.id, currency=priced.snapshot.currency,
            category=category, recipients=sum(line.quantity for line, _ in priced.lines),
            subtotal_micros=priced.subtotal_micros, fees_micros=priced.items_micros - priced.subtotal_micros,
            minimum_topup_micros=priced.charges_micros, total_micros=total, rules=priced.rules,
            estimated_free_in_window=free_count, estimated_free_in_window_micros=free_micros,
            adjustments=[{"rule": c.rule, "description": c.description, "amount": format_micros(c.micros)}
                         for c in priced.charges],
            expires_at=priced.now + dt.timedelta(seconds=self._ttl()), source=source or {},
            wallet_available_micros=available, wallet_sufficient=available is not None and available >= total,
            created_by=created_by)
        quotation.items = [QuotationItem(
            vendor_id=self.vendor_id, position=position, country=line.country, market=line.market,
            category=category, quantity=line.quantity, list_rate_micros=line.list_rate_micros,
            tier_from=line.tier_from, tier_to=line.tier_to, discount_micropercent=line.discount_micropercent,
            rate_micros=line.rate_micros, unit_price_micros=unit, amount_micros=line.quantity * unit)
            for position, (line, unit) in enumerate(priced.lines)]
        self.db.add(quotation)
        self.db.flush()
        self.enqueue(GENERATE_PDF, vendor_id=self.vendor_id, quotation_id=quotation.id)
        # Ready to read and accept now; its PDF follows (pdf_status), and may fail on its own.
        events.record_event(Outbox(self.db), self.vendor_id, events.QuotationReady(
            quotation_id=quotation.id, total_micros=quotation.total_micros, currency=quotation.currency))
        return quotation

    def _markets(self, snapshot_id, countries: list[str]) -> dict[str, str]:
        if not countries:
            return {}
        return dict(self.db.execute(select(PricingMarket.country, PricingMarket.market).where(
            PricingMarket.snapshot_id == snapshot_id, PricingMarket.country.in_(countries))).all())

    def unit_prices(self, quotation: Quotation) -> dict[str | None, list[tuple[int, int]]]:
        return quotation_unit_prices(quotation)

    def mark_accepted(self, quotation: Quotation) -> Quotation:
        return mark_accepted(quotation)


def estimate_free_in_window(priced: Priced, in_window: dict[str | None, int]) -> tuple[int, int]:
    """``(recipients, micros)`` a UTILITY quote's open windows might save, as an estimate; ``(0, 0)`` otherwise.

    Only utility templates are free inside the window (marketing and authentication are charged
    wherever they are delivered). A country's in-window recipients (at most its quoted ones) are
    valued at the lowest unit price the quote gives that country, so the estimate never
    overstates the saving; whether a message really is free is Meta's word at delivery.
    """
    if priced.category != Category.UTILITY.value:
        return 0, 0
    lowest: dict[str | None, int] = {}
    quoted: dict[str | None, int] = defaultdict(int)
    for line, unit in priced.lines:
        lowest[line.country] = min(unit, lowest.get(line.country, unit))
        quoted[line.country] += line.quantity
    count = micros = 0
    for country, open_windows in in_window.items():
        recipients = min(int(open_windows), quoted.get(country, 0))
        count += recipients
        micros += recipients * lowest.get(country, 0)
    return count, micros


def quotation_unit_prices(quotation: Quotation) -> dict[str | None, list[tuple[int, int]]]:
    """``{country: [(quantity, unit_price_micros), …]}`` in band order; Σ q × unit = total − minimum top-up."""
    prices: dict[str | None, list[tuple[int, int]]] = {}
    for item in quotation.items:
        prices.setdefault(item.country, []).append((item.quantity, item.unit_price_micros))
    return prices


def expire_if_due(quotation: Quotation, now: dt.datetime | None = None) -> Quotation:
    if quotation.status == QuotationStatus.ACTIVE.value and quotation.expires_at <= (now or utcnow()):
        quotation.status = QuotationStatus.EXPIRED.value
    return quotation


def mark_accepted(quotation: Quotation) -> Quotation:
    """A campaign launched with this quotation: from now on its messages count toward the month's tiers.

    Idempotent; an expired quotation is refused (409) — quote again, prices may have changed.
    """
    if quotation.status == QuotationStatus.ACCEPTED.value:
        return quotation
    expire_if_due(quotation)
    if quotation.status == QuotationStatus.EXPIRED.value:
        raise Conflict(f"quotation {quotation.id} expired at {quotation.expires_at.isoformat()}; ask for a new one",
                       code="quotation_expired")
    quotation.status = QuotationStatus.ACCEPTED.value
    quotation.accepted_at = utcnow()
    object_session(quotation).flush()
    return quotation
