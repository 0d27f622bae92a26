"""Campaign drafts: created, edited and deleted freely, checked whole every time.

A draft is checked on every write, at the quote and again at the launch (a template can be
paused by Meta, a number disconnected, in between), and every problem is reported in one
422 so a client fixes them all at once:

* the template is the vendor's, APPROVED, and of the WABA the chosen number sends from;
* the number is the vendor's and CONNECTED;
* every template variable is filled: by the campaign's mapping or the template's stored
  one, from a contact field with a default (``mobile`` needs none: every contact has one) or
  a fixed value, so every recipient gets a message and none is dropped for an empty field;
* fixed button parameters fit the template's buttons;
* the audience is valid (at least one source);
* a schedule names a real IANA zone and a time in the future.

Only drafts change: anything launched is a 409 naming its status.
"""

from __future__ import annotations

import datetime as dt
import uuid
import zoneinfo
from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy.orm import Session

from kloyst.api import Conflict, Unprocessable, utcnow, validation_details
from kloyst_plugins.campaigns.models import Campaign, CampaignStatus
from kloyst_plugins.campaigns.schemas import CampaignCreate, CampaignPatch, Schedule
from kloyst_plugins.contacts.api import Audience
from kloyst_plugins.templates.api import (
    MEDIA_FORMATS,
    TemplateParameterError,
    check_mapping,
    header_format,
    mapping_keys,
    validate_send,
)
from kloyst_plugins.templates.api import MessageTemplate, TemplateCategory, TemplateStatus
from kloyst_plugins.waba.api import PhoneNumber
from kloyst_plugins.waba.api import meta_waba_id_of
from kloyst_plugins.waba.api import CONNECTED

ALWAYS_PRESENT_FIELDS = frozenset({"mobile"})


@dataclass(frozen=True)
class Checked:
    """A draft that passed every check, with the rows it names."""

    campaign: Campaign
    template: MessageTemplate
    number: PhoneNumber
    audience: Audience
    mapping: dict  # the template's stored mapping overlaid with the campaign's


def start_instant(schedule: Schedule) -> dt.datetime:
    """The UTC instant a schedule names (a naive time is read in its zone; raises ZoneInfoNotFoundError)."""
    zone = zoneinfo.ZoneInfo(schedule.timezone)
    start = schedule.start_at
    if start.tzinfo is None:
        start = start.replace(tzinfo=zone)
    return start.astimezone(dt.timezone.utc)


def require_draft(campaign: Campaign, action: str) -> None:
    if campaign.status != CampaignStatus.DRAFT.value:
        raise Conflict(f"campaign is {campaign.status}: only a DRAFT can be {action}", code="campaign_not_draft",
                       details={"status": campaign.status})


def create(db: Session, body: CampaignCreate, *, user_id: uuid.UUID | None) -> Campaign:
    campaign = Campaign(name=body.name, template_id=body.template_id, phone_number_id=body.phone_number_id,
                        audience=body.audience, variable_mapping=body.variables, buttons=body.buttons,
                        created_by=user_id, status=CampaignStatus.DRAFT.value)
    _set_schedule(campaign, body.schedule)
    check(db, campaign, schedule=body.schedule)
    db.add(campaign)
    db.flush()
    return campaign


def update(db: Session, campaign: Campaign, patch: CampaignPatch) -> Campaign:
    require_draft(campaign, "edited")
    given = patch.model_fields_set
    for field, column in (("name", "name"), ("template_id", "template_id"), ("phone_number_id", "phone_number_id"),
                          ("audience", "audience"), ("variables", "variable_mapping"), ("buttons", "buttons")):
        if field in given and getattr(patch, field) is not None:
            setattr(campaign, column, getattr(patch, field))
    schedule = None
    if "schedule" in given:
        schedule = patch.schedule
        _set_schedule(campaign, schedule)
    with db.no_autoflush:
        check(db, campaign, schedule=schedule)
    db.flush()
    return campaign


def delete(db: Session, campaign: Campaign) -> None:
    require_draft(campaign, "deleted")
    db.delete(campaign)
    db.flush()


def _set_schedule(campaign: Campaign, schedule: Schedule | None) -> None:
    if schedule is None:
        campaign.start_at = campaign.timezone = None
        return
    campaign.timezone = schedule.timezone
    try:
        campaign.start_at = start_instant(schedule)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        campaign.start_at = None  # reported by check()


def check(db: Session, campaign: Campaign, *, schedule: Schedule | None = None, now: dt.datetime | None = None,
          with_schedule: bool = True) -> Checked:
    """Every problem with ``campaign`` in one :class:`Unprocessable`, or the rows it names.

    ``with_schedule=False`` leaves the start time out (a test send goes now, whatever the schedule says).
    """
    problems: list[dict] = []

    def problem(field: str, text: str) -> None:
        problems.append({"field": field, "problem": text})

    template = db.get(MessageTemplate, campaign.template_id)
    number = db.get(PhoneNumber, campaign.phone_number_id)
    if template is None:
        problem("template_id", "no such template; list yours with GET /v1/templates")
    else:
        if template.status != TemplateStatus.APPROVED.value:
            problem("template_id", f"template {template.name!r} ({template.language}) is {template.status}; only "
                                   "APPROVED templates can be sent")
        if template.category not in {c.value for c in TemplateCategory}:
            problem("template_id", f"template category {template.category!r} cannot be priced")
        if header_format(template.components) in MEDIA_FORMATS:
            problem("template_id", "templates with a media header cannot be sent by campaigns; use a template "
                                   "with a text header or none")
    if number is None:
        problem("phone_number_id", "no such phone number; list yours with GET /v1/phone-numbers")
    elif number.status != CONNECTED:
        problem("phone_number_id", f"phone number {number.display_phone_number} is {number.status}, not "
                                   f"{CONNECTED}: it cannot send")
    if template is not None and number is not None and template.meta_waba_id != meta_waba_id_of(db, number):
        problem("template_id", f"template {template.name!r} belongs to another WABA than phone number "
                               f"{number.display_phone_number}; choose a template of that number's WABA")
    mapping = {}
    if template is not None:
        mapping = _check_variables(template, campaign, problem)
    audience = None
    try:
        audience = Audience.model_validate(campaign.audience)
    except ValidationError as exc:
        for detail in validation_details(exc):
            field = detail["field"]
            problem("audience" if field == "(body)" else f"audience.{field}", detail["problem"])
    if with_schedule:
        _check_schedule(campaign, schedule, now or utcnow(), problem)
    if problems:
        summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:5])
        raise Unprocessable(f"the campaign cannot be sent as it is: {summary}", code="invalid_campaign",
                            details={"fields": problems})
    return Checked(campaign, template, number, audience, mapping)


def _check_variables(template: MessageTemplate, campaign: Campaign, problem) -> dict:
    given = campaign.variable_mapping or {}
    for text in check_mapping(template, given):
        problem("variables", text)
    merged = {**(template.variable_mapping or {}), **given}
    for key in mapping_keys(template):
        spec = merged.get(key)
        if not isinstance(spec, dict):
            problem("variables", f"variable {key!r} has no mapping; map it to a contact field with a default, or "
                                 "to a value")
        elif "field" in spec and spec["field"] not in ALWAYS_PRESENT_FIELDS and not spec.get("default"):
            problem("variables", f"variable {key!r} maps to {spec['field']!r}, which a contact may lack; give a "
                                 "default so every recipient gets a message")
    try:
        sample = {"body": _sample(template.body_variables, template), "header": _sample(template.header_variables,
                                                                                     template)}
        validate_send(template, buttons=campaign.buttons or (), **sample)
    except TemplateParameterError as exc:
        for text in exc.problems:
            problem("buttons", text)
    return merged


def _sample(variables, template):
    """Stand-in values for the variables, so that checking the buttons reports only the buttons."""
    if not variables:
        return None
    if template.parameter_format == "NAMED":
        return {v: "x" for v in variables}
    return ["x"] * len(variables)


def _check_schedule(campaign: Campaign, schedule: Schedule | None, now: dt.datetime, problem) -> None:
    zone = schedule.timezone if schedule is not None else campaign.timezone
    if zone is None:
        return
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        problem("schedule.timezone", f"{zone!r} is not an IANA time zone (e.g. Europe/Paris, America/New_York)")
        return
    if campaign.start_at is None:
        problem("schedule.start_at", "not a valid time")
    elif campaign.start_at <= now:
        problem("schedule.start_at", f"{campaign.start_at.isoformat()} is in the past; choose a time in the future "
                                     "or no schedule to start at launch")
