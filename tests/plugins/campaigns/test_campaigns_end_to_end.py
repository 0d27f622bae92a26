"""Campaigns end to end: launched, fanned out by the tasks, sent by the real sender to the Meta sandbox with
injected failures, finished by the campaign loop — and the wallet reconciles with the messages' states."""

from __future__ import annotations

import time
import uuid

import pytest
from campaigns_support import (USD, World, assert_ledger_consistent, gb_number, holds, launch_now, messages, statuses,
                               us_number, wallet)
from sqlalchemy import select, text

from kloyst.db import session_scope, tenancy
from kloyst_plugins.campaigns import control
from kloyst_plugins.campaigns.models import Campaign
from kloyst_plugins.campaigns.ticker import CampaignLoop
from kloyst_plugins.messages.models import DeadLetter
from kloyst_plugins.messages.sender import Sender, SenderSettings

pytestmark = pytest.mark.slow

SENT_STATES = ("SENT", "DELIVERED", "READ")


@pytest.fixture
def world(committed_db, registry) -> World:
    return World(committed_db, registry)


@pytest.fixture
def sender(registry, committed_db):
    started: list[Sender] = []

    def start(**settings) -> Sender:
        started.append(Sender(registry, SenderSettings(concurrency=16, retry_base_seconds=0.05, **settings)).start())
        return started[-1]

    yield start
    for running in started:
        running.stop(timeout=10)


def campaign_row(db, campaign_id) -> Campaign:
    db.expire_all()
    with tenancy.unscoped(db):
        return db.get(Campaign, campaign_id)


def run_until(db, registry, campaign_id, statuses_wanted, timeout: float = 30.0) -> Campaign:
    loop = CampaignLoop(registry)
    deadline = time.monotonic() + timeout
    while True:
        loop.tick()
        campaign = campaign_row(db, campaign_id)
        if campaign.status in statuses_wanted or time.monotonic() > deadline:
            return campaign
        time.sleep(0.05)


def assert_wallet_reconciles(db, vendor_id, campaign_id, funded: int) -> None:
    """Captured = Σ price of the messages Meta accepted (+ the minimum charge), the rest released, nothing held."""
    found = messages(db, campaign_id)
    sent = sum(m.price_micros for m in found if m.status in SENT_STATES)
    captured = sum(h.captured_micros for h in holds(db, campaign_id))
    topup = campaign_row(db, campaign_id).minimum_topup_micros
    assert captured == sent + (topup if sent else 0)
    assert all(h.captured_micros + h.released_micros == h.amount_micros for h in holds(db, campaign_id))
    state = wallet(db, vendor_id)
    assert state.held_micros == 0 and state.balance_micros == funded - captured
    assert_ledger_consistent(db, vendor_id)


def test_a_campaign_runs_to_completion_against_the_sandbox_and_the_wallet_reconciles(
        registry, committed_db, meta_sandbox, world, sender):
    vendor = world.vendor("E2E Co")
    world.fund(vendor.vendor_id, 100 * USD)
    world.contacts(vendor.vendor_id, 30)
    world.contacts(vendor.vendor_id, 10, country="GB")
    world.contacts(vendor.vendor_id, 3, start=90, opted_out=True)
    world.in_sandbox(meta_sandbox, vendor)
    undeliverable = [us_number(0), us_number(1), gb_number(0)]
    meta_sandbox.state.undeliverable.update(n.lstrip("+") for n in undeliverable)
    meta_sandbox.state.behaviour.update({"failure_rates": {131000: 0.3}})
    campaign_id = launch_now(registry, vendor)
    sender(max_retries=1)
    campaign = run_until(committed_db, registry, campaign_id, {"COMPLETED"})
    assert campaign.status == "COMPLETED" and campaign.completed_at is not None
    counts = statuses(committed_db, campaign_id)
    assert sum(counts.values()) == 40 and set(counts) <= {"SENT", "FAILED"}
    assert counts["FAILED"] >= 3
    by_recipient = meta_sandbox.state.stats()["by_recipient"]
    assert max(by_recipient.values()) == 1  # never twice to one contact
    assert not {us_number(90 + i).lstrip("+") for i in range(3)} & set(by_recipient)  # opted out: never sent
    assert_wallet_reconciles(committed_db, vendor.vendor_id, campaign_id, 100 * USD)


def test_retry_failed_requeues_only_transient_failures_under_a_new_hold(
        registry, committed_db, meta_sandbox, world, sender):
    vendor = world.vendor("Retry Co")
    world.fund(vendor.vendor_id, 100 * USD)
    world.contacts(vendor.vendor_id, 8)
    world.in_sandbox(meta_sandbox, vendor)
    meta_sandbox.state.undeliverable.update(us_number(i).lstrip("+") for i in range(3))
    meta_sandbox.state.behaviour.update({"failure_rates": {131000: 1.0}})
    campaign_id = launch_now(registry, vendor)
    sender(max_retries=0)
    assert run_until(committed_db, registry, campaign_id, {"COMPLETED"}).status == "COMPLETED"
    assert statuses(committed_db, campaign_id) == {"FAILED": 8}
    with tenancy.unscoped(committed_db):
        kinds = sorted(committed_db.scalars(select(DeadLetter.error_kind)))
    assert kinds == ["permanent"] * 3 + ["transient"] * 5
    meta_sandbox.state.behaviour.update({"failure_rates": {}})
    with session_scope(registry["kloyst.session_factory"], vendor_id=vendor.vendor_id) as db:
        campaign, requeued = control.retry_failed(db, campaign_id)
        assert requeued == 5 and campaign.status == "RUNNING"
    first_hold = campaign_row(committed_db, campaign_id).hold_id
    retry_holds = [h for h in holds(committed_db, campaign_id) if h.id != first_hold]
    assert len(retry_holds) == 1
    assert retry_holds[0].amount_micros == sum(m.price_micros for m in messages(committed_db, campaign_id)
                                               if m.status != "FAILED")
    assert run_until(committed_db, registry, campaign_id, {"COMPLETED"}).status == "COMPLETED"
    assert statuses(committed_db, campaign_id) == {"FAILED": 3, "SENT": 5}
    assert_wallet_reconciles(committed_db, vendor.vendor_id, campaign_id, 100 * USD)


def test_retry_failed_is_402_when_the_wallet_cannot_cover_the_retries(registry, committed_db, meta_sandbox, world,
                                                                    sender):
    vendor = world.vendor("Short Co")
    world.fund(vendor.vendor_id, 100 * USD)
    world.contacts(vendor.vendor_id, 4)
    world.in_sandbox(meta_sandbox, vendor)
    meta_sandbox.state.behaviour.update({"failure_rates": {131000: 1.0}})
    campaign_id = launch_now(registry, vendor)
    sender(max_retries=0)
    assert run_until(committed_db, registry, campaign_id, {"COMPLETED"}).status == "COMPLETED"
    from kloyst_plugins.wallet.ledger import Ledger

    Ledger(committed_db.connection(), vendor.vendor_id).adjust(-wallet(committed_db, vendor.vendor_id).balance_micros,
                                                              idempotency_key=f"t:{uuid.uuid4()}", actor_user_id=None,
                                                              note="drain")
    committed_db.commit()
    from kloyst.errors import PaymentRequired

    with pytest.raises(PaymentRequired), session_scope(registry["kloyst.session_factory"],
                                                       vendor_id=vendor.vendor_id) as db:
        control.retry_failed(db, campaign_id)
    assert statuses(committed_db, campaign_id) == {"FAILED": 4}
    assert len(holds(committed_db, campaign_id)) == 1


def test_two_launches_at_once_hold_once_and_freeze_once(registry, committed_db, world):
    import threading

    from kloyst.errors import Conflict
    from kloyst_plugins.campaigns import drafts, launch as launching
    from kloyst_plugins.campaigns.models import CampaignRecipient
    from kloyst_plugins.campaigns.schemas import CampaignCreate

    vendor = world.vendor("Race Co")
    world.fund(vendor.vendor_id, 100 * USD)
    world.contacts(vendor.vendor_id, 20)
    factory = registry["kloyst.session_factory"]
    with session_scope(factory, vendor_id=vendor.vendor_id) as db:
        campaign = drafts.create(db, CampaignCreate.model_validate(vendor.draft()), user_id=None)
        launching.quote(db, registry, campaign, enqueue=lambda name, **kw: None)
        campaign_id = campaign.id
    barrier, outcomes = threading.Barrier(2), []

    def attempt() -> None:
        barrier.wait()
        try:
            with session_scope(factory, vendor_id=vendor.vendor_id) as db:
                launching.launch(db, registry, campaign_id, enqueue=lambda name, **kw: None)
            outcomes.append("launched")
        except Conflict as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["campaign_not_draft", "launched"]
    assert len(holds(committed_db, campaign_id)) == 1
    with tenancy.unscoped(committed_db):
        frozen = committed_db.scalars(select(CampaignRecipient).where(CampaignRecipient.campaign_id == campaign_id))
        assert len(list(frozen)) == 20
    assert_ledger_consistent(committed_db, vendor.vendor_id)


def test_two_workers_on_one_chunk_write_its_messages_once(registry, committed_db, world):
    import threading

    from kloyst_plugins.campaigns import fanout

    vendor = world.vendor("Twice Co")
    world.fund(vendor.vendor_id, 100 * USD)
    world.contacts(vendor.vendor_id, 50)
    campaign_id = launch_now(registry, vendor)  # the memory queue runs the chunk task on commit
    with tenancy.unscoped(committed_db):
        # Undo the chunk, as if its first task had been lost before committing.
        committed_db.execute(text("DELETE FROM message_log WHERE campaign_id = :c"), {"c": campaign_id})
        committed_db.execute(text("UPDATE campaign_chunk SET done_at = NULL"))
    committed_db.commit()
    barrier, results = threading.Barrier(2), []

    def attempt() -> None:
        barrier.wait()
        with session_scope(registry["kloyst.session_factory"], vendor_id=vendor.vendor_id) as db:
            results.append(fanout.write_chunk(db, registry, vendor_id=vendor.vendor_id, campaign_id=campaign_id,
                                              seq_from=0))

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(r.written for r in results) == [0, 50]
    assert len(messages(committed_db, campaign_id)) == 50


def test_a_chunk_held_by_the_campaign_loop_when_its_task_runs_is_written_moments_later(registry, committed_db, world):
    """The loop locks undone chunks to watch the fan-out; a task that met that lock used to take the chunk for
    another worker's and drop it, leaving it to the loop's staleness check minutes later."""
    import transaction

    from kloyst.queue import Reschedule, TaskContext
    from kloyst_plugins.campaigns.tasks import fan_out_chunk

    vendor = world.vendor("Busy Co")
    world.fund(vendor.vendor_id, 100 * USD)
    world.contacts(vendor.vendor_id, 30)
    campaign_id = launch_now(registry, vendor)
    with tenancy.unscoped(committed_db):
        committed_db.execute(text("DELETE FROM message_log WHERE campaign_id = :c"), {"c": campaign_id})
        committed_db.execute(text("UPDATE campaign_chunk SET done_at = NULL"))
    committed_db.commit()

    def run_task() -> None:
        manager = transaction.TransactionManager(explicit=True)
        with session_scope(registry["kloyst.session_factory"], vendor_id=vendor.vendor_id, manager=manager) as db:
            fan_out_chunk(TaskContext(registry, db, manager, vendor.vendor_id), vendor_id=vendor.vendor_id,
                          campaign_id=campaign_id, seq_from=0)

    loop = registry["kloyst.engine"].connect()
    watching = loop.begin()  # what the campaign loop's progress check holds for a moment
    loop.execute(text("SELECT seq_from FROM campaign_chunk WHERE campaign_id = :c AND done_at IS NULL FOR UPDATE"),
                 {"c": campaign_id})
    with pytest.raises(Reschedule):
        run_task()
    watching.rollback()
    loop.close()
    run_task()  # the rescheduled delivery
    assert len(messages(committed_db, campaign_id)) == 30
