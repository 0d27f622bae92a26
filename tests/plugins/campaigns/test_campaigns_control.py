"""Pause, resume, cancel, the campaign loop (scheduled starts, completion, lost fan-out tasks) and its money."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from campaigns_support import (assert_ledger_consistent, draft, holds, launch, messages, quote, recipients, statuses,
                               wallet)
from sqlalchemy import update

from kloyst.db import tenancy, utcnow
from kloyst_plugins.campaigns.models import Campaign
from kloyst_plugins.campaigns.ticker import CampaignLoop
from kloyst_plugins.messages import settlement
from kloyst_plugins.messages.models import MessageLog


@pytest.fixture
def launched(testapp, world, vendor, task_recorder, run_outbox):
    """``launched(count=5, **draft fields)``: a campaign quoted, launched and fanned out (its messages QUEUED)."""

    def make(count: int = 5, **fields) -> dict:
        world.contacts(vendor.vendor_id, count)
        campaign = draft(testapp, vendor, **fields)
        quote(testapp, vendor, campaign)
        launched = launch(testapp, vendor, campaign).json["campaign"]
        run_outbox()
        return launched

    return make


def tick(registry, at: dt.datetime | None = None) -> None:
    CampaignLoop(registry, clock=lambda: at or utcnow()).tick()


def campaign_status(testapp, vendor, campaign) -> str:
    return testapp.get(f"/v1/campaigns/{campaign['id']}", headers=vendor.headers).json["campaign"]["status"]


def action(testapp, vendor, campaign, name: str, status: int = 200) -> dict:
    return testapp.post_json(f"/v1/campaigns/{campaign['id']}/{name}", {}, headers=vendor.headers,
                             status=status).json


def set_messages(db, campaign, ids, **values) -> None:
    with tenancy.unscoped(db):
        db.execute(update(MessageLog).where(MessageLog.id.in_(ids)).values(**values))
    db.commit()


def report(db, registry, found, outcome: str) -> None:
    """What the sender does when messages end: the settled hook in the outcome's transaction."""
    rows = [(m.id, m.vendor_id, m.campaign_id, m.hold_id, m.price_micros) for m in found]
    settlement.report(registry["kloyst.plugin_manager"], db.connection(), settlement.settled_from_rows(rows, outcome))
    db.commit()


def test_pause_holds_queued_messages_back_and_resume_puts_them_back_due_now(testapp, db, registry, vendor, launched):
    campaign = launched()
    tick(registry)
    assert campaign_status(testapp, vendor, campaign) == "RUNNING"
    paused = action(testapp, vendor, campaign, "pause")["campaign"]
    assert paused["status"] == "PAUSED" and paused["paused_at"]
    assert statuses(db, campaign["id"]) == {"PAUSED": 5}
    error = action(testapp, vendor, campaign, "pause", status=409)["error"]
    assert error["code"] == "invalid_transition" and error["details"]["status"] == "PAUSED"
    before = utcnow()
    resumed = action(testapp, vendor, campaign, "resume")["campaign"]
    assert resumed["status"] == "RUNNING" and resumed["paused_at"] is None
    found = messages(db, campaign["id"])
    assert {m.status for m in found} == {"QUEUED"} and all(m.next_attempt_at >= before for m in found)
    assert action(testapp, vendor, campaign, "resume", status=409)["error"]["details"]["status"] == "RUNNING"


def test_a_message_in_flight_when_paused_that_comes_back_queued_is_paused_again_by_the_loop(
        testapp, db, registry, vendor, launched):
    campaign = launched()
    in_flight = messages(db, campaign["id"])[0]
    set_messages(db, campaign, [in_flight.id], status="SENDING")
    action(testapp, vendor, campaign, "pause")
    assert statuses(db, campaign["id"]) == {"PAUSED": 4, "SENDING": 1}
    set_messages(db, campaign, [in_flight.id], status="QUEUED")  # a transient error sent it back
    tick(registry)
    assert statuses(db, campaign["id"]) == {"PAUSED": 5}


def test_cancel_releases_the_unsent_messages_prices_and_lets_those_in_flight_finish(
        testapp, db, registry, vendor, launched):
    campaign = launched()
    found = messages(db, campaign["id"])
    sending, sent = found[0], found[1]
    set_messages(db, campaign, [sending.id], status="SENDING")
    set_messages(db, campaign, [sent.id], status="SENT")
    report(db, registry, [sent], settlement.SENT)
    [hold] = holds(db, campaign["id"])
    cancelled = action(testapp, vendor, campaign, "cancel")["campaign"]
    assert cancelled["status"] == "CANCELLING"
    assert statuses(db, campaign["id"]) == {"CANCELLED": 3, "SENDING": 1, "SENT": 1}
    [after] = holds(db, campaign["id"])
    assert after.released_micros - hold.released_micros == sum(m.price_micros for m in found[2:])
    tick(registry)
    assert campaign_status(testapp, vendor, campaign) == "CANCELLING"  # one message is still in flight
    set_messages(db, campaign, [sending.id], status="SENT")
    report(db, registry, [sending], settlement.SENT)
    tick(registry)
    assert campaign_status(testapp, vendor, campaign) == "CANCELLED"
    [settled] = holds(db, campaign["id"])
    assert settled.captured_micros == sent.price_micros + sending.price_micros
    assert settled.captured_micros + settled.released_micros == settled.amount_micros
    state = wallet(db, vendor.vendor_id)
    assert state.held_micros == 0 and state.balance_micros == 100 * 10**6 - settled.captured_micros
    assert_ledger_consistent(db, vendor.vendor_id)
    assert action(testapp, vendor, campaign, "resume", status=409)["error"]["details"]["status"] == "CANCELLED"


def test_a_finished_campaign_completes_and_its_hold_is_settled_to_what_was_sent(
        testapp, db, registry, vendor, launched):
    campaign = launched()
    found = messages(db, campaign["id"])
    set_messages(db, campaign, [m.id for m in found[:4]], status="SENT")
    report(db, registry, found[:4], settlement.SENT)
    set_messages(db, campaign, [found[4].id], status="FAILED")
    report(db, registry, found[4:], settlement.FAILED)
    tick(registry)
    assert campaign_status(testapp, vendor, campaign) == "COMPLETED"
    [hold] = holds(db, campaign["id"])
    assert hold.captured_micros == sum(m.price_micros for m in found[:4])
    assert hold.captured_micros + hold.released_micros == hold.amount_micros
    assert wallet(db, vendor.vendor_id).held_micros == 0
    assert_ledger_consistent(db, vendor.vendor_id)


def test_the_quotes_minimum_charge_is_captured_at_completion_only_if_something_was_sent(
        testapp, db, registry, world, vendor, launched):
    from kloyst_plugins.pricing.models import PlatformFeeRule

    db.add(PlatformFeeRule(vendor_id=vendor.vendor_id, currency="USD", minimum_charge_micros=50 * 10**6,
                           valid_from=dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)))
    db.commit()
    campaign = launched(count=2)
    topup = db.get(Campaign, uuid.UUID(campaign["id"])).minimum_topup_micros
    assert topup > 0
    found = messages(db, campaign["id"])
    set_messages(db, campaign, [m.id for m in found], status="SENT")
    report(db, registry, found, settlement.SENT)
    tick(registry)
    [hold] = holds(db, campaign["id"])
    assert hold.captured_micros == sum(m.price_micros for m in found) + topup
    assert hold.captured_micros + hold.released_micros == hold.amount_micros
    assert_ledger_consistent(db, vendor.vendor_id)


def test_a_scheduled_campaign_waits_for_its_time_then_runs(testapp, db, registry, vendor, launched):
    start = (utcnow() + dt.timedelta(hours=3)).replace(microsecond=0)
    campaign = launched(schedule={"start_at": start.isoformat(), "timezone": "UTC"})
    assert campaign["status"] == "SCHEDULED"
    assert {m.next_attempt_at for m in messages(db, campaign["id"])} == {start}
    tick(registry, start - dt.timedelta(seconds=1))
    assert campaign_status(testapp, vendor, campaign) == "SCHEDULED"
    tick(registry, start)
    assert campaign_status(testapp, vendor, campaign) == "RUNNING"
    assert testapp.get(f"/v1/campaigns/{campaign['id']}", headers=vendor.headers).json["campaign"]["started_at"] \
        == start.isoformat()


def test_a_fan_out_task_that_was_lost_is_sent_again_by_the_loop(testapp, db, registry, world, vendor, task_recorder,
                                                                run_outbox, monkeypatch):
    world.contacts(vendor.vendor_id, 3)
    campaign = draft(testapp, vendor)
    quote(testapp, vendor, campaign)
    launch(testapp, vendor, campaign)
    # The task's outbox event is lost with the worker that took it: forget it.
    from kloyst.outbox.models import OutboxEvent

    db.query(OutboxEvent).delete()
    db.commit()
    task_recorder.clear()
    tick(registry)
    assert task_recorder == [] and messages(db, campaign["id"]) == []
    stale = registry.settings["campaigns.fanout_stale_seconds"]
    tick(registry, utcnow() + dt.timedelta(seconds=stale + 1))
    assert [name for name, _ in task_recorder] == ["campaigns.fan_out_chunk"]
    run_outbox()
    assert len(messages(db, campaign["id"])) == 3
    tick(registry)
    assert campaign_status(testapp, vendor, campaign) == "RUNNING"
    assert len(recipients(db, campaign["id"])) == 3


def test_the_loop_reports_itself_alive_only_between_start_and_stop(registry, monkeypatch):
    monkeypatch.setitem(registry.settings, "campaigns.tick_seconds", 3600)  # one tick, then it waits
    loop = CampaignLoop(registry)
    assert loop.is_alive() is False  # not started: /healthz must not call it up
    loop.start()
    try:
        assert loop.is_alive() is True
    finally:
        loop.stop(timeout=10)
    assert loop.is_alive() is False
