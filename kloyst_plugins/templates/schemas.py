"""What a client may send to the templates API, and what it answers.

The shape is checked here (names, languages, enums, sizes); what a definition must contain
to pass Meta's review is :mod:`.definition`'s job, which reports every problem at once.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from pydantic import Field

from kloyst.api import Answer, Listing, Page, PlainText, Schema
from kloyst_plugins.templates.models import ParameterFormat, TemplateCategory, TemplateStatus

MAX_COMPONENTS = 20
MAX_COMPONENT_KEYS = 20  # Meta's components have a handful (type, format, text, example, buttons…)
# A body of at most 1,024 characters never has this many variables (a mapping key per variable).
MAX_MAPPED_VARIABLES = 100
# Meta's locale codes: "en", "en_US", "pt_BR", "zh_HK", "fil", "es_419"…
LANGUAGE_PATTERN = r"^[a-z]{2,3}(_[A-Za-z0-9]{2,4})?$"
META_ID_PATTERN = r"^[0-9]{1,32}$"


class TemplateCreate(Schema):
    """A template to submit for review, in Meta's own shape, in a WABA named by its Meta id."""

    meta_waba_id: str = Field(pattern=META_ID_PATTERN)
    name: str = Field(min_length=1, max_length=512, pattern=r"^[a-z0-9_]+$")
    language: str = Field(pattern=LANGUAGE_PATTERN)
    category: TemplateCategory
    parameter_format: ParameterFormat = ParameterFormat.POSITIONAL
    components: list[Annotated[dict[str, Any], Field(max_length=MAX_COMPONENT_KEYS)]] = Field(
        min_length=1, max_length=MAX_COMPONENTS)


class TemplateListQuery(Page):
    status: TemplateStatus | None = None
    category: TemplateCategory | None = None
    name: PlainText | None = Field(default=None, min_length=1, max_length=512)  # part of the name
    language: str | None = Field(default=None, pattern=LANGUAGE_PATTERN)
    meta_waba_id: str | None = Field(default=None, pattern=META_ID_PATTERN)


class VariableMappingBody(Schema):
    """Replaces the stored mapping whole; ``{}`` clears it. Checked against the template's variables."""

    variable_mapping: dict[str, Any] = Field(max_length=MAX_MAPPED_VARIABLES)


class SyncBody(Schema):
    """Sync one WABA (by its Meta id), or every WABA the vendor can use when left out."""

    meta_waba_id: str | None = Field(default=None, pattern=META_ID_PATTERN)


class TemplateOut(Answer):
    """A message template as Meta has it, with the variables its components use and the stored mapping."""

    id: uuid.UUID = Field(description="Kloyst's id: the `template_id` of a campaign.")
    meta_waba_id: str
    meta_template_id: str | None
    name: str
    language: str
    category: str = Field(description="MARKETING, UTILITY or AUTHENTICATION.")
    status: TemplateStatus = Field(description="Meta's review state; only an APPROVED template sends.")
    quality_score: str | None
    parameter_format: ParameterFormat
    components: list[dict[str, Any]] = Field(description="In Meta's shape.")
    header_variables: list[str]
    body_variables: list[str]
    button_variables: dict[str, list[str]] = Field(description="By button index.")
    variable_mapping: dict[str, Any]
    rejected_reason: str | None
    last_synced_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


class TemplateAnswer(Answer):
    template: TemplateOut


class SyncQueued(Answer):
    queued: list[str] = Field(description="The Meta ids of the WABAs whose sync this request queued.")
    already_queued: list[str] = Field(description="The Meta ids of the WABAs whose sync was already queued or "
                                                  "running: none more is queued, that one answers this request.")


class SyncStateOut(Answer):
    meta_waba_id: str
    last_attempt_at: dt.datetime | None = Field(description="Null until the first attempt.")
    queued: bool = Field(description="A sync is queued or running; poll until it is false.")
    last_synced_at: dt.datetime | None = Field(description="The last sync that succeeded.")
    template_count: int | None = Field(description="How many templates Meta listed then.")
    last_error: str | None = Field(description="Null once a sync succeeds.")


class SyncStates(Answer):
    """One entry per WABA a sync was asked for, by Meta id."""

    items: list[SyncStateOut]


class TemplatePage(Listing[TemplateOut]):
    """Templates, newest first."""
