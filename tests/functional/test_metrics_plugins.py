"""The plugins' metrics move when the thing happens: message statuses per vendor, dead letters, imports, wallet holds.

Counters are counted once their transaction commits; the gauges come through the
``kloyst_metrics`` hook and are read at scrape time (as an OUTBOX or ALL process exports them).
"""

from __future__ import annotations

import pytest
from sqlalchemy import update
from webhooks_support import Builder, status, statuses

from kloyst import metrics as kmetrics
from kloyst.metrics.definitions import STATUS_SOURCES
from kloyst.db import tenancy, utcnow
from kloyst.meta import MetaError
from kloyst_plugins.messages import settlement
from kloyst_plugins.messages.models import DeadLetter, MessageStatus
from kloyst_plugins.messages.outcomes import Job, Outcome
from kloyst_plugins.messages.sender import Number, Sender, SenderSettings
from kloyst_plugins.wallet.ledger import Ledger

STATUS = "kloyst_message_status_total"


@pytest.fixture
def metrics(registry):
    return kmetrics.of(registry).export_shared()


def statuses_of(metrics, vendor_id, source: str) -> dict[str, float]:
    """``{status: count}`` of one vendor's messages as ``source`` saw them (the pairs exported at 0 left out)."""
    metrics.expire_shared()
    return {s.labels["status"]: s.value for family in metrics.registry.collect() for s in family.samples
            if s.name == STATUS and s.labels["vendor"] == str(vendor_id) and s.labels["source"] == source
            and s.value}


def test_a_vendors_first_count_exports_its_other_statuses_at_zero(build, line, deliver, metrics):
    """rate() sees a series's increments, not its birth: delivered and read exist (at 0) once the vendor's first
    status is counted, so their own first increments are not lost."""
    metrics.messages_reached({(line.vendor_id, "sent"): 1}, kmetrics.SENDER)
    exported = {(s.labels["status"], s.labels["source"]): s.value for family in metrics.registry.collect()
                for s in family.samples if s.name == STATUS and s.labels["vendor"] == str(line.vendor_id)}
    assert exported[("sent", kmetrics.SENDER)] == 1
    assert exported[("delivered", kmetrics.WEBHOOK)] == exported[("read", kmetrics.WEBHOOK)] == 0
    assert set(exported) == set(STATUS_SOURCES)


def test_outcomes_known_in_advance_are_exported_at_zero_before_they_happen(metrics):
    samples = {(s.name, tuple(sorted(s.labels.items()))) for family in metrics.registry.collect()
               for s in family.samples}
    assert ("kloyst_webhook_deliveries_received_total", (("outcome", "invalid_signature"),)) in samples
    assert ("kloyst_import_rows_total", (("outcome", "rejected"),)) in samples


def test_the_plugins_scrape_time_gauges_come_through_the_kloyst_metrics_hook(registry):
    names = {info.name for info in kmetrics.of(registry).catalogue()}
    assert {"kloyst_message_dead_letters", "kloyst_messages_queued", "kloyst_wallet_held",
            "kloyst_wallet_open_holds", "kloyst_wallet_oldest_open_hold_age_seconds"} <= names
    owners = {plugin for plugin, _ in registry["kloyst.plugin_manager"].collect("kloyst_metrics", registry=registry)}
    assert {"messages", "wallet"} <= owners


# -- the sender -----------------------------------------------------------------------------------------


@pytest.fixture
def sending(registry, committed_db):
    """A vendor's number with one message in flight per outcome, and a sender whose outcome writer records them."""
    build = Builder(committed_db, registry)
    line = build.line("Metrics Sender Co")
    sender = Sender(registry, SenderSettings(concurrency=1))
    number = Number(line.number.id, line.vendor_id, line.meta_phone_number_id, 80, "token", 0.0)

    def in_flight() -> Job:
        message = build.message(line, status=MessageStatus.SENDING, wamid=None, attempts=1)
        return Job(message.id, line.vendor_id, number, 1, b"", False)

    yield line, sender, in_flight
    sender.meta.close()


def test_the_senders_outcomes_are_counted_per_vendor_when_their_batch_commits(sending, metrics):
    line, sender, in_flight = sending
    sender.write([
        Outcome(in_flight(), utcnow(), wamid="wamid.metrics-sent-1"),
        Outcome(in_flight(), utcnow(), wamid="wamid.metrics-sent-2"),
        Outcome(in_flight(), utcnow(), error=MetaError("recipient is not on WhatsApp", code=131026)),
        Outcome(in_flight(), utcnow(), error=MetaError("temporary problem", code=131000, is_transient=True)),
    ])
    assert statuses_of(metrics, line.vendor_id, kmetrics.SENDER) == {"sent": 2, "failed": 1, "retry": 1}


def test_a_batch_whose_transaction_fails_counts_nothing(sending, metrics, monkeypatch):
    line, sender, in_flight = sending

    def fail(*_args):
        raise RuntimeError("the database went away mid-batch")

    monkeypatch.setattr(settlement, "report", fail)
    with pytest.raises(RuntimeError):
        sender.write([Outcome(in_flight(), utcnow(), wamid="wamid.metrics-lost")])
    assert statuses_of(metrics, line.vendor_id, kmetrics.SENDER) == {}


# -- status webhooks and dead letters ---------------------------------------------------------------------


def test_status_reports_are_counted_per_vendor_and_status_once_each(build, line, deliver, metrics):
    first, second = build.message(line), build.message(line)
    deliver(statuses(line, status(first.wamid, "delivered"), status(first.wamid, "read"),
                     status(second.wamid, "delivered")))
    deliver(statuses(line, status(first.wamid, "read"),  # a replay: recorded once already
                     status("wamid.not-ours", "delivered")))  # no message of this vendor carries it
    assert statuses_of(metrics, line.vendor_id, kmetrics.WEBHOOK) == {"delivered": 2, "read": 1}


def test_a_failed_status_is_counted_and_its_dead_letter_shows_until_requeued(build, line, deliver, metrics, db):
    message = build.message(line)
    before = metrics.value("kloyst_message_dead_letters", kind="permanent")
    deliver(statuses(line, status(message.wamid, "failed", errors=[{"code": 131026, "title": "Undeliverable"}])))
    assert statuses_of(metrics, line.vendor_id, kmetrics.WEBHOOK) == {"failed": 1}
    assert metrics.value("kloyst_message_dead_letters", kind="permanent") == before + 1
    with tenancy.unscoped(db):
        db.execute(update(DeadLetter).where(DeadLetter.message_id == message.id).values(requeued_at=utcnow()))
    db.commit()
    assert metrics.value("kloyst_message_dead_letters", kind="permanent") == before


def test_queued_messages_are_the_senders_backlog(build, line, metrics):
    before = metrics.value("kloyst_messages_queued")
    build.message(line, status=MessageStatus.QUEUED, wamid=None)
    build.message(line, status=MessageStatus.QUEUED, wamid=None)
    assert metrics.value("kloyst_messages_queued") == before + 2


# -- imports ----------------------------------------------------------------------------------------------


def test_an_imports_rows_are_counted_by_outcome_and_its_chunks_by_result(testapp, db, registry, owner,
                                                                        enable_plugin, run_outbox, monkeypatch,
                                                                        tmp_path, metrics):
    from plugins.imports.imports_processing_support import make_job

    monkeypatch.setitem(registry.settings, "imports.storage_dir", str(tmp_path / "imports"))
    enable_plugin(owner, "contacts")
    enable_plugin(owner, "imports")
    outcomes = ("created", "duplicate", "rejected")
    before = {o: metrics.value("kloyst_import_rows_total", outcome=o) for o in outcomes}
    chunks_before = metrics.value("kloyst_import_chunks_total", result="done")
    rows = [["+447911100001", "Ann"], ["+447911100002", "Bob"], ["+447911100001", "Ann again"], ["12", "Bad"]]
    job = make_job(db, registry.settings, owner.vendor_id, ["Mobile", "Name"], rows, chunk_size=2)
    testapp.put_json(f"/v1/imports/{job.id}/mapping", {"columns": {"phone": "Mobile", "name": "Name"},
                                                     "merge_strategy": "SKIP_DUPLICATES"}, headers=owner.headers)
    run_outbox()
    after = {o: metrics.value("kloyst_import_rows_total", outcome=o) for o in outcomes}
    assert {o: after[o] - before[o] for o in outcomes} == {"created": 2, "duplicate": 1, "rejected": 1}
    assert metrics.value("kloyst_import_chunks_total", result="done") == chunks_before + 2


# -- wallet holds -----------------------------------------------------------------------------------------


def test_wallet_gauges_show_money_held_and_the_open_hold_until_it_is_released(db, owner, metrics):
    ledger = Ledger(db.connection(), owner.vendor_id)
    currency = ledger.wallet().currency
    names = ("kloyst_wallet_held", "kloyst_wallet_balance", "kloyst_wallet_open_holds")
    before = {name: metrics.value(name, currency=currency) for name in names}
    ledger.topup(10_000_000, idempotency_key="metrics-topup")
    hold = ledger.hold(2_500_000, idempotency_key="metrics-hold", reference="campaign:metrics")
    after = {name: metrics.value(name, currency=currency) for name in names}
    assert {name: after[name] - before[name] for name in names} == {
        "kloyst_wallet_held": 2.5, "kloyst_wallet_balance": 10.0, "kloyst_wallet_open_holds": 1}
    assert metrics.value("kloyst_wallet_oldest_open_hold_age_seconds", currency=currency) >= 0
    ledger.release(hold.id, idempotency_key="metrics-release")
    assert metrics.value("kloyst_wallet_open_holds", currency=currency) == before["kloyst_wallet_open_holds"]
    assert metrics.value("kloyst_wallet_held", currency=currency) == before["kloyst_wallet_held"]
