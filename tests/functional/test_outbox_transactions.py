"""The outbox writes in the caller's transaction: rolled back → no event, committed → exactly one."""

import transaction
from sqlalchemy import func, select

from kloyst import mail
from kloyst.db import session_scope, tenancy
from kloyst.mail import templates
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


def test_tasks_are_sent_only_after_commit_and_never_after_rollback(registry, db, task_recorder):
    from kloyst.queue import TASK_TOPIC

    queue = registry["kloyst.queue"]
    manager = transaction.TransactionManager(explicit=True)
    with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS, manager=manager) as s:
        queue.enqueue(s, manager, "probe.record", n=1)
        assert task_recorder == []
    assert task_recorder == [("probe.record", {"n": 1})]

    manager = transaction.TransactionManager(explicit=True)
    try:
        with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS, manager=manager) as s:
            queue.enqueue(s, manager, "probe.record", n=2)
            raise RuntimeError("abort")
    except RuntimeError:
        pass
    assert [kw["n"] for _, kw in task_recorder] == [1]
    assert count(db, TASK_TOPIC) == 1


def test_relay_publishes_and_the_delivery_marks_the_event_delivered(registry, db, owner, run_outbox, mailbox):
    with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as session:
        mail.send(Outbox(session), templates.SIGNUP_TAKEN, user_id=owner.user.id)
    assert run_outbox() == 1
    db.expire_all()
    event = db.scalars(select(OutboxEvent).where(OutboxEvent.topic == "mail.send")).one()
    assert event.status == OutboxStatus.DELIVERED
    assert event.published_at is not None and event.delivered_at is not None and event.attempts == 1
    [message] = mailbox.to(owner.user.email)
    assert message["Subject"] == "Someone tried to sign up to Kloyst with your address"
