"""Pause, resume, cancel and retry-failed: set-based updates of a campaign's messages, money kept exact.

Each action locks the campaign row first, so it waits for the fan-out chunks in hand (they
hold it ``FOR SHARE``) and chunks after it see the new status. Then one statement moves the
campaign's messages (on ``ix_message_log_campaign``):

* **pause**: QUEUED → PAUSED. The sender never claims PAUSED; messages already SENDING finish.
* **resume**: PAUSED → QUEUED, due now (or at the start, if that is still ahead), with a doorbell.
* **cancel**: QUEUED and PAUSED → CANCELLED, and their prices go back from their holds at
  once. The campaign is CANCELLING until the messages in flight finish (the wallet hook
  captures or releases each); the loop then settles the holds and marks it CANCELLED.
* **retry-failed**: FAILED messages whose dead letter says transient (or rate limited) go back
  to QUEUED under a new hold for their prices (their first price was released when they
  failed); a permanent failure would only fail again, and is left alone. So is a message
  Meta accepted and later reported undelivered (it has a wamid): it was captured, then
  refunded, and sending it again is a new message, not a retry.

A message that moved on meanwhile (the sender claimed it) is simply not matched: the
statements test the status they change from.
"""

from __future__ import annotations

import uuid

from sqlalchemy import Uuid, bindparam, text

from kloyst.db import utcnow
from kloyst.db.base import UTCDateTime
from kloyst.errors import Conflict
from kloyst_plugins.campaigns.launch import hold_reference, locked
from kloyst_plugins.campaigns.models import Campaign, CampaignStatus as S
from kloyst_plugins.messages import dispatch
from kloyst_plugins.wallet.ledger import Ledger

RETRYABLE_KINDS = ("transient", "rate_limited")


def _typed(sql: str):
    types = {"campaign": Uuid(), "vendor": Uuid(), "now": UTCDateTime()}
    return text(sql).bindparams(*(bindparam(name, type_=t) for name, t in types.items() if f":{name}" in sql))


PAUSE_QUEUED = _typed("UPDATE message_log SET status = 'PAUSED', updated_at = :now "
                "WHERE campaign_id = :campaign AND vendor_id = :vendor AND status = 'QUEUED'")
_RESUME = _typed("UPDATE message_log SET status = 'QUEUED', status_rank = 0, next_attempt_at = :due, updated_at = :now "
                 "WHERE campaign_id = :campaign AND vendor_id = :vendor AND status = 'PAUSED'").bindparams(
    bindparam("due", type_=UTCDateTime()))
_CANCEL_PG = _typed("""
WITH cancelled AS (
    UPDATE message_log SET status = 'CANCELLED', status_rank = 5, updated_at = :now
    WHERE campaign_id = :campaign AND vendor_id = :vendor AND status IN ('QUEUED', 'PAUSED')
    RETURNING hold_id, price_micros)
SELECT hold_id, coalesce(sum(price_micros), 0), count(*) FROM cancelled GROUP BY hold_id
""")
_UNSENT_SQLITE = _typed("SELECT hold_id, coalesce(sum(price_micros), 0), count(*) FROM message_log "
                        "WHERE campaign_id = :campaign AND vendor_id = :vendor AND status IN ('QUEUED', 'PAUSED') "
                        "GROUP BY hold_id")
_CANCEL_SQLITE = _typed("UPDATE message_log SET status = 'CANCELLED', status_rank = 5, updated_at = :now "
                        "WHERE campaign_id = :campaign AND vendor_id = :vendor AND status IN ('QUEUED', 'PAUSED')")
_RETRYABLE = _typed(f"""
SELECT m.id, coalesce(m.price_micros, 0) FROM message_log m
JOIN dead_letter d ON d.message_id = m.id AND d.requeued_at IS NULL
    AND d.error_kind IN ({', '.join(repr(k) for k in RETRYABLE_KINDS)})
LEFT JOIN contact c ON c.id = m.contact_id
WHERE m.campaign_id = :campaign AND m.vendor_id = :vendor AND m.status = 'FAILED' AND m.wamid IS NULL
    AND (c.id IS NULL OR NOT c.opted_out)
""")
_REQUEUE = text("""
UPDATE message_log SET status = 'QUEUED', status_rank = 0, hold_id = :hold, next_attempt_at = :now,
    lease_until = NULL, retry_count = 0, error_code = NULL, error_subcode = NULL, error_message = NULL,
    failed_at = NULL, updated_at = :now
WHERE id = :id AND vendor_id = :vendor AND status = 'FAILED'
""").bindparams(bindparam("id", type_=Uuid()), bindparam("hold", type_=Uuid()), bindparam("vendor", type_=Uuid()),
                bindparam("now", type_=UTCDateTime()))
_LETTERS_REQUEUED = text("UPDATE dead_letter SET requeued_at = :now WHERE message_id = :id AND vendor_id = :vendor "
                         "AND requeued_at IS NULL").bindparams(bindparam("id", type_=Uuid()),
                                                               bindparam("vendor", type_=Uuid()),
                                                               bindparam("now", type_=UTCDateTime()))


def _refuse(campaign: Campaign, action: str, allowed) -> None:
    if campaign.status not in {s.value for s in allowed}:
        raise Conflict(f"campaign is {campaign.status}: it cannot be {action} now", code="invalid_transition",
                       details={"status": campaign.status, "allowed_from": sorted(s.value for s in allowed)})


def _params(campaign: Campaign, now) -> dict:
    return {"campaign": campaign.id, "vendor": campaign.vendor_id, "now": now}


def pause(db, campaign_id: uuid.UUID) -> Campaign:
    campaign = locked(db, campaign_id)
    _refuse(campaign, "paused", (S.SCHEDULED, S.LAUNCHING, S.RUNNING))
    now = utcnow()
    db.execute(PAUSE_QUEUED, _params(campaign, now))
    campaign.status, campaign.paused_at = S.PAUSED.value, now
    db.flush()
    return campaign


def resumed_status(campaign: Campaign, now) -> S:
    if campaign.start_at is not None and campaign.start_at > now:
        return S.SCHEDULED
    return S.RUNNING if campaign.fanout_completed_at is not None else S.LAUNCHING


def resume(db, campaign_id: uuid.UUID) -> Campaign:
    campaign = locked(db, campaign_id)
    _refuse(campaign, "resumed", (S.PAUSED,))
    now = utcnow()
    due = max(now, campaign.start_at) if campaign.start_at is not None else now
    if db.execute(_RESUME, {**_params(campaign, now), "due": due}).rowcount:
        dispatch.notify_queued(db, campaign.vendor_id, [campaign.phone_number_id])
    campaign.status, campaign.paused_at = resumed_status(campaign, now).value, None
    if campaign.status == S.RUNNING.value and campaign.started_at is None:
        campaign.started_at = now
    db.flush()
    return campaign


def cancel(db, campaign_id: uuid.UUID) -> Campaign:
    campaign = locked(db, campaign_id)
    _refuse(campaign, "cancelled", (S.SCHEDULED, S.LAUNCHING, S.RUNNING, S.PAUSED))
    now = utcnow()
    params = _params(campaign, now)
    if db.get_bind().dialect.name == "postgresql":
        unsent = db.execute(_CANCEL_PG, params).all()
    else:
        unsent = db.execute(_UNSENT_SQLITE, params).all()
        db.execute(_CANCEL_SQLITE, params)
    ledger = Ledger(db.connection(), campaign.vendor_id)
    for hold_id, amount, _count in unsent:
        if hold_id is not None and int(amount) > 0:
            ledger.release(uuid.UUID(str(hold_id)), int(amount), idempotency_key=f"campaign:{campaign.id}:cancel:"
                                                                                 f"{hold_id}")
    campaign.status, campaign.cancelled_at = S.CANCELLING.value, now
    db.flush()
    return campaign


def retry_failed(db, campaign_id: uuid.UUID, *, idempotency_key: str | None = None) -> tuple[Campaign, int]:
    """Requeue the transient failures under a new hold; ``(campaign, how many)``. 402 when funds are short."""
    campaign = locked(db, campaign_id)
    _refuse(campaign, "retried", (S.LAUNCHING, S.RUNNING, S.PAUSED, S.COMPLETED))
    now = utcnow()
    rows = db.execute(_RETRYABLE, _params(campaign, now)).all()
    if not rows:
        return campaign, 0
    ledger = Ledger(db.connection(), campaign.vendor_id)
    amount = sum(int(price) for _, price in rows)
    hold_id = None
    if amount > 0:
        key = f"campaign:{campaign.id}:retry:{idempotency_key or uuid.uuid4()}"
        hold_id = ledger.hold(amount, idempotency_key=key, reference=hold_reference(campaign.id)).id
    paused = campaign.status == S.PAUSED.value
    for message_id, _ in rows:
        db.execute(_REQUEUE, {"id": message_id, "hold": hold_id, "vendor": campaign.vendor_id, "now": now})
        db.execute(_LETTERS_REQUEUED, {"id": message_id, "vendor": campaign.vendor_id, "now": now})
    if paused:
        db.execute(PAUSE_QUEUED, _params(campaign, now))
    else:
        dispatch.notify_queued(db, campaign.vendor_id, [campaign.phone_number_id])
    if campaign.status == S.COMPLETED.value:
        campaign.status, campaign.completed_at = S.RUNNING.value, None
    db.flush()
    return campaign, len(rows)
