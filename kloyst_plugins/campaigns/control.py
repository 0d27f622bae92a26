"""Pause, resume, cancel and retry-failed: set-based updates of a campaign's messages, money kept exact.

Each action locks the campaign row first, so it waits for the fan-out chunks in hand (they
hold it ``FOR SHARE``) and chunks after it see the new status. Then the messages plugin moves
the campaign's messages (``kloyst_plugins.messages.api``: one statement on
``ix_message_log_campaign`` each, its state machine's words, never ours):

* **pause**: QUEUED → PAUSED. The sender never claims PAUSED; messages already SENDING finish.
* **resume**: PAUSED → QUEUED, due now (or at the start, if that is still ahead), with a doorbell.
* **cancel**: QUEUED and PAUSED → CANCELLED, and their prices go back from their holds at
  once. The campaign is CANCELLING until the messages in flight finish (the wallet hook
  captures or releases each); the loop then settles the holds and marks it CANCELLED.
  ``CampaignCancelled`` is recorded with the cancel, in its transaction.
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

from kloyst.api import Conflict, events, Outbox, utcnow
from kloyst_plugins.campaigns.launch import hold_reference, locked
from kloyst_plugins.campaigns.models import Campaign, CampaignStatus as S
from kloyst_plugins.messages.api import (cancel_waiting, notify_queued, pause_waiting, requeue_failed, resume_paused,
                                         retryable_failures)
from kloyst_plugins.wallet.api import Ledger


def _refuse(campaign: Campaign, action: str, allowed) -> None:
    if campaign.status not in {s.value for s in allowed}:
        raise Conflict(f"campaign is {campaign.status}: it cannot be {action} now", code="invalid_transition",
                       details={"status": campaign.status, "allowed_from": sorted(s.value for s in allowed)})


def pause(db, campaign_id: uuid.UUID) -> Campaign:
    campaign = locked(db, campaign_id)
    _refuse(campaign, "paused", (S.SCHEDULED, S.LAUNCHING, S.RUNNING))
    now = utcnow()
    pause_waiting(db, campaign.vendor_id, campaign.id, now)
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
    resume_paused(db, campaign.vendor_id, campaign.id, now, due=due, phone_number_id=campaign.phone_number_id)
    campaign.status, campaign.paused_at = resumed_status(campaign, now).value, None
    if campaign.status == S.RUNNING.value and campaign.started_at is None:
        campaign.started_at = now
    db.flush()
    return campaign


def cancel(db, campaign_id: uuid.UUID) -> Campaign:
    campaign = locked(db, campaign_id)
    _refuse(campaign, "cancelled", (S.SCHEDULED, S.LAUNCHING, S.RUNNING, S.PAUSED))
    now = utcnow()
    ledger = Ledger(db.connection(), campaign.vendor_id)
    for unsent in cancel_waiting(db, campaign.vendor_id, campaign.id, now):
        if unsent.hold_id is not None and unsent.price_micros > 0:
            ledger.release(unsent.hold_id, unsent.price_micros,
                           idempotency_key=f"campaign:{campaign.id}:cancel:{unsent.hold_id}")
    campaign.status, campaign.cancelled_at = S.CANCELLING.value, now
    events.record_event(Outbox(db), campaign.vendor_id, events.CampaignCancelled(campaign_id=campaign.id))
    db.flush()
    return campaign


def retry_failed(db, campaign_id: uuid.UUID, *, idempotency_key: str | None = None) -> tuple[Campaign, int]:
    """Requeue the transient failures under a new hold; ``(campaign, how many)``. 402 when funds are short."""
    campaign = locked(db, campaign_id)
    _refuse(campaign, "retried", (S.LAUNCHING, S.RUNNING, S.PAUSED, S.COMPLETED))
    now = utcnow()
    rows = retryable_failures(db, campaign.vendor_id, campaign.id)
    if not rows:
        return campaign, 0
    ledger = Ledger(db.connection(), campaign.vendor_id)
    amount = sum(int(price) for _, price in rows)
    hold_id = None
    if amount > 0:
        key = f"campaign:{campaign.id}:retry:{idempotency_key or uuid.uuid4()}"
        hold_id = ledger.hold(amount, idempotency_key=key, reference=hold_reference(campaign.id)).id
    paused = campaign.status == S.PAUSED.value
    requeue_failed(db, campaign.vendor_id, [message_id for message_id, _ in rows], hold_id=hold_id, now=now)
    if paused:
        pause_waiting(db, campaign.vendor_id, campaign.id, now)
    else:
        notify_queued(db, campaign.vendor_id, [campaign.phone_number_id])
    if campaign.status == S.COMPLETED.value:
        campaign.status, campaign.completed_at = S.RUNNING.value, None
    db.flush()
    return campaign, len(rows)
