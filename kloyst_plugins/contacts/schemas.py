"""What a client may send to the contacts API and what it answers, and the value rules every writer of contacts shares.

The rules for labels, attributes and countries are plain functions (``clean_labels``,
``clean_attributes``, ``clean_country``) so that the import pipeline and webhooks apply
exactly the checks the API applies; the pydantic schemas below only wire them in, which
turns a broken rule into a 422 naming the field.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from typing import Annotated, Any, Literal

import phonenumbers
from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from kloyst.api import Answer, iso_timestamp, Listing, multi_line, Page, PlainText, Schema, single_line
from kloyst_plugins.contacts.bsuids import MAX_LENGTH as MAX_BSUID_LENGTH, MAX_USERNAME_LENGTH, normalize_bsuid
from kloyst_plugins.contacts.models import AuditAction, ContactSource

MAX_LABELS = 50
MAX_LABEL_LENGTH = 64
MAX_ATTRIBUTES = 50
MAX_ATTRIBUTE_KEY_LENGTH = 64
MAX_ATTRIBUTE_TEXT_LENGTH = 1000
MAX_NAME_LENGTH = 200


def clean_labels(labels: list[str]) -> list[str]:
    """Trimmed, non-empty, one line of at most 64 characters each, at most 50, duplicates dropped (first kept).

    The count is checked before anything looks at a label, so a hostile list costs one ``len``;
    the de-duplication is a dict, linear in the labels (issue 15: a list scan made 80,000 labels
    cost 23 s). A list of more than 50 is refused even when duplicates would bring it under.
    """
    if not isinstance(labels, list):
        raise ValueError("labels are a list of strings")
    if len(labels) > MAX_LABELS:
        raise ValueError(f"a contact has at most {MAX_LABELS} labels, not {len(labels)}")
    cleaned: dict[str, None] = {}
    for label in labels:
        if not isinstance(label, str):
            raise ValueError("labels are strings")
        text = label.strip()
        if not text:
            raise ValueError("labels cannot be empty")
        if len(text) > MAX_LABEL_LENGTH:
            raise ValueError(f"a label has at most {MAX_LABEL_LENGTH} characters")
        cleaned[single_line(text)] = None
    return list(cleaned)


def clean_attributes(attributes: dict) -> dict:
    """A flat object: at most 50 keys, values text, number, true/false or null (no nesting, no NaN)."""
    if not isinstance(attributes, dict):
        raise ValueError("attributes are a JSON object")
    if len(attributes) > MAX_ATTRIBUTES:
        raise ValueError(f"at most {MAX_ATTRIBUTES} attributes")
    cleaned = {}
    for key, value in attributes.items():
        name = key.strip() if isinstance(key, str) else ""
        if not name or len(name) > MAX_ATTRIBUTE_KEY_LENGTH:
            raise ValueError(f"attribute names are 1 to {MAX_ATTRIBUTE_KEY_LENGTH} characters")
        single_line(name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"attribute {name!r} is not a finite number")
        if isinstance(value, str) and len(value) > MAX_ATTRIBUTE_TEXT_LENGTH:
            raise ValueError(f"attribute {name!r} is longer than {MAX_ATTRIBUTE_TEXT_LENGTH} characters")
        if isinstance(value, str):
            multi_line(value)  # an address may span lines; no other control character
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ValueError(f"attribute {name!r} must be text, a number, true/false or null (no nesting)")
        cleaned[name] = value
    return cleaned


def clean_country(value: str) -> str:
    """An ISO 3166-1 alpha-2 code that phonenumbers knows (upper-cased)."""
    code = value.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError("an ISO 3166-1 alpha-2 country code such as GB, IN or US")
    return code


def _as_utc(value: dt.datetime) -> dt.datetime:
    # A time without an offset is read as UTC, the zone every stored time is in.
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


# Size bounds only (read before the rules run); the rules below give the precise messages.
Country = Annotated[str, Field(max_length=16), AfterValidator(clean_country)]
Label = Annotated[str, Field(max_length=MAX_LABEL_LENGTH)]
# max_length bounds what pydantic reads before clean_labels/clean_attributes loop over it.
Labels = Annotated[list[Label], Field(max_length=MAX_LABELS), AfterValidator(clean_labels)]
Attributes = Annotated[dict, Field(max_length=MAX_ATTRIBUTES), AfterValidator(clean_attributes)]
UTCTime = Annotated[dt.datetime, BeforeValidator(iso_timestamp), AfterValidator(_as_utc)]
Name = Annotated[PlainText, Field(max_length=MAX_NAME_LENGTH), BeforeValidator(lambda v: v.strip() if isinstance(v, str)
                                                                               else v)]

# WhatsApp's business-scoped user ids (see .bsuids) and usernames.
Bsuid = Annotated[str, Field(min_length=1, max_length=MAX_BSUID_LENGTH), AfterValidator(normalize_bsuid)]
ParentBsuid = Annotated[str, Field(min_length=1, max_length=MAX_BSUID_LENGTH),
                        AfterValidator(lambda v: normalize_bsuid(v, parent=True))]


def _any_bsuid(value: str) -> str:
    try:
        return normalize_bsuid(value)
    except ValueError:
        return normalize_bsuid(value, parent=True)


AnyBsuid = Annotated[str, Field(min_length=1, max_length=MAX_BSUID_LENGTH), AfterValidator(_any_bsuid)]
Username = Annotated[PlainText, Field(max_length=MAX_USERNAME_LENGTH), BeforeValidator(lambda v: v.strip()
                                                                                       if isinstance(v, str) else v)]


class ContactCreate(Schema):
    """A contact is known by ``mobile``, by ``bsuid`` (a WhatsApp user whose number is withheld), or both."""

    mobile: str | None = Field(default=None, min_length=1, max_length=64)
    default_country: Country | None = None  # for numbers written without +country code
    name: Name | None = None
    labels: Labels = []
    attributes: Attributes = {}
    bsuid: Bsuid | None = None
    parent_bsuid: ParentBsuid | None = None
    username: Username | None = None

    @model_validator(mode="after")
    def _has_an_identity(self) -> ContactCreate:
        if self.mobile is None and self.bsuid is None:
            raise ValueError("give the contact a mobile number, a bsuid (WhatsApp business-scoped user id), or both")
        return self


class ContactPatch(Schema):
    """Fields left out are kept; ``name``, ``bsuid``, ``parent_bsuid`` or ``username`` as null clear them (a
    contact keeps a mobile or a BSUID); labels and attributes are replaced whole."""

    mobile: str | None = Field(default=None, min_length=1, max_length=64)
    default_country: Country | None = None
    name: Name | None = None
    labels: Labels | None = None
    attributes: Attributes | None = None
    bsuid: Bsuid | None = None
    parent_bsuid: ParentBsuid | None = None
    username: Username | None = None


class ContactFilter(Schema):
    """Which contacts a list, export or bulk action covers; every condition must hold."""

    label: list[Label] = Field(default=[], max_length=MAX_LABELS)  # the contact has every one of them
    opted_out: bool | None = None
    country: Country | None = None
    created_from: UTCTime | None = None  # inclusive
    created_to: UTCTime | None = None  # exclusive
    phone: str | None = Field(default=None, min_length=1, max_length=64)
    default_country: Country | None = None  # how to read ``phone`` when it has no +country code
    bsuid: AnyBsuid | None = None  # the contact with this BSUID (or, for a US.ENT.… id, this parent BSUID)

    @field_validator("label", mode="before")
    @classmethod
    def _one_label_is_a_list(cls, value):
        return [value] if isinstance(value, str) else value

    @field_validator("label")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        return clean_labels(value)


class ContactListQuery(ContactFilter, Page):
    pass


class ExportQuery(ContactFilter):
    format: Literal["csv", "xlsx"] = "csv"


class BulkBody(Schema):
    """``filter`` is required: ``{}`` means every contact of the vendor, and must be said explicitly."""

    action: Literal["label", "unlabel", "delete"]
    labels: Labels = Field(default=[], validate_default=True)
    filter: ContactFilter

    @field_validator("labels")
    @classmethod
    def _labels_only_for_label_actions(cls, value, info):
        action = info.data.get("action")
        if action in ("label", "unlabel") and not value:
            raise ValueError(f"name the labels to {action}")
        if action == "delete" and value:
            raise ValueError("delete takes no labels")
        return value


class ContactOut(Answer):
    """A contact, decrypted for the vendor that owns it."""

    id: uuid.UUID
    mobile: str | None = Field(description="E.164, such as +12025550140; null for a contact known only by its BSUID.")
    bsuid: str | None = Field(description="The WhatsApp business-scoped user id (Meta's `user_id`), such as "
                                          "US.13491208655302741918.")
    parent_bsuid: str | None = Field(description="The parent BSUID shared across a managed business's portfolios.")
    username: str | None = Field(description="The WhatsApp username, as the user's profile last showed it.")
    name: str | None
    country: str | None = Field(description="ISO 3166-1 alpha-2, from the number (or the BSUID's prefix when the "
                                            "number is unknown).")
    calling_code: int | None
    labels: list[str]
    attributes: dict[str, Any]
    opted_out: bool
    opted_out_at: dt.datetime | None
    source: ContactSource = Field(description="How the contact first came: api, import or webhook.")
    last_inbound_at: dt.datetime | None = Field(description="When the contact last wrote to the vendor.")
    created_at: dt.datetime
    updated_at: dt.datetime


class ContactAnswer(Answer):
    contact: ContactOut


class OptChange(Answer):
    contact: ContactOut
    changed: bool = Field(description="False when the contact already was in the state asked for.")


class AuditEntryOut(Answer):
    """One change to a contact; numbers and names show only as `"changed"`."""

    id: uuid.UUID
    contact_id: uuid.UUID
    action: AuditAction
    source: ContactSource
    actor_user_id: uuid.UUID | None
    import_job_id: uuid.UUID | None
    changes: dict[str, Any] = Field(description="Each changed field as `[before, after]`.")
    created_at: dt.datetime


class BulkAnswer(Answer):
    action: Literal["label", "unlabel", "delete"]
    matched: int = Field(description="Contacts the filter selects.")
    changed: int = Field(description="Contacts actually changed (and audited).")


class ContactPage(Listing[ContactOut]):
    """Contacts, newest first."""


class AuditPage(Listing[AuditEntryOut]):
    """A contact's changes, newest first."""
