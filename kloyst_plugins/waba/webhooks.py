"""Meta webhooks about WABAs and numbers: whose they are, and what they change.

Routing (:func:`vendors_for`, behind ``kloyst_webhook_vendors``): a change naming a phone
number belongs to the vendor holding that number — also after the number was unassigned,
because the statuses of its earlier messages are that vendor's history. A change naming a
phone number id no vendor has goes nowhere, even on a vendor's own WABA: Kloyst sent nothing
through a number it has not synced, so its statuses and messages are nobody's here (the
drainer counts the drop), and handing them to the WABA's owner would let them move that
owner's messages by wamid. A change naming only a WABA belongs to the vendor owning it, or,
for the platform's shared WABA, to every vendor currently holding one of its numbers (each
then matches the change against its own numbers only).

Applying (:func:`apply_changes`, behind ``kloyst_webhook_changes``):

* ``phone_number_quality_update`` updates the number's quality rating, messaging tier and
  throughput as :data:`QUALITY_EVENTS` says. The number is found by Meta id when the change
  has one, else by its display number's digits (webhooks write ``"15550783881"``, the API
  ``"+1 555-078-3881"``) among the vendor's numbers of that WABA. Updates are idempotent;
  out-of-order ones are corrected by the next sync, which reads Meta's current state.
* ``account_update`` (restrictions, violations, bans, reconnections change what numbers
  may do) queues a sync of the vendor's own WABA, once per batch. The shared WABA is the
  platform admins' to sync.
"""

from __future__ import annotations

import logging
import re
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from kloyst.api import WebhookChange
from kloyst_plugins.waba.models import (THROUGHPUT_HIGH, PhoneNumber, QualityRating, SharedPhoneNumber, SharedWaba,
                                        Waba)
from kloyst_plugins.waba.services import UNASSIGNED
from kloyst_plugins.waba.tasks import SYNC_PHONE_NUMBERS

log = logging.getLogger(__name__)

QUALITY_UPDATE = "phone_number_quality_update"
ACCOUNT_UPDATE = "account_update"

# event → the quality rating it implies (None: the event says nothing about quality). Meta
# gives a number the FLAGGED status when its quality rating reaches Low, and lifts it
# (UNFLAGGED) once quality is back to Medium or better: the exact rating arrives with the
# next sync. UPGRADE/DOWNGRADE move the messaging limit (current_limit says where to).
QUALITY_EVENTS: dict[str, str | None] = {
    "FLAGGED": QualityRating.RED.value,
    "UNFLAGGED": QualityRating.YELLOW.value,
    "UPGRADE": None,
    "DOWNGRADE": None,
    "ONBOARDING": None,
    "THROUGHPUT_UPGRADE": None,  # the number moves to the HIGH throughput tier (see THROUGHPUT_EVENTS)
}
THROUGHPUT_EVENTS = {"THROUGHPUT_UPGRADE": THROUGHPUT_HIGH}

# Newer payloads give the daily limit as a number instead of current_limit's tier name.
LIMIT_TIERS = {250: "TIER_250", 1000: "TIER_1K", 2000: "TIER_2K", 10_000: "TIER_10K", 100_000: "TIER_100K"}
LIMIT_KEYS = ("max_daily_conversation_per_phone", "max_daily_conversations_per_phone",
              "max_daily_conversations_per_business")

_NOT_DIGITS = re.compile(r"\D")


def digits(number: str | None) -> str:
    return _NOT_DIGITS.sub("", number or "")


def vendors_for(db: Session, meta_waba_id: str | None, meta_phone_number_id: str | None) -> list[uuid.UUID]:
    """The vendors a change belongs to (``db`` is platform-wide); see the module docstring."""
    if meta_phone_number_id:
        holder = db.scalars(select(PhoneNumber.vendor_id)
                            .where(PhoneNumber.meta_phone_number_id == str(meta_phone_number_id))).first()
        return [holder] if holder is not None else []  # a number nobody holds: its traffic is nobody's
    if not meta_waba_id:
        return []
    owner = db.scalars(select(Waba.vendor_id).where(Waba.meta_waba_id == str(meta_waba_id))).first()
    if owner is not None:
        return [owner]
    shared_id = db.scalars(select(SharedWaba.id).where(SharedWaba.meta_waba_id == str(meta_waba_id))).first()
    if shared_id is None:
        return []
    return list(db.scalars(select(PhoneNumber.vendor_id).distinct().where(
        PhoneNumber.shared_waba_id == shared_id, PhoneNumber.status != UNASSIGNED).order_by(PhoneNumber.vendor_id)))


def apply_changes(changes: list[WebhookChange], ctx) -> None:
    """Apply the changes this plugin handles, in the vendor's scoped session (``ctx.db``)."""
    synced: set[uuid.UUID] = set()
    for change in changes:
        if change.field == QUALITY_UPDATE:
            apply_quality_update(ctx.db, change)
        elif change.field == ACCOUNT_UPDATE:
            waba = ctx.db.scalars(select(Waba).where(Waba.meta_waba_id == change.meta_waba_id)).first()
            if waba is not None and waba.id not in synced:
                synced.add(waba.id)
                ctx.enqueue(SYNC_PHONE_NUMBERS, waba_id=waba.id)


def _find_number(db: Session, change: WebhookChange) -> PhoneNumber | None:
    if change.meta_phone_number_id:
        return db.scalars(select(PhoneNumber)
                          .where(PhoneNumber.meta_phone_number_id == str(change.meta_phone_number_id))).first()
    wanted = digits(change.value.get("display_phone_number"))
    if not wanted:
        return None
    waba_ids = list(db.scalars(select(Waba.id).where(Waba.meta_waba_id == change.meta_waba_id)))
    shared_ids = list(db.scalars(select(SharedWaba.id).where(SharedWaba.meta_waba_id == change.meta_waba_id)))
    candidates = db.scalars(select(PhoneNumber).where(PhoneNumber.waba_id.in_(waba_ids)
                                                      | PhoneNumber.shared_waba_id.in_(shared_ids)))
    return next((n for n in candidates if digits(n.display_phone_number) == wanted), None)


def limit_tier(value: dict) -> str | None:
    """The messaging tier a quality update announces: ``current_limit``, or a daily limit Kloyst can name."""
    if value.get("current_limit"):
        return str(value["current_limit"])[:32]
    for key in LIMIT_KEYS:
        limit = value.get(key)
        if limit is not None:
            try:
                return LIMIT_TIERS.get(int(limit))
            except (TypeError, ValueError):
                return None
    return None


def apply_quality_update(db: Session, change: WebhookChange) -> PhoneNumber | None:
    """Update the vendor's number named by a ``phone_number_quality_update``; None when it is not the vendor's."""
    value = change.value if isinstance(change.value, dict) else {}
    number = _find_number(db, change)
    if number is None:
        log.info("quality update for a number this vendor does not hold (delivery %s); ignored", change.delivery_id)
        return None
    event = str(value.get("event") or "").upper()
    if event not in QUALITY_EVENTS:
        log.info("quality update event %r is not one Kloyst maps; only the tier is applied", event)
    updates: dict = {}
    if QUALITY_EVENTS.get(event):
        updates["quality_rating"] = QUALITY_EVENTS[event]
    if event in THROUGHPUT_EVENTS:
        updates["throughput_mps"] = THROUGHPUT_EVENTS[event]
    tier = limit_tier(value)
    if tier:
        updates["messaging_limit_tier"] = tier
    for key, new in updates.items():
        setattr(number, key, new)
    if number.shared_waba_id is not None and updates:
        # The platform's list shows the same number: keep the admins' view in step.
        shared = db.scalars(select(SharedPhoneNumber)
                            .where(SharedPhoneNumber.meta_phone_number_id == number.meta_phone_number_id)).first()
        if shared is not None:
            for key, new in updates.items():
                setattr(shared, key, new)
    db.flush()
    return number
