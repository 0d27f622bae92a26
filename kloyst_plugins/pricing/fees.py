"""The platform's fee rules as a pricing rule, registered through ``kloyst_pricing_rules`` like any plugin's.

Which :class:`~.models.PlatformFeeRule` rows apply to a quotation: the active ones in its
currency whose validity window contains the quoting time; if the vendor has any such rule
of its own, those replace the global ones (a negotiated price is the whole price, not an
addition to the list price). Rules that apply together add up: markups are summed, fees
per message summed, and the highest minimum charge is the minimum.

Per message: ``unit × (1 + markup %) + fee``, rounded half up to a whole micro-unit. Per
quotation: when the items come to less than the minimum charge, the difference is added as
a top-up charge.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import or_, select

from kloyst_plugins.pricing.models import PlatformFeeRule
from kloyst_plugins.pricing.rules import Charge, Line, PricingRule, RuleContext

HUNDRED_PERCENT = Decimal(100_000_000)  # 100 % in millionths of a percent


def applicable(db, vendor_id, currency: str, at) -> list[PlatformFeeRule]:
    rows = list(db.scalars(select(PlatformFeeRule).where(
        PlatformFeeRule.active.is_(True), PlatformFeeRule.currency == currency,
        or_(PlatformFeeRule.vendor_id.is_(None), PlatformFeeRule.vendor_id == vendor_id),
        PlatformFeeRule.valid_from <= at,
        or_(PlatformFeeRule.valid_to.is_(None), PlatformFeeRule.valid_to > at)).order_by(PlatformFeeRule.created_at)))
    own = [r for r in rows if r.vendor_id is not None]
    return own or rows


class PlatformFees(PricingRule):
    name = "platform_fees"
    order = 100
    description = "Platform markup, fee per message and minimum charge (the admins' fee rules)."

    def _rules(self, ctx: RuleContext) -> list[PlatformFeeRule]:
        if self.name not in ctx.memo:
            ctx.memo[self.name] = applicable(ctx.db, ctx.vendor_id, ctx.currency, ctx.now)
        return ctx.memo[self.name]

    def unit_price(self, ctx: RuleContext, line: Line, unit_micros: int) -> Decimal:
        rules = self._rules(ctx)
        markup = sum(r.markup_micropercent for r in rules)
        fee = sum(r.per_message_fee_micros for r in rules)
        return Decimal(unit_micros) * (HUNDRED_PERCENT + markup) / HUNDRED_PERCENT + fee

    def quote_charges(self, ctx: RuleContext, lines, items_micros: int) -> list[Charge]:
        minimum = max((r.minimum_charge_micros for r in self._rules(ctx)), default=0)
        if items_micros >= minimum:
            return []
        return [Charge(self.name, "Minimum charge top-up", minimum - items_micros)]
