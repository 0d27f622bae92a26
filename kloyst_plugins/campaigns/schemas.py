"""What a client may send to the campaigns API.

Shapes only: whether the template exists and is approved, whether the mapping covers its
variables, whether the time is in the future, is checked on the whole draft by
:mod:`.drafts`, so that one 422 lists every problem.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import Field

from kloyst.http.pagination import Page
from kloyst.http.validation import Schema
from kloyst_plugins.campaigns.models import CampaignStatus


class Schedule(Schema):
    """When to start: a wall-clock time in an IANA time zone (``2026-12-01T09:00`` in ``Europe/Paris``).

    A time with an offset is taken as that instant; without one it is read in ``timezone``.
    """

    start_at: dt.datetime
    timezone: str = Field(default="UTC", min_length=1, max_length=64)


class CampaignCreate(Schema):
    name: str = Field(min_length=1, max_length=200)
    template_id: uuid.UUID
    phone_number_id: uuid.UUID
    audience: dict[str, Any]
    # Template variable → {"field": "name", "default": "there"} or {"value": "…"}; the template's own mapping
    # fills the variables left out.
    variables: dict[str, Any] = Field(default_factory=dict)
    buttons: list[dict[str, Any]] = Field(default_factory=list)
    schedule: Schedule | None = None


class CampaignPatch(Schema):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    template_id: uuid.UUID | None = None
    phone_number_id: uuid.UUID | None = None
    audience: dict[str, Any] | None = None
    variables: dict[str, Any] | None = None
    buttons: list[dict[str, Any]] | None = None
    schedule: Schedule | None = None  # null (given) clears it: start at launch


class CampaignListQuery(Page):
    status: CampaignStatus | None = None


class TestSend(Schema):
    phone: str = Field(min_length=3, max_length=64)  # +E.164
