"""A pricing rule from a third-party plugin: a discount for vendors their ``example`` settings label.

It reaches quotations through the ``kloyst_pricing_rules`` tenant hook, so only vendors that
enabled ``example`` ever get it; the vendor's settings for the plugin (``VendorPlugin.settings``,
e.g. ``{"label": "partner"}``) arrive in ``ctx.plugin_settings["example"]``. It runs after the
platform's fees (``order`` 200 > 100), so the discount is taken off the price the vendor pays.
"""

from __future__ import annotations

from decimal import Decimal

from kloyst_plugins.pricing.rules import PricingRule

DISCOUNT = Decimal("0.10")


class LabelDiscount(PricingRule):
    name = "example_label_discount"
    order = 200
    description = "10 % off every message for vendors whose example settings carry a label."

    def unit_price(self, ctx, line, unit_micros):
        if not (ctx.plugin_settings.get("example") or {}).get("label"):
            return unit_micros
        return Decimal(unit_micros) * (1 - DISCOUNT)
