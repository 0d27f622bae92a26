"""A pricing rule from a third-party plugin: a discount for vendors their ``example`` settings label.

It reaches quotations through the ``kloyst_pricing_rules`` tenant hook, so only vendors that
enabled ``example`` ever get it; the vendor's settings for the plugin (``ExampleSettings`` in
``plugin.py``, e.g. ``{"label": "partner"}``) arrive validated, defaults filled in, in
``ctx.settings.vendor``. It runs after the platform's fees (``order`` 200 > 100), so the
discount is taken off the price the vendor pays.
"""

from __future__ import annotations

from decimal import Decimal

from kloyst.api import PricingRule


class LabelDiscount(PricingRule):
    name = "example_label_discount"
    order = 200
    description = "A discount (10 % unless set otherwise) on every message for vendors whose example settings " \
                  "carry a label."

    def unit_price(self, ctx, line, unit_micros):
        settings = ctx.settings.vendor
        if not settings["label"]:
            return unit_micros
        return Decimal(unit_micros) * (100 - settings["discount_percent"]) / 100
