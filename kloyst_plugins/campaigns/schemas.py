"""What a client may send to the campaigns API, and what it answers.

Shapes only: whether the template exists and is approved, whether the mapping covers its
variables, whether the time is in the future, is checked on the whole draft by
:mod:`.drafts`, so that one 422 lists every problem.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from pydantic import Field

from kloyst.api import Amount, Answer, Listing, Page, PlainText, Schema
from kloyst_plugins.campaigns.models import CampaignStatus


# Bounds read before the draft check loops over them: an audience has five keys (contacts.audience.Audience),
# a template's 1,024-character body never has 100 variables, and Meta allows 10 buttons.
MAX_AUDIENCE_KEYS = 10
MAX_VARIABLES = 100
MAX_BUTTONS = 10
MAX_BUTTON_KEYS = 8  # sub_type, index, parameters
AudienceBody = Annotated[dict[str, Any], Field(max_length=MAX_AUDIENCE_KEYS)]
Variables = Annotated[dict[str, Any], Field(max_length=MAX_VARIABLES)]
Buttons = Annotated[list[Annotated[dict[str, Any], Field(max_length=MAX_BUTTON_KEYS)]], Field(max_length=MAX_BUTTONS)]


class Schedule(Schema):
    """When to start: a wall-clock time in an IANA time zone (``2026-12-01T09:00`` in ``Europe/Paris``).

    A time with an offset is taken as that instant; without one it is read in ``timezone``.
    """

    start_at: dt.datetime
    timezone: PlainText = Field(default="UTC", min_length=1, max_length=64)


class CampaignCreate(Schema):
    name: PlainText = Field(min_length=1, max_length=200)
    template_id: uuid.UUID
    phone_number_id: uuid.UUID
    audience: AudienceBody
    # Template variable → {"field": "name", "default": "there"} or {"value": "…"}; the template's own mapping
    # fills the variables left out.
    variables: Variables = Field(default_factory=dict)
    buttons: Buttons = Field(default_factory=list)
    schedule: Schedule | None = None


class CampaignPatch(Schema):
    name: PlainText | None = Field(default=None, min_length=1, max_length=200)
    template_id: uuid.UUID | None = None
    phone_number_id: uuid.UUID | None = None
    audience: AudienceBody | None = None
    variables: Variables | None = None
    buttons: Buttons | None = None
    schedule: Schedule | None = None  # null (given) clears it: start at launch


class CampaignListQuery(Page):
    status: CampaignStatus | None = None


class TestSend(Schema):
    phone: PlainText = Field(min_length=3, max_length=64)  # +E.164


class ScheduleOut(Answer):
    start_at: dt.datetime = Field(description="The instant, in UTC.")
    timezone: str | None
    local_start_at: str | None = Field(description="The same instant in `timezone`, ISO 8601 with its offset.")


class CampaignOut(Answer):
    """A campaign: its draft (template, number, audience, mapping), its quote and money, and its life cycle."""

    id: uuid.UUID
    name: str
    status: CampaignStatus
    template_id: uuid.UUID
    phone_number_id: uuid.UUID
    audience: dict[str, Any]
    variables: dict[str, Any] = Field(description="Template variable → contact field or fixed value.")
    buttons: list[dict[str, Any]]
    schedule: ScheduleOut | None
    quotation_id: uuid.UUID | None = Field(description="The quote the launch holds money for.")
    category: str | None
    currency: str | None
    held: Amount | None = Field(description="The quote's total, held in the wallet at launch.")
    minimum_charge: Amount | None
    recipients: int
    created_by: uuid.UUID | None
    launched_at: dt.datetime | None
    started_at: dt.datetime | None
    paused_at: dt.datetime | None
    fan_out_completed_at: dt.datetime | None
    completed_at: dt.datetime | None
    cancelled_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


class CampaignAnswer(Answer):
    campaign: CampaignOut


class RetryAnswer(Answer):
    campaign: CampaignOut
    requeued: int = Field(description="Failed messages sent again under a new hold.")


class QuoteItemOut(Answer):
    country: str | None
    market: str
    quantity: int
    unit_price: Amount
    amount: Amount


class QuoteWallet(Answer):
    available: Amount
    sufficient: bool
    shortfall: Amount = Field(description="What the wallet lacks to launch; 0 when sufficient.")


class QuoteFreeInWindow(Answer):
    """Recipients whose customer-service window was open at quote time (utility templates only) and what their
    messages cost: Meta may not charge them. An estimate — the total is held in full."""

    recipients: int
    amount: Amount


class CampaignQuoteOut(Answer):
    """The campaign's quotation, and whether the wallet covers it now."""

    id: uuid.UUID
    currency: str
    category: str
    recipients: int
    subtotal: Amount
    fees: Amount
    minimum_charge: Amount
    total: Amount
    estimated_free_in_window: QuoteFreeInWindow = Field(description="An estimate, not a discount.")
    expires_at: dt.datetime
    snapshot_id: uuid.UUID
    status: str
    items: list[QuoteItemOut]
    wallet: QuoteWallet


class QuoteAnswer(Answer):
    campaign: CampaignOut
    quotation: CampaignQuoteOut


class MessageCounts(Answer):
    """Messages by status (one `GROUP BY`; nothing is counted on the sender's hot path)."""

    queued: int
    sending: int
    sent: int
    delivered: int
    read: int
    failed: int
    paused: int
    cancelled: int


class StatsOut(Answer):
    campaign_id: uuid.UUID
    status: CampaignStatus
    recipients: int
    fanned_out: int = Field(description="Recipients written as messages or skipped so far.")
    messages: int
    skipped: int = Field(description="Recipients deleted or opted out before their message was written.")
    fan_out_complete: bool
    counts: MessageCounts
    currency: str | None
    held: Amount
    cost_so_far: Amount = Field(description="Captured from the campaign's holds, net of refunds.")
    held_remaining: Amount


class StatsAnswer(Answer):
    stats: StatsOut


class CampaignPage(Listing[CampaignOut]):
    """Campaigns, newest first."""
