"""What a client may send to the vendor webhooks API, and what it answers."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import Field

from kloyst.api import Answer, Listing, MAX_CURSOR_LENGTH, MAX_LIMIT, Page, PlainText, Schema
from kloyst_plugins.vendor_webhooks.models import DeliveryStatus

MAX_EVENT_TYPES = 64

EventTypes = list[PlainText]


class EndpointCreate(Schema):
    url: str = Field(min_length=1, max_length=2048, description="https:// URL that receives the events by POST.")
    event_types: EventTypes = Field(min_length=1, max_length=MAX_EVENT_TYPES,
                                    description="Event types to receive (docs/events.md), or [\"*\"] for all.")
    description: PlainText = Field("", max_length=200)
    enabled: bool = True


class EndpointUpdate(Schema):
    url: str | None = Field(None, min_length=1, max_length=2048)
    event_types: EventTypes | None = Field(None, min_length=1, max_length=MAX_EVENT_TYPES)
    description: PlainText | None = Field(None, max_length=200)
    enabled: bool | None = None


class EndpointOut(Answer):
    id: uuid.UUID
    url: str
    event_types: list[str]
    description: str
    enabled: bool
    consecutive_failures: int = Field(description="Failed attempts in a row (0 once one succeeds).")
    paused_until: dt.datetime | None = Field(description="While failing: no attempt before this (circuit breaker).")
    previous_secret_expires_at: dt.datetime | None = Field(
        description="After a rotation: until when the previous secret also signs deliveries.")
    created_at: dt.datetime
    updated_at: dt.datetime


class EndpointAnswer(Answer):
    endpoint: EndpointOut


class EndpointWithSecret(Answer):
    """An endpoint and its new secret: shown this once, keep it (it verifies Kloyst-Signature)."""

    endpoint: EndpointOut
    secret: str


class EndpointPage(Listing[EndpointOut]):
    """The vendor's webhook endpoints, newest first."""


class DeliveryListQuery(Page):
    status: DeliveryStatus | None = None


class DeliveryOut(Answer):
    id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: str = Field(description="The event's id, as in the Kloyst-Event-Id header and the feed.")
    event_type: str
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None = Field(description="The endpoint's last HTTP status, if it answered.")
    last_error: str | None = Field(description="Why the last attempt failed.")
    last_attempt_at: dt.datetime | None
    next_attempt_at: dt.datetime | None = Field(description="When it is tried next (PENDING only).")
    delivered_at: dt.datetime | None
    created_at: dt.datetime


class DeliveryAnswer(Answer):
    delivery: DeliveryOut


class DeliveryPage(Listing[DeliveryOut]):
    """An endpoint's deliveries, newest first."""


class Redelivered(Answer):
    redelivered: int = Field(description="Deliveries queued again.")


class EventFeedQuery(Schema):
    after: str | None = Field(None, max_length=MAX_CURSOR_LENGTH,
                              description="next_cursor of the previous poll; absent: from the oldest event kept.")
    types: str | None = Field(None, max_length=2000, description="Comma-separated event types; absent: all.")
    limit: int = Field(100, ge=1, le=MAX_LIMIT)


class EventOut(Answer):
    id: str
    type: str
    vendor_id: uuid.UUID
    occurred_at: dt.datetime
    data: dict[str, Any]


class EventFeed(Answer):
    """The vendor's events after the cursor, oldest first."""

    items: list[EventOut]
    next_cursor: str = Field(description="Pass as `after` next time (also when no event came: poll again with it).")
