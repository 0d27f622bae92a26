"""Meta's template webhooks applied to the vendor's copy: review status, category, quality.

Each change names the template by its Meta id; it is looked up within the vendor's scope
(the drainer hands each vendor its share) and the WABA the change came from. A template the
vendor does not have (created elsewhere and not synced yet) is logged and ignored: the next
sync brings it in with its current state. Every update sets a value, never increments, so a
redelivered change is harmless.

Status events that are not review states are not copied into ``status``: FLAGGED (a
quality warning; the template stays sendable, its quality arrives in its own event),
LOCKED (it can no longer be edited) and UNARCHIVED (its state after that is whatever it was
before). REINSTATED means approved again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import select

from kloyst.api import WebhookChange
from kloyst_plugins.templates.models import MessageTemplate, TemplateStatus

log = logging.getLogger(__name__)

STATUS_FIELD = "message_template_status_update"
CATEGORY_FIELD = "template_category_update"
QUALITY_FIELD = "message_template_quality_update"

STATUSES = {s.value for s in TemplateStatus}
EVENT_STATUS = {"REINSTATED": TemplateStatus.APPROVED.value}
NOT_A_STATUS = frozenset({"FLAGGED", "LOCKED", "UNARCHIVED"})


def _template(db, change: WebhookChange) -> MessageTemplate | None:
    template_id = change.value.get("message_template_id")
    if template_id is None:
        log.warning("%s without message_template_id (delivery %s); ignored", change.field, change.delivery_id)
        return None
    template = db.scalar(select(MessageTemplate).where(MessageTemplate.meta_template_id == str(template_id),
                                                       MessageTemplate.meta_waba_id == change.meta_waba_id))
    if template is None:
        log.info("%s for template %s of WABA %s, which this vendor has not synced; ignored", change.field,
                 template_id, change.meta_waba_id)
    return template


def _rejection(value: Mapping[str, Any]) -> str | None:
    info = value.get("rejection_info")
    reason = info.get("reason") if isinstance(info, Mapping) and info.get("reason") else value.get("reason")
    return str(reason)[:500] if reason and str(reason).upper() != "NONE" else None


def apply_status(template: MessageTemplate, value: Mapping[str, Any]) -> None:
    event = str(value.get("event") or "").upper()
    if event in NOT_A_STATUS:
        log.info("template %s: %s noted, status stays %s", template.meta_template_id, event, template.status)
        return
    status = EVENT_STATUS.get(event, event)
    if status not in STATUSES:
        log.warning("template %s: unknown status event %r ignored; the next sync reads its state",
                    template.meta_template_id, event)
        return
    template.status = status
    if status == TemplateStatus.REJECTED.value:
        template.rejected_reason = _rejection(value)
    elif status == TemplateStatus.APPROVED.value:
        template.rejected_reason = None


def apply_category(template: MessageTemplate, value: Mapping[str, Any]) -> None:
    category = value.get("new_category") or value.get("correct_category")
    if category:
        template.category = str(category)[:32]


def apply_quality(template: MessageTemplate, value: Mapping[str, Any]) -> None:
    score = value.get("new_quality_score")
    if score:
        template.quality_score = str(score)[:16]


HANDLERS: dict[str, Callable[[MessageTemplate, Mapping[str, Any]], None]] = {
    STATUS_FIELD: apply_status, CATEGORY_FIELD: apply_category, QUALITY_FIELD: apply_quality}


def apply(changes: list[WebhookChange], ctx) -> None:
    """Apply the template changes among ``changes`` (others are other plugins'), in Meta's order."""
    for change in changes:
        handler = HANDLERS.get(change.field)
        if handler is None or not isinstance(change.value, Mapping):
            continue
        template = _template(ctx.db, change)
        if template is not None:
            handler(template, change.value)
    ctx.db.flush()
