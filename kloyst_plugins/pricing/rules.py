"""Pricing rules: how a plugin changes what a vendor pays, without touching the quotation engine.

A rule reaches a quotation through the tenant hook ``kloyst_pricing_rules``, which Kloyst
calls only on the plugins the quoted vendor has enabled; the pricing plugin's own platform
fees (markup, per-message fee, minimum charge) come through that same hook
(:mod:`.fees`). Rules run in ascending ``order``, then by name.

A rule can do two things, each optional (the base class does nothing):

- :meth:`PricingRule.unit_price` — change the price of one message of a line (a country's
  recipients in one volume band). It receives the unit price in micro-units as the previous
  rule left it and returns the new one; Kloyst rounds the answer half up to a whole
  micro-unit after each rule, so every line's amount is exactly quantity × unit and a
  campaign can charge each message its own unit price.
- :meth:`PricingRule.quote_charges` — add charges to the whole quotation that belong to no
  single message (a minimum charge top-up). They must not be negative: a discount is a
  lower unit price, so that what each message captures never exceeds what was held.

Rules are pure functions of their arguments and :class:`RuleContext`; ``ctx.memo`` is a
per-quotation dict where a rule may keep what it looked up (under its own name), since the
same rule object may serve many quotations at once.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class SnapshotRef:
    id: uuid.UUID
    currency: str
    effective_from: dt.datetime


@dataclass
class RuleContext:
    """What a rule may base its decision on, for one quotation."""

    db: Any  # the ORM session, scoped to the vendor (a rule may read its own plugin's tables)
    vendor_id: uuid.UUID
    plugin_settings: dict[str, dict]  # enabled plugin → the vendor's settings for it (VendorPlugin.settings)
    snapshot: SnapshotRef
    currency: str
    category: str
    month_volume: dict[str, int]  # market → messages of this category already accepted this calendar month
    now: dt.datetime
    memo: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Line:
    """One line of a quotation as rules see it (amounts in micro-units)."""

    country: str | None
    market: str
    category: str
    quantity: int
    list_rate_micros: int  # Meta's list rate
    rate_micros: int  # Meta's rate in this volume band (list rate less the tier discount)
    tier_from: int | None
    tier_to: int | None
    discount_micropercent: int


@dataclass(frozen=True)
class Charge:
    """A quotation-level charge: ``micros`` ≥ 0, shown on the quote with its description."""

    rule: str
    description: str
    micros: int


class PricingRule:
    """Subclass, set ``name`` (unique across plugins), ``order`` and ``description``, override what you need."""

    name: str = ""
    order: int = 100
    description: str = ""

    def unit_price(self, ctx: RuleContext, line: Line, unit_micros: int) -> int | Decimal:
        """The price of one message of ``line`` after this rule (``unit_micros`` is the price so far)."""
        return unit_micros

    def quote_charges(self, ctx: RuleContext, lines: list[tuple[Line, int]], items_micros: int) -> list[Charge]:
        """Charges on the whole quotation, given every ``(line, unit price)`` and their sum ``items_micros``."""
        return []


def ordered(rules) -> list[PricingRule]:
    """The rules of every enabled plugin (hook results), one per name, in ``(order, name)`` order."""
    by_name: dict[str, PricingRule] = {}
    for result in rules:
        for rule in result or ():
            if not rule.name:
                raise ValueError(f"pricing rule {rule!r} has no name")
            by_name.setdefault(rule.name, rule)
    return sorted(by_name.values(), key=lambda r: (r.order, r.name))
