"""What clients may send to the pricing API (quotation requests, fee rules, rate lookups), and what it answers.

Money and percentages travel as decimal strings (``"0.0050"``, ``"12.5"``) and are turned
into integers here (:mod:`kloyst.money`), so a float never reaches a price.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from pydantic import Field, RootModel, field_validator, model_validator

from kloyst.api import Amount, Answer, Listing, Page, PlainText, Schema, to_micros
from kloyst_plugins.contacts.api import Audience
from kloyst_plugins.pricing.models import QUOTABLE, PdfStatus, QuotationStatus

MAX_PERCENT_MICROS = 1000 * 1_000_000  # a markup above 1000 % is a typo, not a price
# Decimal text is parsed only when it is short: no price needs 40 characters, and a megabyte of digits is slow to read.
MAX_DECIMAL_TEXT = 40


class QuotationCreate(Schema):
    """Quote a template (its category) or a category, for an audience."""

    category: str | None = Field(default=None, max_length=32)
    template_id: uuid.UUID | None = None
    audience: Audience

    @field_validator("category")
    @classmethod
    def _known_category(cls, value: str | None) -> str | None:
        if value is not None and value.upper() not in QUOTABLE:
            raise ValueError(f"must be one of {', '.join(QUOTABLE)}")
        return value.upper() if value else value

    @model_validator(mode="after")
    def _category_or_template(self) -> QuotationCreate:
        if self.category is None and self.template_id is None:
            raise ValueError("give a category or a template_id")
        return self


class QuotationListQuery(Page):
    status: QuotationStatus | None = None


class RatesQuery(Schema):
    country: str | None = Field(default=None, pattern=r"^[A-Za-z]{2}$")  # None: the whole card


def _micros(value, field: str) -> int:
    return to_micros(value, field=field)


class FeeRuleFields(Schema):
    name: PlainText | None = Field(default=None, max_length=200)
    markup_percent: str | None = Field(default=None, max_length=MAX_DECIMAL_TEXT)
    per_message_fee: str | None = Field(default=None, max_length=MAX_DECIMAL_TEXT)
    minimum_charge: str | None = Field(default=None, max_length=MAX_DECIMAL_TEXT)
    valid_from: dt.datetime | None = None
    valid_to: dt.datetime | None = None
    active: bool | None = None

    @field_validator("markup_percent", "per_message_fee", "minimum_charge")
    @classmethod
    def _decimal(cls, value, info):
        if value is not None:
            micros = to_micros(value, field=info.field_name)
            if info.field_name == "markup_percent" and micros > MAX_PERCENT_MICROS:
                raise ValueError("at most 1000")
        return value

    @field_validator("valid_from", "valid_to")
    @classmethod
    def _aware(cls, value):
        if value is not None and value.tzinfo is None:
            raise ValueError("give a time zone (e.g. 2026-01-01T00:00:00Z)")
        return value

    def micros(self, field: str) -> int | None:
        value = getattr(self, field)
        return None if value is None else to_micros(value, field=field)


class FeeRuleCreate(FeeRuleFields):
    vendor_id: uuid.UUID | None = None  # None: every vendor
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")


class FeeRulePatch(FeeRuleFields):
    pass


class FeeRuleQuery(Page):
    vendor_id: uuid.UUID | None = None


Percent = Annotated[str, Field(pattern=r"^-?[0-9]+(\.[0-9]+)?$", examples=["10", "-5", "2.5"],
                               description="A percentage as a decimal string.")]


class Snapshot(Answer):
    id: uuid.UUID
    effective_from: dt.datetime


class BandOut(Answer):
    """A volume band of a month: messages `from`…`to` (null: no upper bound)."""

    from_: int = Field(alias="from")
    to: int | None
    rate: Amount
    discount_percent: Percent = Field(description="Against the list rate.")


class RateCard(Answer):
    """The card in force now, in the vendor's currency: per market, per category, the list rate."""

    currency: str
    snapshot: Snapshot | None = Field(description="Null when no card in this currency is in force.")
    markets: dict[str, dict[str, Amount]]


class CountryRates(Answer):
    """One country's market: its rates, tier bands, and what one message costs this vendor after its rules."""

    country: str
    market: str
    currency: str
    snapshot: Snapshot
    rates: dict[str, Amount] = Field(description="By category.")
    tiers: dict[str, list[BandOut]] = Field(description="By category.")
    your_unit_price: dict[str, Amount] = Field(description="By category, after this vendor's pricing rules.")


class Rates(RootModel[RateCard | CountryRates]):
    """The whole card, or with `?country=` that country's rates."""


class ItemTier(Answer):
    from_: int = Field(alias="from")
    to: int | None
    discount_percent: Percent


class QuotationItemOut(Answer):
    """A country's recipients in one volume band, at one unit price."""

    country: str | None
    market: str
    category: str
    quantity: int
    list_rate: Amount
    rate: Amount
    tier: ItemTier | None
    unit_price: Amount
    amount: Amount


class QuotationWallet(Answer):
    available: Amount | None = Field(description="The wallet's available money when quoted.")
    sufficient: bool


class FreeInWindowEstimate(Answer):
    """Recipients of a UTILITY quote whose customer-service window was open at quote time, and what their
    messages cost: Meta does not charge a utility template delivered inside the window, so this much may come
    back after delivery. An estimate only — the total is held in full and settlement follows Meta."""

    recipients: int
    amount: Amount


class QuotationOut(Answer):
    """A priced audience: Meta's rates, the platform's fees, and the total the wallet must hold."""

    id: uuid.UUID
    status: QuotationStatus
    category: str
    currency: str
    snapshot_id: uuid.UUID
    recipients: int
    subtotal: Amount = Field(description="Meta's charges.")
    fees: Amount = Field(description="What the per-message pricing rules added (or took off).")
    minimum_topup: Amount = Field(description="Added to reach a minimum charge.")
    total: Amount
    estimated_free_in_window: FreeInWindowEstimate = Field(
        description="An estimate, not a discount: the total is what is held.")
    adjustments: list[dict[str, Any]] = Field(description="Quote-level charges: `{rule, description, micros}`.")
    rules: list[str] = Field(description="The pricing rules that priced it, in order.")
    expires_at: dt.datetime
    accepted_at: dt.datetime | None
    wallet: QuotationWallet
    source: dict[str, Any] = Field(description="What was quoted: the audience, the template or campaign.")
    pdf_status: PdfStatus = Field(description="GET /quotations/{id}/pdf answers once READY.")
    pdf_error: str | None
    created_at: dt.datetime
    items: list[QuotationItemOut] | None = Field(default=None, description="Left out of lists.")


class QuotationAnswer(Answer):
    quotation: QuotationOut


class TierOut(Answer):
    market: str
    category: str
    from_: int = Field(alias="from")
    to: int | None
    rate_type: str = Field(description="LIST or TIER, as Meta writes it.")
    rate: Amount
    discount_percent: Percent


class SnapshotOut(Answer):
    """A rate card as uploaded; the detail (one snapshot) adds its rates, bands and market counts."""

    id: uuid.UUID
    currency: str
    effective_from: dt.datetime
    note: str
    created_by: uuid.UUID | None
    created_at: dt.datetime
    in_use: bool = Field(description="A quotation used it: it can no longer be deleted.")
    rates: dict[str, dict[str, Amount]] | None = Field(default=None, description="By market, then category.")
    tiers: list[TierOut] | None = None
    markets: dict[str, int] | None = Field(default=None, description="Countries per market.")


class SnapshotAnswer(Answer):
    snapshot: SnapshotOut


class FeeRuleOut(Answer):
    id: uuid.UUID
    vendor_id: uuid.UUID | None = Field(description="Null: applies to every vendor without rules of its own.")
    name: str
    currency: str
    markup_percent: Percent
    per_message_fee: Amount
    minimum_charge: Amount
    valid_from: dt.datetime
    valid_to: dt.datetime | None
    active: bool
    created_at: dt.datetime
    updated_at: dt.datetime


class FeeRuleAnswer(Answer):
    fee_rule: FeeRuleOut


class QuotationPage(Listing[QuotationOut]):
    """Quotations without their items, newest first."""


class SnapshotPage(Listing[SnapshotOut]):
    """Rate-card snapshots without their rates, newest first."""


class FeeRulePage(Listing[FeeRuleOut]):
    """Fee rules, newest first."""
