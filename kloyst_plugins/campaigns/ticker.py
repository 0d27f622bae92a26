"""The campaign loop: what happens to a campaign because time passed, not because someone asked.

Every ``campaigns.tick_seconds`` (1 s) each WORKER (and ALL) process looks at the campaigns
that are neither drafts nor finished and, per campaign, in its own short transaction:

* notes when every fan-out chunk is written, and sends again a chunk whose task looks lost
  (huey does not acknowledge tasks: a worker killed mid-chunk takes its task with it);
* starts a SCHEDULED campaign when its time comes (its messages were written due at that
  time, so the sender starts them on its own; the status follows);
* keeps a PAUSED campaign paused and a CANCELLING one cancelled: a message that was in
  flight when the campaign was paused or cancelled and failed transiently comes back QUEUED,
  and is caught here;
* finishes a campaign whose messages have all reached an end (nothing QUEUED, SENDING or
  PAUSED): the minimum-charge top-up of its quote is captured if at least one message was
  sent, every hold of the campaign is settled (what is left is released), and it becomes
  COMPLETED (or CANCELLED); a completed one records ``CampaignCompleted`` (its funnel: sent,
  delivered, read, failed) in the same transaction.

Every question about the campaign's messages (any still unfinished? any accepted by Meta?)
and every move of them goes through ``kloyst_plugins.messages.api``, which owns their table
and state machine.

Several workers may run the loop at once: each campaign row is taken ``FOR UPDATE SKIP
LOCKED``, so one worker handles a campaign per tick and the others pass over it — as they
do while a fan-out chunk holds the row.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid

import transaction
from sqlalchemy import select, text

from kloyst.api import events, Outbox, session_scope, tenancy, utcnow
from kloyst_plugins.campaigns.launch import hold_reference
from kloyst_plugins.campaigns.models import Campaign, CampaignChunk, CampaignStatus as S
from kloyst_plugins.campaigns.tasks import enqueue_chunks
from kloyst_plugins.messages.api import (any_accepted, any_unfinished, cancel_waiting, count_by_status, MessageStatus,
                                         pause_waiting)

log = logging.getLogger(__name__)

ACTIVE = (S.SCHEDULED, S.LAUNCHING, S.RUNNING, S.PAUSED, S.CANCELLING)
_ACTIVE = text(f"SELECT id, vendor_id FROM campaign WHERE status IN ({', '.join(repr(s.value) for s in ACTIVE)}) "
               "ORDER BY updated_at")


class CampaignLoop:
    def __init__(self, registry, *, clock=utcnow) -> None:
        self.registry = registry
        self.clock = clock
        self.interval = float(registry.settings["campaigns.tick_seconds"])
        self.stale = dt.timedelta(seconds=float(registry.settings["campaigns.fanout_stale_seconds"]))
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> CampaignLoop:
        self._thread = threading.Thread(target=self._run, name="campaign-loop", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        """The loop's thread still runs (the metrics listener's /healthz asks): without it no campaign advances."""
        return not self._stopping.is_set() and self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("campaign loop failed; retrying")
            self._stopping.wait(self.interval)

    def tick(self) -> int:
        """One pass over the active campaigns; returns how many this process handled."""
        factory = self.registry["kloyst.session_factory"]
        with session_scope(factory, vendor_id=tenancy.ALL_VENDORS) as db:
            active = [(uuid.UUID(str(c)), uuid.UUID(str(v))) for c, v in db.execute(_ACTIVE)]
        handled = 0
        for campaign_id, vendor_id in active:
            try:
                handled += self._advance(factory, campaign_id, vendor_id)
            except Exception:
                log.exception("campaign %s: the loop could not advance it", campaign_id)
        return handled

    def _advance(self, factory, campaign_id: uuid.UUID, vendor_id: uuid.UUID) -> int:
        manager = transaction.TransactionManager(explicit=True)
        with session_scope(factory, vendor_id=vendor_id, manager=manager) as db:
            campaign = db.scalars(select(Campaign).where(Campaign.id == campaign_id)
                                  .with_for_update(skip_locked=True)
                                  .execution_options(populate_existing=True)).one_or_none()
            if campaign is None:
                return 0  # another worker, or a fan-out chunk, has it now
            advance(db, self.registry, campaign, self.clock(), manager=manager, stale=self.stale)
            return 1


def advance(db, registry, campaign: Campaign, now: dt.datetime, *, manager, stale: dt.timedelta) -> None:
    """Move one locked campaign along (see the module docstring)."""
    if campaign.fanout_completed_at is None:
        _fan_out_progress(db, registry, campaign, now, manager=manager, stale=stale)
    status = S(campaign.status)
    if status is S.SCHEDULED and campaign.start_at is not None and campaign.start_at <= now:
        status = S.RUNNING if campaign.fanout_completed_at is not None else S.LAUNCHING
        campaign.started_at = now
    elif status is S.LAUNCHING and campaign.fanout_completed_at is not None:
        status = S.RUNNING
        campaign.started_at = campaign.started_at or now
    elif status is S.PAUSED:
        pause_waiting(db, campaign.vendor_id, campaign.id, now)
    elif status is S.CANCELLING:
        # Their prices stay in the holds, released when the campaign settles.
        cancel_waiting(db, campaign.vendor_id, campaign.id, now, totals=False)
    if status in (S.RUNNING, S.CANCELLING) and campaign.fanout_completed_at is not None \
            and not any_unfinished(db, campaign.vendor_id, campaign.id):
        settle(db, campaign)
        status = S.COMPLETED if status is S.RUNNING else S.CANCELLED
        campaign.completed_at = now
        if status is S.COMPLETED:
            events.record_event(Outbox(db), campaign.vendor_id, completed(db, campaign))
        log.info("campaign %s %s", campaign.id, status.value.lower())
    campaign.status = status.value
    db.flush()


def _fan_out_progress(db, registry, campaign: Campaign, now: dt.datetime, *, manager, stale: dt.timedelta) -> None:
    undone = list(db.scalars(select(CampaignChunk).where(CampaignChunk.campaign_id == campaign.id,
                                                         CampaignChunk.done_at.is_(None))
                             .with_for_update(skip_locked=True)))
    if campaign.status == S.CANCELLING.value:
        # Nothing more will be written; mark what is left done (the hold's remainder is released at settlement).
        for chunk in undone:
            chunk.done_at, chunk.skipped = now, chunk.seq_to - chunk.seq_from
        undone = []
    lost = [chunk for chunk in undone if chunk.enqueued_at <= now - stale]
    if lost:
        log.warning("campaign %s: %d fan-out chunks look lost; sending them again", campaign.id, len(lost))
        for chunk in lost:
            chunk.enqueued_at = now
        queue = registry["kloyst.queue"]
        enqueue_chunks(lambda name, **kw: queue.enqueue(db, manager, name, **kw), vendor_id=campaign.vendor_id,
                       campaign_id=campaign.id, seq_froms=[c.seq_from for c in lost])
    if not undone:
        remaining = db.scalar(select(CampaignChunk.seq_from).where(CampaignChunk.campaign_id == campaign.id,
                                                                   CampaignChunk.done_at.is_(None)).limit(1))
        if remaining is None:
            campaign.fanout_completed_at = now


def completed(db, campaign: Campaign) -> events.CampaignCompleted:
    """The event of a campaign whose messages all ended, counted as a funnel (one ``GROUP BY``): ``sent`` is every
    message Meta accepted (SENT, DELIVERED or READ now), ``delivered`` those delivered (DELIVERED or READ), ``read``
    those read, ``failed`` those FAILED."""
    counts = count_by_status(db, campaign.vendor_id, campaign.id)
    read = counts[MessageStatus.READ]
    delivered = counts[MessageStatus.DELIVERED] + read
    return events.CampaignCompleted(campaign_id=campaign.id, sent=counts[MessageStatus.SENT] + delivered,
                                    delivered=delivered, read=read, failed=counts[MessageStatus.FAILED])


def settle(db, campaign: Campaign) -> None:
    """Capture the quote's minimum-charge top-up if anything was sent, then release what every hold still keeps."""
    from kloyst_plugins.wallet.api import Ledger

    ledger = Ledger(db.connection(), campaign.vendor_id)
    topup = int(campaign.minimum_topup_micros or 0)
    if topup > 0 and campaign.hold_id is not None and any_accepted(db, campaign.vendor_id, campaign.id):
        outstanding = ledger.get_hold(campaign.hold_id).outstanding_micros
        if outstanding > 0:
            ledger.capture(campaign.hold_id, min(topup, outstanding),
                           idempotency_key=f"campaign:{campaign.id}:minimum")
    for hold in ledger.holds(hold_reference(campaign.id)):
        ledger.settle_hold(hold.id, idempotency_key=f"campaign:{campaign.id}:settle:{hold.id}")

