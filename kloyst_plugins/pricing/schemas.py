"""What clients may send to the pricing API: quotation requests, fee rules, rate lookups.

Money and percentages travel as decimal strings (``"0.0050"``, ``"12.5"``) and are turned
into integers here (:mod:`kloyst.money`), so a float never reaches a price.
"""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import Field, field_validator, model_validator

from kloyst.http.pagination import Page
from kloyst.http.validation import Schema
from kloyst.money import to_micros
from kloyst_plugins.contacts.audience import Audience
from kloyst_plugins.pricing.models import QUOTABLE, QuotationStatus

MAX_PERCENT_MICROS = 1000 * 1_000_000  # a markup above 1000 % is a typo, not a price


class QuotationCreate(Schema):
    """Quote a template (its category) or a category, for an audience."""

    category: str | None = None
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
    name: str | None = Field(default=None, max_length=200)
    markup_percent: str | None = None
    per_message_fee: str | None = None
    minimum_charge: str | None = None
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
