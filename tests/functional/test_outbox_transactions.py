"""The outbox writes in the caller's transaction: rolled back → no event, committed → exactly one."""

import transaction
from sqlalchemy import func, select

from kloyst.db import session_scope, tenancy
from kloyst.outbox import Outbox, OutboxEvent, OutboxStatus


def count(db, topic):
    db.expire_all()
    return db.scalar(select(func.count()).select_from(OutboxEvent).where(OutboxEvent.topic == topic))


def test_rolled_back_transaction_leaves_no_event(registry, db):
    try:
        with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as session:
            Outbox(session).add("test.rollback", {"n": 1})
            session.flush()
            raise RuntimeError("business failure after the event was written")
    except RuntimeError:
        pass
    assert count(db, "test.rollback") == 0


def test_committed_transaction_leaves_exactly_one_event(registry, db):
    with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as session:
        Outbox(session).add("test.commit", {"n": 1})
    assert count(db, "test.commit") == 1


def test_tasks_enqueued_in_a_request_are_sent_only_after_commit(registry, db, task_recorder):
    manager = transaction.TransactionManager(explicit=True)
    with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS, manager=manager):
        registry["kloyst.queue"].enqueue_after_commit(manager, "core.deliver_outbox_event", event_id=1)
        assert task_recorder == []
    assert task_recorder == [("core.deliver_outbox_event", {"event_id": 1})]

    manager = transaction.TransactionManager(explicit=True)
    try:
        with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS, manager=manager):
            registry["kloyst.queue"].enqueue_after_commit(manager, "core.deliver_outbox_event", event_id=2)
            raise RuntimeError("abort")
    except RuntimeError:
        pass
    assert [kw["event_id"] for _, kw in task_recorder] == [1]


def test_relay_publishes_and_marks_events(registry, db, run_outbox, mailbox):
    with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as session:
        from kloyst import mail

        mail.send(Outbox(session), to="someone@example.com", subject="Hi", body="Body")
    assert run_outbox() == 1
    db.expire_all()
    event = db.scalars(select(OutboxEvent).where(OutboxEvent.topic == "mail.send")).one()
    assert event.status == OutboxStatus.PUBLISHED and event.published_at is not None
    [message] = mailbox.to("someone@example.com")
    assert message["Subject"] == "Hi"
