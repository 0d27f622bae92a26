"""The sender against the Meta sandbox over real HTTP: outcomes, retries, dead letters, pacing, leases."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from sqlalchemy import func, select, update

from kloyst.db import tenancy, utcnow
from kloyst.meta import MetaClient
from kloyst_plugins.messages.governor import (CEILING_RECOVER_AFTER, RECOVER_AFTER, SLOW_DOWN, STEP,
                                                MemoryGovernor)
from kloyst_plugins.messages.models import DeadLetter, DuplicateSend, MessageLog
from kloyst_plugins.messages.outcomes import Job, Outcome
from kloyst_plugins.messages.sender import Number, Sender, SenderSettings
from sending_support import queue_messages, recipient, sending_setup

FAST = SenderSettings(concurrency=16, lease_seconds=60, max_retries=2, retry_base_seconds=0.05)


@pytest.fixture
def sender_factory(registry, committed_db):
    started: list[Sender] = []

    def start(settings: SenderSettings = FAST, **kwargs) -> Sender:
        sender = Sender(registry, settings, **kwargs).start()
        started.append(sender)
        return sender

    yield start
    for sender in started:
        sender.stop(timeout=10)


def messages(db, ids) -> dict:
    db.expire_all()
    with tenancy.unscoped(db):
        return {m.id: m for m in db.scalars(select(MessageLog).where(MessageLog.id.in_(ids)))}


def wait_for(db, ids, condition, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        found = messages(db, ids)
        if all(condition(m) for m in found.values()) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def dead_letters(db, ids) -> list[DeadLetter]:
    with tenancy.unscoped(db):
        return list(db.scalars(select(DeadLetter).where(DeadLetter.message_id.in_(ids))))


def test_queued_messages_are_sent_once_each_with_metas_wamid(registry, committed_db, meta_sandbox, sender_factory):
    setup = sending_setup(committed_db, registry, meta_sandbox)
    ids = queue_messages(committed_db, registry, setup, 50)
    sender_factory()
    found = wait_for(committed_db, ids, lambda m: m.status == "SENT")
    assert {m.status for m in found.values()} == {"SENT"}
    assert all(m.wamid and m.wamid.startswith("wamid.") and m.sent_at for m in found.values())
    assert all(m.attempts == 1 and m.retry_count == 0 and m.lease_until is None for m in found.values())
    stats = meta_sandbox.state.stats()
    assert stats["accepted"] == 50
    assert sorted(stats["by_recipient"]) == sorted(recipient(i).lstrip("+") for i in range(50))
    assert set(stats["by_recipient"].values()) == {1}
    # The message id travels in biz_opaque_callback_data, so webhooks can name the message.
    sends = list(meta_sandbox.state.sends)
    assert len({s["id"] for s in sends}) == 50


@pytest.mark.parametrize("code", [131000, 131016, 2])
def test_a_transient_error_is_retried_with_backoff_then_fails_into_the_dead_letters(
        code, registry, committed_db, meta_sandbox, sender_factory):
    setup = sending_setup(committed_db, registry, meta_sandbox)
    meta_sandbox.state.behaviour.update({"failure_rates": {code: 1.0}})
    ids = queue_messages(committed_db, registry, setup, 3)
    sender_factory()
    found = wait_for(committed_db, ids, lambda m: m.status == "FAILED")
    for message in found.values():
        assert message.status == "FAILED"
        assert message.retry_count == FAST.max_retries
        assert message.attempts == FAST.max_retries + 1
        assert message.error_code == code
    letters = dead_letters(committed_db, ids)
    assert len(letters) == 3 and {d.error_kind for d in letters} == {"transient"}
    assert {d.error_code for d in letters} == {code}
    assert meta_sandbox.state.stats()["errors"][str(code)] == 3 * (FAST.max_retries + 1)


def test_a_transient_error_waits_for_its_backoff_before_the_next_attempt(registry, committed_db, meta_sandbox,
                                                                          sender_factory):
    setup = sending_setup(committed_db, registry, meta_sandbox)
    meta_sandbox.state.behaviour.update({"failure_rates": {131000: 1.0}})
    ids = queue_messages(committed_db, registry, setup, 1)
    slow = SenderSettings(concurrency=4, max_retries=5, retry_base_seconds=30)
    before = utcnow()
    sender_factory(slow)
    found = wait_for(committed_db, ids, lambda m: m.retry_count == 1)
    message = found[ids[0]]
    assert message.status == "QUEUED" and message.retry_count == 1 and message.error_code == 131000
    # First retry: uniform in [base/2, base] = [15 s, 30 s] after the failure.
    assert before + dt.timedelta(seconds=15) <= message.next_attempt_at <= utcnow() + dt.timedelta(seconds=30)
    assert dead_letters(committed_db, ids) == []


@pytest.mark.parametrize("code,kind", [(132001, "permanent"), (131026, "permanent"), (131047, "permanent"),
                                       (190, "auth"), (131031, "permanent")])
def test_a_permanent_error_fails_at_once_with_a_dead_letter_row(code, kind, registry, committed_db, meta_sandbox,
                                                               sender_factory):
    setup = sending_setup(committed_db, registry, meta_sandbox)
    meta_sandbox.state.behaviour.update({"failure_rates": {code: 1.0}})
    ids = queue_messages(committed_db, registry, setup, 2)
    sender_factory()
    found = wait_for(committed_db, ids, lambda m: m.status == "FAILED")
    assert all(m.status == "FAILED" and m.attempts == 1 and m.retry_count == 0 for m in found.values())
    letters = dead_letters(committed_db, ids)
    assert len(letters) == 2
    assert {(d.error_code, d.error_kind) for d in letters} == {(code, kind)}
    assert all(d.reason and d.details.get("attempts") == 1 for d in letters)


def test_an_unknown_template_is_refused_by_meta_and_dead_lettered_with_132001(registry, committed_db, meta_sandbox,
                                                                             sender_factory):
    setup = sending_setup(committed_db, registry, meta_sandbox)
    ids = queue_messages(committed_db, registry, setup, 1, template="no_such_template")
    sender_factory()
    found = wait_for(committed_db, ids, lambda m: m.status == "FAILED")
    assert found[ids[0]].error_code == 132001
    assert [d.error_code for d in dead_letters(committed_db, ids)] == [132001]


def test_throughput_refusals_are_requeued_without_counting_a_retry_and_slow_the_number(
        registry, committed_db, meta_sandbox, sender_factory):
    setup = sending_setup(committed_db, registry, meta_sandbox)
    meta_sandbox.state.behaviour.update({"failure_rates": {130429: 1.0}})
    ids = queue_messages(committed_db, registry, setup, 5)
    sender = sender_factory()
    found = wait_for(committed_db, ids, lambda m: m.error_code == 130429 and m.status == "QUEUED")
    assert all(m.status == "QUEUED" and m.retry_count == 0 and m.error_code == 130429 for m in found.values())
    pace = sender.governor.pace(str(setup.phone_number_id))
    assert pace.factor < FAST.safety and pace.ceiling < FAST.safety
    meta_sandbox.state.behaviour.update({"failure_rates": {}})
    found = wait_for(committed_db, ids, lambda m: m.status == "SENT")
    assert {m.status for m in found.values()} == {"SENT"}
    assert dead_letters(committed_db, ids) == []


def test_an_unreachable_meta_is_a_transient_failure(registry, committed_db, meta_sandbox, sender_factory):
    setup = sending_setup(committed_db, registry, meta_sandbox)
    ids = queue_messages(committed_db, registry, setup, 2)
    nowhere = MetaClient("http://127.0.0.1:9", "v23.0", timeout=2, max_connections=4)
    sender_factory(SenderSettings(concurrency=4, max_retries=1, retry_base_seconds=0.05), meta=nowhere)
    found = wait_for(committed_db, ids, lambda m: m.status == "FAILED")
    assert all(m.status == "FAILED" and m.retry_count == 1 and m.attempts == 2 for m in found.values())
    # Nothing left the machine: a refused connection cannot have been accepted by Meta.
    assert not any(m.maybe_sent_before for m in found.values())
    assert {d.error_kind for d in dead_letters(committed_db, ids)} == {"transient"}


def test_a_contact_who_opted_out_after_queueing_is_never_sent_to(registry, committed_db, meta_sandbox,
                                                                sender_factory):
    from kloyst_plugins.contacts.models import Contact

    setup = sending_setup(committed_db, registry, meta_sandbox)
    cipher, hasher = registry["kloyst.cipher"], registry["kloyst.mobile_hasher"]
    with tenancy.unscoped(committed_db):
        contact = Contact(vendor_id=setup.vendor_id, mobile_hash=hasher(setup.vendor_id, recipient(0)),
                          mobile_enc=cipher.encrypt(recipient(0), vendor_id=setup.vendor_id, field="mobile"),
                          enc_kid=cipher.active_kid, opted_out=True, opted_out_at=utcnow())
        committed_db.add(contact)
        committed_db.flush()
    committed_db.commit()
    ids = queue_messages(committed_db, registry, setup, 1, contact_id=contact.id)
    sender_factory()
    found = wait_for(committed_db, ids, lambda m: m.status == "FAILED")
    assert found[ids[0]].status == "FAILED" and found[ids[0]].error_message == "contact opted out"
    assert [d.error_kind for d in dead_letters(committed_db, ids)] == ["refused"]
    assert meta_sandbox.state.stats()["accepted"] == 0


def test_a_message_whose_lease_ran_out_is_queued_again_and_marked_maybe_sent(registry, committed_db, meta_sandbox,
                                                                            sender_factory):
    setup = sending_setup(committed_db, registry, meta_sandbox)
    ids = queue_messages(committed_db, registry, setup, 3)
    with tenancy.unscoped(committed_db):  # as a sender killed mid-call leaves them
        committed_db.execute(update(MessageLog).where(MessageLog.id.in_(ids)).values(
            status="SENDING", status_rank=1, attempts=1, lease_until=utcnow() - dt.timedelta(seconds=1)))
    committed_db.commit()
    sender_factory()
    found = wait_for(committed_db, ids, lambda m: m.status == "SENT")
    assert all(m.status == "SENT" and m.maybe_sent_before and m.attempts == 2 for m in found.values())


def test_a_second_wamid_for_a_sent_message_is_counted_once_as_a_duplicate(registry, committed_db, meta_sandbox):
    setup = sending_setup(committed_db, registry, meta_sandbox)
    [message_id] = queue_messages(committed_db, registry, setup, 1)
    with tenancy.unscoped(committed_db):
        committed_db.execute(update(MessageLog).where(MessageLog.id == message_id).values(
            status="SENT", status_rank=2, attempts=2, wamid="wamid.first"))
    committed_db.commit()
    sender = Sender(registry, FAST)
    number = Number(setup.phone_number_id, setup.vendor_id, setup.meta_phone_number_id, 1000, "t", 0.0)
    late = Outcome(Job(message_id, setup.vendor_id, number, 1, b"", True), utcnow(), wamid="wamid.second")
    sender.write([late])
    sender.write([late])  # the same answer recorded twice counts once
    committed_db.expire_all()
    with tenancy.unscoped(committed_db):
        message = committed_db.get(MessageLog, message_id)
        duplicates = committed_db.scalar(select(func.count()).select_from(DuplicateSend))
    assert message.wamid == "wamid.first" and message.duplicate_sends == 1 and duplicates == 1
    sender.meta.close()


def test_a_late_answer_for_a_message_waiting_to_be_resent_is_adopted_instead_of_sending_again(
        registry, committed_db, meta_sandbox):
    setup = sending_setup(committed_db, registry, meta_sandbox)
    [message_id] = queue_messages(committed_db, registry, setup, 1)
    with tenancy.unscoped(committed_db):  # the lease ran out and the reconciler queued it again
        committed_db.execute(update(MessageLog).where(MessageLog.id == message_id).values(
            status="QUEUED", attempts=1, maybe_sent_before=True))
    committed_db.commit()
    sender = Sender(registry, FAST)
    number = Number(setup.phone_number_id, setup.vendor_id, setup.meta_phone_number_id, 1000, "t", 0.0)
    sender.write([Outcome(Job(message_id, setup.vendor_id, number, 1, b"", False), utcnow(), wamid="wamid.late")])
    committed_db.expire_all()
    with tenancy.unscoped(committed_db):
        message = committed_db.get(MessageLog, message_id)
    assert (message.status, message.wamid, message.duplicate_sends) == ("SENT", "wamid.late", 0)
    sender.meta.close()


def test_the_pace_slows_on_throttling_settles_under_the_refused_rate_and_climbs_back_when_quiet():
    clock = [1000.0]
    governor = MemoryGovernor(0.97, wall=lambda: clock[0])
    assert governor.pace("n").factor == pytest.approx(0.97)
    slowed = governor.slow_down("n")
    assert slowed.factor == pytest.approx(0.97 * SLOW_DOWN) and slowed.ceiling == pytest.approx(0.97 * 0.98)
    assert governor.slow_down("n").factor == pytest.approx(slowed.factor)  # one burst is one signal
    clock[0] += RECOVER_AFTER
    assert governor.pace("n").factor == pytest.approx(slowed.factor + STEP)
    for _ in range(30):
        clock[0] += RECOVER_AFTER
        governor.pace("n")
    assert governor.pace("n").factor == pytest.approx(slowed.ceiling)  # settled just under the refused pace
    clock[0] += CEILING_RECOVER_AFTER  # a long quiet spell: the ceiling creeps back toward the starting pace
    assert governor.pace("n").ceiling == pytest.approx(slowed.ceiling + STEP)


def test_the_bucket_never_grants_more_than_rate_plus_burst_in_any_second():
    clock = [0.0]
    governor = MemoryGovernor(1.0, clock=lambda: clock[0])
    granted = []
    for step in range(3000):  # 3 s in 1 ms steps, always asking for more than allowed
        clock[0] = step / 1000
        granted.append((clock[0], governor.take("n", 80.0, 50)[0]))
    for start in range(0, 2000, 7):
        window = sum(g for at, g in granted if start / 1000 <= at < start / 1000 + 1.0)
        assert window <= 80 + 1.5
    assert sum(g for _, g in granted) >= 3 * 80 - 2


def test_messages_of_a_number_taken_back_fail_instead_of_waiting_forever(registry, committed_db, meta_sandbox,
                                                                         sender_factory):
    from kloyst_plugins.waba.models import PhoneNumber

    setup = sending_setup(committed_db, registry, meta_sandbox)
    with tenancy.unscoped(committed_db):
        committed_db.execute(update(PhoneNumber).where(PhoneNumber.id == setup.phone_number_id).values(
            status="UNASSIGNED"))
    committed_db.commit()
    ids = queue_messages(committed_db, registry, setup, 2)
    sender_factory()
    found = wait_for(committed_db, ids, lambda m: m.status == "FAILED")
    assert {m.error_message for m in found.values()} == {"phone number is UNASSIGNED"}
    assert meta_sandbox.state.stats()["accepted"] == 0


def test_outcomes_are_recorded_once_the_database_is_back_never_dropped(registry, committed_db, meta_sandbox,
                                                                      monkeypatch):
    setup = sending_setup(committed_db, registry, meta_sandbox)
    [message_id] = queue_messages(committed_db, registry, setup, 1)
    with tenancy.unscoped(committed_db):
        committed_db.execute(update(MessageLog).where(MessageLog.id == message_id).values(
            status="SENDING", status_rank=1, attempts=1))
    committed_db.commit()
    sender = Sender(registry, FAST)
    number = Number(setup.phone_number_id, setup.vendor_id, setup.meta_phone_number_id, 1000, "t", 0.0)
    outcome = Outcome(Job(message_id, setup.vendor_id, number, 1, b"", False), utcnow(), wamid="wamid.kept")
    real_write, failures = sender.writer.write, []

    def flaky(batch):  # the database refuses the first six tries (more than a stopping sender would make)
        if len(failures) < 6:
            failures.append(1)
            raise ConnectionError("database unavailable")
        real_write(batch)

    monkeypatch.setattr(sender.writer, "write", flaky)
    monkeypatch.setattr("kloyst_plugins.messages.sender.time.sleep", lambda seconds: None)
    sender._in_flight = 1
    sender._write_with_retry([outcome])
    committed_db.expire_all()
    with tenancy.unscoped(committed_db):
        message = committed_db.get(MessageLog, message_id)
    assert (message.status, message.wamid, len(failures), sender.in_flight) == ("SENT", "wamid.kept", 6, 0)
    sender.meta.close()
