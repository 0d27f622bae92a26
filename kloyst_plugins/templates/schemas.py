"""What a client may send to the templates API.

The shape is checked here (names, languages, enums, sizes); what a definition must contain
to pass Meta's review is :mod:`.definition`'s job, which reports every problem at once.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from kloyst.http.pagination import Page
from kloyst.http.validation import Schema
from kloyst_plugins.templates.models import ParameterFormat, TemplateCategory, TemplateStatus

MAX_COMPONENTS = 20
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
    components: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_COMPONENTS)


class TemplateListQuery(Page):
    status: TemplateStatus | None = None
    category: TemplateCategory | None = None
    name: str | None = Field(default=None, min_length=1, max_length=512)  # part of the name
    language: str | None = Field(default=None, pattern=LANGUAGE_PATTERN)
    meta_waba_id: str | None = Field(default=None, pattern=META_ID_PATTERN)


class VariableMappingBody(Schema):
    """Replaces the stored mapping whole; ``{}`` clears it. Checked against the template's variables."""

    variable_mapping: dict[str, Any]


class SyncBody(Schema):
    """Sync one WABA (by its Meta id), or every WABA the vendor can use when left out."""

    meta_waba_id: str | None = Field(default=None, pattern=META_ID_PATTERN)
