"""A status that names a message is never lost and never makes the message go twice.

Meta echoes the message id the sender put in ``biz_opaque_callback_data``, so a status can name
its message before Kloyst recorded Meta's answer (the answer is slow, or its sender died). These
tests pin what then happens in every state the message can be in, the race with the sender's
writer, tenancy, late statuses, and two drainers adopting at once.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import types
import uuid

import pytest
import transaction
from sqlalchemy import func, select, text
from webhooks_support import Builder, status, statuses

from kloyst.db import session_scope, tenancy, utcnow
from kloyst.queue import TaskContext
from kloyst_plugins.messages import statuses as message_statuses
from kloyst_plugins.messages.audit import disagreements, summary
from kloyst_plugins.messages.models import DuplicateSend, MessageStatus, MessageStatusEvent
from kloyst_plugins.messages.outcomes import Job, Outcome, OutcomeWriter
from kloyst_plugins.messages.sender import SenderSettings

T0 = 1_700_000_000


def _events(db, **where) -> list[MessageStatusEvent]:
    db.expire_all()
    with tenancy.unscoped(db):
        return list(db.scalars(select(MessageStatusEvent).filter_by(**where).order_by(MessageStatusEvent.id)))


def _duplicates(db, message_id) -> list[str]:
    with tenancy.unscoped(db):
        return list(db.scalars(select(DuplicateSend.wamid).where(DuplicateSend.message_id == message_id)))


def _check(db) -> dict:
    """``kloyst messages check``'s findings, read on the test's own connection (it sees what the test wrote)."""
    db.flush()
    return disagreements(db.connection())


def _apply(registry, vendor_id, *raw_statuses) -> None:
    """What the drainer does with one vendor's statuses: one transaction, the vendor's scope."""
    manager = transaction.TransactionManager(explicit=True)
    with session_scope(registry["kloyst.session_factory"], vendor_id=vendor_id, manager=manager) as db:
        ctx = TaskContext(registry, db, manager, vendor_id)
        message_statuses.apply_statuses(ctx, [message_statuses.StatusUpdate.parse(raw, utcnow())
                                              for raw in raw_statuses])


@pytest.mark.parametrize("state", [MessageStatus.SENDING, MessageStatus.QUEUED, MessageStatus.PAUSED])
def test_a_status_naming_a_message_without_a_wamid_adopts_it_whatever_stage_of_sending_it_is_at(
        state, build, line, deliver, registry):
    message = build.message(line, status=state, wamid=None, attempts=1,
                            lease_until=utcnow() + dt.timedelta(seconds=60) if state is MessageStatus.SENDING else None)
    deliver(statuses(line, status("wamid.first-call", "delivered", at=T0 + 5, opaque=str(message.id))))
    message = build.reload(message)
    assert (message.wamid, message.status, message.lease_until) == ("wamid.first-call", "DELIVERED", None)
    assert message.sent_at == dt.datetime.fromtimestamp(T0 + 5, dt.timezone.utc)
    assert message.duplicate_sends == 0


def test_the_senders_answer_after_an_adoption_changes_nothing_and_a_second_call_is_counted(committed_db, registry):
    build = Builder(committed_db, registry)
    line = build.line()
    message = build.message(line, status=MessageStatus.SENDING, wamid=None, attempts=2)
    _apply(registry, line.vendor_id, status("wamid.first-call", "sent", at=T0, opaque=str(message.id)))
    writer = OutcomeWriter(registry["kloyst.engine"], SenderSettings(), governor=None, numbers={}, stats={
        "sent": 0, "duplicates": 0}, plugin_manager=registry["kloyst.plugin_manager"])
    job = Job(message.id, line.vendor_id, types.SimpleNamespace(id=line.number.id), 2, b"", False)
    writer.write([Outcome(job, utcnow(), wamid="wamid.first-call")])  # the same call's answer: nothing new
    assert build.reload(message).duplicate_sends == 0
    writer.write([Outcome(job, utcnow(), wamid="wamid.second-call")])  # Meta accepted another call of it
    message = build.reload(message)
    assert (message.wamid, message.status, message.duplicate_sends) == ("wamid.first-call", "SENT", 1)
    assert _duplicates(committed_db, message.id) == ["wamid.second-call"]
    assert _check(committed_db) == {}


def test_a_status_for_a_message_that_ended_without_a_wamid_is_kept_linked_and_not_applied(build, line, deliver,
                                                                                         registry):
    message = build.message(line, status=MessageStatus.FAILED, wamid=None, attempts=3)
    deliver(statuses(line, status("wamid.late", "delivered", at=T0, opaque=str(message.id))))
    message = build.reload(message)
    assert (message.status, message.wamid) == ("FAILED", None)
    [event] = _events(build.db, wamid="wamid.late")
    assert event.message_id == message.id
    assert _check(build.db) == {}
    assert summary(build.db.connection())["statuses_after_giving_up"] == 1


def test_a_status_without_opaque_data_for_a_wamid_nobody_carries_is_kept_then_applied_once_a_message_carries_it(
        committed_db, registry):
    build = Builder(committed_db, registry)
    line = build.line()
    _apply(registry, line.vendor_id, status("wamid.not-yet", "read", at=T0 + 9))
    [event] = _events(committed_db, wamid="wamid.not-yet")
    assert event.message_id is None
    assert summary(committed_db.connection())["statuses_without_message"] == 1
    message = build.message(line, wamid="wamid.not-yet")  # the sender records Meta's answer only now
    assert "unlinked" in _check(committed_db)  # the check sees a stored status that was never applied
    committed_db.commit()
    assert message_statuses.link_unlinked(registry, utcnow() - dt.timedelta(hours=1)) == 1
    message = build.reload(message)
    assert message.status == "READ"
    assert [e.message_id for e in _events(committed_db, wamid="wamid.not-yet")] == [message.id]
    assert _check(committed_db) == {}


def test_a_status_naming_another_vendors_message_is_never_applied_across_tenants(build, line, deliver, registry):
    other = build.line("Other Co")
    theirs = build.message(other, status=MessageStatus.SENDING, wamid=None, attempts=1)
    deliver(statuses(line, status("wamid.stranger", "delivered", opaque=str(theirs.id))))
    theirs = build.reload(theirs)
    assert (theirs.status, theirs.wamid) == ("SENDING", None)
    [event] = _events(build.db, wamid="wamid.stranger")
    assert (event.vendor_id, event.message_id) == (line.vendor_id, None)
    assert _check(build.db) == {}


def test_a_status_arriving_days_late_is_applied_when_it_moves_the_message_forward(build, line, deliver):
    message = build.message(line)
    three_days_ago = int(time.time()) - 3 * 86400
    deliver(statuses(line, status(message.wamid, "delivered", at=three_days_ago)))
    message = build.reload(message)
    assert message.status == "DELIVERED"
    assert message.delivered_at == dt.datetime.fromtimestamp(three_days_ago, dt.timezone.utc)
    deliver(statuses(line, status(message.wamid, "sent", at=three_days_ago - 10)))  # late and behind: kept only
    assert build.reload(message).status == "DELIVERED"


def test_a_status_that_arrives_while_the_senders_answer_is_being_committed_is_the_messages_own(
        committed_db, registry):
    """The race that left statuses unapplied: the drainer's look-up misses a wamid the writer is committing."""
    build = Builder(committed_db, registry)
    line = build.line()
    message = build.message(line, status=MessageStatus.SENDING, wamid=None, attempts=1)
    writer = registry["kloyst.engine"].connect()
    answer = writer.begin()
    writer.execute(text("UPDATE message_log SET status = 'SENT', status_rank = 2, wamid = 'wamid.own' "
                        "WHERE id = :id"), {"id": message.id})  # the row is locked until the writer commits
    failures = []

    def drain() -> None:
        try:
            _apply(registry, line.vendor_id, status("wamid.own", "delivered", at=T0 + 5, opaque=str(message.id)))
        except Exception as exc:  # pragma: no cover - reported by the assertion below
            failures.append(exc)

    drainer = threading.Thread(target=drain)
    drainer.start()
    time.sleep(0.5)  # the drainer has looked the wamid up (missed) and waits on the message's row
    answer.commit()
    writer.close()
    drainer.join(timeout=10)
    assert failures == [] and not drainer.is_alive()
    message = build.reload(message)
    assert (message.status, message.duplicate_sends) == ("DELIVERED", 0)
    assert _duplicates(committed_db, message.id) == []
    assert _check(committed_db) == {}


def test_two_drainers_adopting_the_same_wamid_at_once_agree_without_an_error(committed_db, registry):
    build = Builder(committed_db, registry)
    line = build.line()
    messages = [build.message(line, status=MessageStatus.SENDING, wamid=None, attempts=1) for _ in range(20)]
    failures = []
    barrier = threading.Barrier(2)

    def drain(name: str, offset: int) -> None:
        barrier.wait()
        try:
            _apply(registry, line.vendor_id, *(status(f"wamid.{m.id}", name, at=T0 + offset, opaque=str(m.id))
                                               for m in messages))
        except Exception as exc:  # pragma: no cover - reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=drain, args=("sent", 0)), threading.Thread(target=drain, args=("delivered", 5))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert failures == []
    for message in messages:
        reloaded = build.reload(message)
        assert (reloaded.wamid, reloaded.status, reloaded.duplicate_sends) == (f"wamid.{message.id}", "DELIVERED", 0)
    with tenancy.unscoped(committed_db):
        assert committed_db.scalar(select(func.count()).select_from(DuplicateSend)) == 0
    assert _check(committed_db) == {}


def test_messages_check_lists_a_status_that_was_stored_but_never_applied(build, line, deliver, db):
    message = build.message(line)
    deliver(statuses(line, status(message.wamid, "read", at=T0 + 9)))
    with tenancy.unscoped(db):  # what the old race left behind: the event is there, the message never moved
        db.execute(text("UPDATE message_log SET status = 'SENT', status_rank = 2 WHERE id = :id"), {"id": message.id})
        db.execute(text("INSERT INTO duplicate_send (wamid, vendor_id, message_id, detected_by, created_at) "
                        "VALUES (:w, :v, :m, 'webhook', :now)"),
                   {"w": message.wamid, "v": line.vendor_id, "m": message.id, "now": utcnow()})
    found = _check(db)
    assert set(found) == {"lagging", "false_duplicate", "miscounted"}
    count, [line_text] = found["lagging"]
    assert count == 1 and str(message.id) in line_text and "READ" in line_text


def test_a_second_wamid_naming_a_message_is_one_duplicate_and_not_a_disagreement(build, line, deliver, db):
    message = build.message(line)
    deliver(statuses(line, status(f"wamid.{uuid.uuid4().hex}", "delivered", opaque=str(message.id))))
    assert build.reload(message).duplicate_sends == 1
    assert _check(db) == {}
