"""The types core hooks take and return: what a plugin author builds against.

Each hook in :mod:`kloyst.plugins.hookspecs` that passes an object to a plugin, or expects one
back, uses a type defined here, so the contract between Kloyst and a third-party plugin never
depends on a first-party plugin's internals. Plugins import these through :mod:`kloyst.api`.

- :class:`MergeStrategy` (with :class:`ContactFields`): returned by ``kloyst_merge_strategies``.
- :class:`PricingRule` (with :class:`RuleContext`, :class:`Line`, :class:`Charge`,
  :class:`SnapshotRef`): returned by ``kloyst_pricing_rules``.
- :class:`SettledMessage`: passed to ``kloyst_messages_settled``.
- :class:`PluginSettings`: a plugin's own settings for one vendor, as merge strategies, pricing
  rules (``RuleContext.settings``) and tasks (``ctx.plugin_settings()``) receive them.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


# -- plugin settings ----------------------------------------------------------------------------

@dataclass(frozen=True)
class PluginSettings:
    """One plugin's settings as its code sees them, for one vendor.

    ``ini``: the values of the plugin's ``kloyst_settings`` (ini file, environment), keyed without
    the ``<plugin>.`` prefix (``example.label_fee`` is ``ini["label_fee"]``). ``vendor``: the vendor's
    settings for the plugin (``PluginMeta.vendor_settings``), validated, the schema's defaults filled
    in, as JSON values; ``{}`` for a plugin that declares no schema.
    """

    plugin: str
    ini: Mapping[str, Any] = field(default_factory=dict)
    vendor: Mapping[str, Any] = field(default_factory=dict)


# -- merge strategies (kloyst_merge_strategies) -------------------------------------------------

@dataclass(frozen=True)
class ContactFields:
    """The mergeable part of a contact (decrypted); ``name`` is None when unknown or not read."""

    name: str | None = None
    country: str | None = None
    labels: tuple[str, ...] = ()
    attributes: dict = field(default_factory=dict)


def _takes_settings(merge: Callable) -> bool:
    """Whether ``merge`` takes a third argument (the plugin's :class:`PluginSettings`)."""
    try:
        parameters = list(inspect.signature(merge).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: the two-argument form
        return False
    if "settings" in (p.name for p in parameters):
        return True
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind is p.VAR_POSITIONAL for p in parameters)


@dataclass(frozen=True)
class MergeStrategy:
    """``merge(existing, incoming)`` → the merged contact, or None to leave it.

    ``merge`` may also take a third argument, ``settings``: the :class:`PluginSettings` of the
    plugin that registered the strategy, for the importing vendor. Which form ``merge`` has is
    read once, here; the import binds the settings once per chunk (:meth:`with_settings`), so a
    row costs the same call either way.
    """

    name: str
    description: str
    merge: Callable[..., ContactFields | None]
    reads_name: bool = False  # decrypt the existing name only for strategies that look at it
    takes_settings: bool = field(default=False, init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "takes_settings", _takes_settings(self.merge))

    def with_settings(self, settings: PluginSettings) -> MergeStrategy:
        """This strategy with ``settings`` bound: its ``merge`` takes ``(existing, incoming)``."""
        if not self.takes_settings:
            return self
        if "settings" in inspect.signature(self.merge).parameters:
            bound = functools.partial(self.merge, settings=settings)
        else:
            bound = functools.partial(_third, self.merge, settings)
        strategy = MergeStrategy(self.name, self.description, bound, self.reads_name)
        object.__setattr__(strategy, "takes_settings", False)  # bound: called with (existing, incoming)
        return strategy


def _third(merge: Callable, settings: PluginSettings, existing: ContactFields, incoming: ContactFields):
    return merge(existing, incoming, settings)


def union_labels(*groups) -> tuple[str, ...]:
    """Labels of every group, first occurrence first, without duplicates."""
    return tuple(dict.fromkeys(label for group in groups for label in group))


# -- pricing rules (kloyst_pricing_rules) -------------------------------------------------------

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
    plugin_settings: dict[str, dict]  # enabled plugin → the vendor's settings for it (validated, defaults applied)
    snapshot: SnapshotRef
    currency: str
    category: str
    month_volume: dict[str, int]  # market → messages of this category already accepted this calendar month
    now: dt.datetime
    memo: dict[str, Any] = field(default_factory=dict)
    settings: PluginSettings | None = None  # the settings of the plugin whose rule is called (ini and vendor)


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


# -- settled messages (kloyst_messages_settled) -------------------------------------------------

@dataclass(frozen=True)
class SettledMessage:
    message_id: uuid.UUID
    vendor_id: uuid.UUID
    campaign_id: uuid.UUID | None
    hold_id: uuid.UUID | None
    price_micros: int
    outcome: str
