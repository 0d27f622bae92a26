"""Request and answer schemas of ``/v1/autoreplies``: rules (with their counters) and settings."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from kloyst.api import Answer, Listing, MultilineText, PlainText, Schema
from kloyst_plugins.autoreplies import hours
from kloyst_plugins.autoreplies.matching import MAX_KEYWORD, normalize

MAX_TEXT = 4096  # Meta's limit on a text message's body
LANGUAGE_PATTERN = r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})?$"


class TemplateRef(Schema):
    name: PlainText = Field(min_length=1, max_length=512, description="An APPROVED template of one of your WABAs.")
    language: PlainText = Field(min_length=2, max_length=16, pattern=LANGUAGE_PATTERN, examples=["en_US"])


def _keyword(value: str | None) -> str | None:
    if value is None:
        return None
    keyword = normalize(value)
    if not keyword:
        raise ValueError("the keyword is empty: give a word or phrase")
    return keyword


class RuleFields(Schema):
    """What a rule's fields may be; a rule answers with ``text`` or ``template`` (action ``reply``), or opts in."""

    keyword: PlainText | None = Field(None, max_length=MAX_KEYWORD, description=(
        "Compared case-insensitively, spaces collapsed; stored normalized."))
    match: Literal["exact", "prefix"] | None = Field(None, description=(
        "`exact`: the whole message; `prefix`: the message starts with the keyword as whole words."))
    language: PlainText | None = Field(None, max_length=16, pattern=LANGUAGE_PATTERN, description=(
        "Only for contacts whose `language` attribute is this language (`es` fits `es_MX`); null: everyone."))
    action: Literal["reply", "opt_in"] | None = Field(None, description=(
        "`reply` answers with `text` or `template`; `opt_in` opts an opted-out contact back in (e.g. START), "
        "and the opt-in confirmation of the settings answers."))
    text: MultilineText | None = Field(None, min_length=1, max_length=MAX_TEXT)
    template: TemplateRef | None = None
    enabled: bool | None = None

    _normal_keyword = field_validator("keyword")(_keyword)


class RuleCreate(RuleFields):
    keyword: PlainText = Field(max_length=MAX_KEYWORD, description="Compared case-insensitively, spaces collapsed.")
    match: Literal["exact", "prefix"] = "exact"
    action: Literal["reply", "opt_in"] = "reply"
    enabled: bool = True

    @model_validator(mode="after")
    def _one_answer(self):
        check_answer(self.action, self.text, self.template)
        return self


def check_answer(action: str, text: str | None, template: TemplateRef | None) -> None:
    """A ``reply`` rule has exactly one of text and template; an ``opt_in`` rule has neither."""
    if action == "reply" and (text is None) == (template is None):
        raise ValueError("a reply rule answers with exactly one of 'text' and 'template'")
    if action == "opt_in" and (text is not None or template is not None):
        raise ValueError("an opt_in rule sends the opt-in confirmation of the settings: leave out 'text' and "
                         "'template'")


class RulePatch(RuleFields):
    """Fields to change; ``language``, ``text`` and ``template`` may be set to null."""


class RuleStats(Answer):
    hits: int = Field(description="Customer messages this rule answered (or tried to).")
    failures: int = Field(description="Answers that could not be queued (e.g. the wallet could not pay a template).")
    last_hit_at: dt.datetime | None
    last_failed_at: dt.datetime | None
    last_error: str | None


class TemplateOut(Answer):
    name: str
    language: str


class RuleOut(Answer):
    id: uuid.UUID
    keyword: str
    match: str
    language: str | None
    action: str
    text: str | None
    template: TemplateOut | None
    enabled: bool
    stats: RuleStats
    created_at: dt.datetime
    updated_at: dt.datetime


class RuleAnswer(Answer):
    rule: RuleOut


class RulePage(Listing[RuleOut]):
    """The vendor's auto-reply rules, newest first."""


class ReplyOut(Answer):
    id: uuid.UUID
    kind: Literal["keyword", "away", "opt_out_confirmation", "opt_in_confirmation", "opted_in"]
    status: Literal["queued", "done", "failed"] = Field(description=(
        "`queued`: a message was queued (`message_id`); `done`: nothing to send (an opt_in rule opted the contact "
        "in; its confirmation is a reply of its own); `failed`: the answer could not be queued (`error`)."))
    rule_id: uuid.UUID | None
    contact_id: uuid.UUID | None
    phone_number_id: uuid.UUID | None
    inbound_id: uuid.UUID | None = Field(description="The customer's message answered (or confirmed).")
    message_id: uuid.UUID | None
    error: str | None
    created_at: dt.datetime


class ReplyPage(Listing[ReplyOut]):
    """What the auto-replies did, newest first: every answer queued or failed, one per customer message at most."""


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
Clock = Annotated[str, Field(max_length=5, examples=["09:00"])]
Interval = Annotated[list[Clock], Field(min_length=2, max_length=2, description="[opens, closes], HH:MM local")]
Intervals = Annotated[list[Interval], Field(max_length=hours.MAX_INTERVALS)]


class SettingsPatch(Schema):
    time_zone: PlainText | None = Field(None, max_length=64, description="An IANA time zone, e.g. `Europe/Berlin`.")
    business_hours: dict[Day, Intervals] | None = Field(None, max_length=7, description=(
        "Open intervals per weekday in local time: `{\"mon\": [[\"09:00\", \"17:00\"]]}`; a day not listed is "
        "closed."), examples=[{"mon": [["09:00", "17:00"]], "sat": [["10:00", "14:00"]]}])
    away_enabled: bool | None = None
    away_text: MultilineText | None = Field(None, max_length=MAX_TEXT)
    away_interval_hours: int | None = Field(None, ge=1, le=168, description=(
        "At most one away message per conversation in this many hours."))
    opt_out_confirmation: bool | None = None
    opt_out_text: MultilineText | None = Field(None, min_length=1, max_length=MAX_TEXT)
    opt_in_confirmation: bool | None = None
    opt_in_text: MultilineText | None = Field(None, min_length=1, max_length=MAX_TEXT)

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            hours.zone(value)
        return value

    @field_validator("business_hours")
    @classmethod
    def _schedule(cls, value: dict | None) -> dict | None:
        return None if value is None else hours.check(value)


class SettingsOut(Answer):
    time_zone: str
    business_hours: dict[str, list[list[str]]]
    away_enabled: bool
    away_text: str
    away_interval_hours: int
    opt_out_confirmation: bool
    opt_out_text: str
    opt_in_confirmation: bool
    opt_in_text: str
    open_now: bool = Field(description="Whether the business hours say you are open at this moment.")


class SettingsAnswer(Answer):
    settings: SettingsOut
