"""A vendor's rules and settings: what the API may store, checked whole before anything is written.

A rule that answers with a template names an APPROVED template of one of the vendor's WABAs
(templates plugin) that can be sent without parameters: its variables, if any, are filled from the
contact by the template's variable mapping, and its header is not media. The template is checked
again when the answer is queued (it may have been paused since), and a template auto-reply is
charged like any template send.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kloyst.api import Conflict, Unprocessable
from kloyst_plugins.autoreplies.models import AutoReplyRule, AutoReplySettings, RuleAction
from kloyst_plugins.autoreplies.schemas import check_answer, RuleCreate, RulePatch, SettingsPatch, TemplateRef
from kloyst_plugins.templates.api import HEADER_KEY_PREFIX, MEDIA_FORMATS, MessageTemplate, TemplateStatus

DEFAULT_OPT_OUT_TEXT = "You are unsubscribed: you will receive no more messages from us."
DEFAULT_OPT_IN_TEXT = "You are subscribed again. Reply STOP at any time to unsubscribe."


def check_template(db: Session, ref: TemplateRef) -> MessageTemplate:
    """The vendor's APPROVED template ``ref`` names, if it can be sent as an auto-reply; else a 422 saying why."""
    found = db.scalars(select(MessageTemplate).where(MessageTemplate.name == ref.name,
                                                     MessageTemplate.language == ref.language)).all()
    approved = [t for t in found if t.status == TemplateStatus.APPROVED.value]
    if not approved:
        states = sorted({t.status for t in found})
        problem = (f"template {ref.name!r} ({ref.language}) is {', '.join(states)}, not APPROVED" if found else
                   f"you have no template {ref.name!r} in language {ref.language!r}")
        raise Unprocessable(f"template: {problem}", code="template_not_sendable", field="template")
    template = approved[0]
    mapping = template.variable_mapping or {}
    unfilled = [v for v in template.body_variables or [] if v not in mapping]
    unfilled += [HEADER_KEY_PREFIX + v for v in template.header_variables or [] if HEADER_KEY_PREFIX + v not in mapping]
    if unfilled:
        raise Unprocessable(f"template: {ref.name!r} has variables ({', '.join(unfilled)}) that its variable "
                            "mapping does not fill from the contact; map them on the template first "
                            "(PUT /v1/templates/{id}/variable-mapping) or choose a template without variables",
                            code="template_not_sendable", field="template")
    header = next((c for c in template.components or [] if isinstance(c, dict) and c.get("type") == "HEADER"), None)
    if header is not None and str(header.get("format") or "TEXT").upper() in MEDIA_FORMATS:
        raise Unprocessable(f"template: {ref.name!r} has a {header['format']} header, which an auto-reply cannot "
                            "fill; choose a template with a text header or none", code="template_not_sendable",
                            field="template")
    return template


def create_rule(db: Session, body: RuleCreate) -> AutoReplyRule:
    if body.template is not None:
        check_template(db, body.template)
    rule = AutoReplyRule(keyword=body.keyword, match=body.match, language=body.language or "", action=body.action,
                         reply_text=body.text, enabled=body.enabled,
                         template_name=body.template.name if body.template else None,
                         template_language=body.template.language if body.template else None)
    _save(db, rule)
    return rule


def patch_rule(db: Session, rule: AutoReplyRule, body: RulePatch) -> AutoReplyRule:
    given = body.model_fields_set
    for field in ("keyword", "match", "action", "enabled"):
        if field in given:
            value = getattr(body, field)
            if value is None:
                raise Unprocessable(f"{field}: may not be null", field=field)
            setattr(rule, field, value)
    if "language" in given:
        rule.language = body.language or ""
    if "text" in given:
        rule.reply_text = body.text
    if "template" in given:
        if body.template is not None:
            check_template(db, body.template)
        rule.template_name = body.template.name if body.template else None
        rule.template_language = body.template.language if body.template else None
    if "text" in given and body.text is not None and "template" not in given:
        rule.template_name = rule.template_language = None  # a new text replaces the template
    if "template" in given and body.template is not None and "text" not in given:
        rule.reply_text = None
    if rule.action == RuleAction.OPT_IN.value and not ({"text", "template"} & given):
        rule.reply_text = rule.template_name = rule.template_language = None  # an opt_in rule answers nothing itself
    template = (TemplateRef(name=rule.template_name, language=rule.template_language)
                if rule.template_name and rule.template_language else None)
    try:
        check_answer(rule.action, rule.reply_text, template)
    except ValueError as exc:
        raise Unprocessable(str(exc), code="validation_failed") from None
    _save(db, rule)
    return rule


def _save(db: Session, rule: AutoReplyRule) -> None:
    try:
        with db.begin_nested():
            db.add(rule)
            db.flush()
    except IntegrityError:
        other = db.scalars(select(AutoReplyRule.id).where(
            AutoReplyRule.keyword == rule.keyword, AutoReplyRule.match == rule.match,
            AutoReplyRule.language == rule.language)).first()
        raise Conflict(f"you already have a {rule.match} rule for {rule.keyword!r}"
                       f"{' in ' + rule.language if rule.language else ''}: {other}; change that one",
                       code="duplicate_rule", details={"rule_id": str(other)}) from None


def settings_of(db: Session) -> AutoReplySettings:
    """The vendor's settings: its row, or an unsaved row of the defaults."""
    row = db.scalars(select(AutoReplySettings)).first()
    return row if row is not None else defaults()


def defaults() -> AutoReplySettings:
    return AutoReplySettings(time_zone="UTC", business_hours={}, away_enabled=False, away_text="",
                             away_interval_hours=24, opt_out_confirmation=True, opt_out_text=DEFAULT_OPT_OUT_TEXT,
                             opt_in_confirmation=True, opt_in_text=DEFAULT_OPT_IN_TEXT)


def update_settings(db: Session, body: SettingsPatch) -> AutoReplySettings:
    row = db.scalars(select(AutoReplySettings).with_for_update()).first()
    if row is None:
        row = defaults()
        db.add(row)
    for field in body.model_fields_set:
        value = getattr(body, field)
        if value is None:
            raise Unprocessable(f"{field}: may not be null", field=field)
        setattr(row, field, value)
    if row.away_enabled and not row.away_text.strip():
        raise Unprocessable("away_text: an enabled away message needs a text", field="away_text")
    try:
        with db.begin_nested():
            db.flush()
    except IntegrityError:  # a concurrent first PATCH created the row: the client may simply retry
        raise Conflict("the settings were changed by another request at the same time; send this change again",
                       code="concurrent_change") from None
    return row
