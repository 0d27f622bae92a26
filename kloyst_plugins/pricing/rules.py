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
same rule object may serve many quotations at once. ``ctx.settings`` is the rule's own
plugin's :class:`kloyst.api.PluginSettings` for the quoted vendor (its ini settings and the
vendor's, validated, defaults filled in); ``ctx.plugin_settings`` has every enabled plugin's
vendor settings.
"""

from __future__ import annotations

from kloyst.api import Charge, Line, PricingRule, RuleContext, SnapshotRef

__all__ = ["Charge", "Line", "PricingRule", "RuleContext", "SnapshotRef", "ordered", "ordered_with_plugins"]


def ordered(rules) -> list[PricingRule]:
    """The rules of every enabled plugin (hook results), one per name, in ``(order, name)`` order."""
    return [rule for _, rule in ordered_with_plugins(("", rule) for result in rules for rule in result or ())]


def ordered_with_plugins(pairs) -> list[tuple[str, PricingRule]]:
    """``(plugin, rule)`` pairs (``TenantHooks.collect``), one per rule name, in ``(order, name)`` order."""
    by_name: dict[str, tuple[str, PricingRule]] = {}
    for plugin, rule in pairs:
        if not rule.name:
            raise ValueError(f"pricing rule {rule!r} has no name")
        by_name.setdefault(rule.name, (plugin, rule))
    return sorted(by_name.values(), key=lambda pair: (pair[1].order, pair[1].name))
