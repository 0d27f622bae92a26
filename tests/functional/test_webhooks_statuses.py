"""Status webhooks move messages forward only, once, and catch the send that went twice (RELIABILITY A6)."""

import datetime as dt

from sqlalchemy import func, select
from webhooks_support import deliveries, status, statuses

from kloyst.db import tenancy
from kloyst_plugins.messages.models import DeadLetter, DuplicateSend, MessageStatus, MessageStatusEvent

T0 = 1_700_000_000


def _count(db, model, *where) -> int:
    with tenancy.unscoped(db):
        return db.scalar(select(func.count()).select_from(model).where(*where))


def test_sent_delivered_read_set_each_time_the_pricing_and_end_read(build, line, deliver):
    message = build.message(line)
    deliver(statuses(line, status(message.wamid, "sent", at=T0, category="marketing")),
            statuses(line, status(message.wamid, "delivered", at=T0 + 5, category="marketing")),
            statuses(line, status(message.wamid, "read", at=T0 + 9, category=None)))
    message = build.reload(message)
    assert (message.status, message.status_rank) == (MessageStatus.READ.value, 4)
    assert message.delivered_at == dt.datetime.fromtimestamp(T0 + 5, dt.timezone.utc)
    assert message.read_at == dt.datetime.fromtimestamp(T0 + 9, dt.timezone.utc)
    assert (message.pricing_category, message.billable) == ("marketing", True)


def test_read_then_delivered_stays_read(build, line, deliver):
    message = build.message(line)
    deliver(statuses(line, status(message.wamid, "read", at=T0 + 9)))
    deliver(statuses(line, status(message.wamid, "delivered", at=T0 + 5)))
    message = build.reload(message)
    assert message.status == MessageStatus.READ.value
    assert message.delivered_at is not None  # the time is still recorded


def test_read_and_delivered_in_one_delivery_end_read(build, line, deliver):
    message = build.message(line)
    deliver(statuses(line, status(message.wamid, "read", at=T0 + 9), status(message.wamid, "delivered", at=T0 + 5)))
    assert build.reload(message).status == MessageStatus.READ.value


def test_delivered_before_sent_ends_delivered(build, line, deliver):
    message = build.message(line)
    deliver(statuses(line, status(message.wamid, "delivered", at=T0 + 5)))
    deliver(statuses(line, status(message.wamid, "sent", at=T0)))
    assert build.reload(message).status == MessageStatus.DELIVERED.value


def test_a_status_replayed_in_another_delivery_is_recorded_once_and_changes_nothing(build, line, deliver, db):
    message = build.message(line)
    deliver(statuses(line, status(message.wamid, "delivered", at=T0 + 5)))
    before = build.reload(message).updated_at
    deliver(statuses(line, status(message.wamid, "delivered", at=T0 + 5), status("wamid.other", "sent")))
    assert _count(db, MessageStatusEvent, MessageStatusEvent.wamid == message.wamid) == 1
    assert build.reload(message).updated_at == before
    assert len(deliveries(db)) == 2


def test_failed_marks_the_message_failed_with_one_dead_letter(build, line, deliver, db):
    message = build.message(line)
    error = {"code": 131026, "title": "Message undeliverable", "message": "Message undeliverable",
             "error_data": {"details": "Receiver is incapable of receiving this message"}}
    deliver(statuses(line, status(message.wamid, "sent", at=T0), status(message.wamid, "failed", at=T0 + 1,
                                                                           errors=[error])))
    deliver(statuses(line, status(message.wamid, "failed", at=T0 + 2, errors=[error])))
    message = build.reload(message)
    assert (message.status, message.status_rank, message.error_code) == (MessageStatus.FAILED.value, 5, 131026)
    assert "Receiver is incapable" in message.error_message
    [letter] = db.scalars(select(DeadLetter).where(DeadLetter.message_id == message.id))
    assert (letter.error_code, letter.error_kind) == (131026, "permanent")
    assert letter.details["wamid"] == message.wamid


def test_failed_after_delivered_leaves_the_message_delivered_without_a_dead_letter(build, line, deliver, db):
    message = build.message(line)
    deliver(statuses(line, status(message.wamid, "delivered", at=T0 + 5)))
    deliver(statuses(line, status(message.wamid, "failed", at=T0 + 6, errors=[{"code": 131000, "title": "x"}])))
    assert build.reload(message).status == MessageStatus.DELIVERED.value
    assert _count(db, DeadLetter, DeadLetter.message_id == message.id) == 0


def test_a_status_naming_a_requeued_message_adopts_its_wamid_so_it_is_not_sent_again(build, line, deliver):
    # The sender's call reached Meta, then its lease ran out: the message waits to be sent again.
    message = build.message(line, status=MessageStatus.QUEUED, wamid=None, maybe_sent_before=True)
    deliver(statuses(line, status("wamid.first-call", "delivered", at=T0 + 5, opaque=str(message.id))))
    message = build.reload(message)
    assert (message.wamid, message.status) == ("wamid.first-call", MessageStatus.DELIVERED.value)
    assert message.duplicate_sends == 0


def test_a_second_wamid_for_one_message_counts_one_duplicate_send(build, line, deliver, db):
    message = build.message(line)
    opaque = str(message.id)
    deliver(statuses(line, status("wamid.second", "sent", opaque=opaque), status(message.wamid, "sent")))
    deliver(statuses(line, status("wamid.second", "delivered", opaque=opaque)),
            statuses(line, status("wamid.second", "read", opaque=opaque)))
    message = build.reload(message)
    assert message.duplicate_sends == 1
    assert message.status == MessageStatus.SENT.value  # the other send's statuses are not this wamid's
    [duplicate] = db.scalars(select(DuplicateSend).where(DuplicateSend.message_id == message.id))
    assert (duplicate.wamid, duplicate.detected_by) == ("wamid.second", "webhook")
    assert _count(db, MessageStatusEvent, MessageStatusEvent.message_id == message.id) == 4


def test_a_status_posted_for_another_vendors_number_cannot_touch_its_messages(build, line, deliver, db):
    other = build.line("Other Co")
    theirs = build.message(other)
    deliver(statuses(line, status(theirs.wamid, "read", opaque=str(theirs.id))))
    theirs = build.reload(theirs)
    assert (theirs.status, theirs.duplicate_sends) == (MessageStatus.SENT.value, 0)


def test_statuses_are_ignored_for_a_vendor_without_the_messages_plugin(build, deliver):
    line = build.line("No Messages", plugins=("contacts", "waba"))
    message = build.message(line)
    deliver(statuses(line, status(message.wamid, "read")))
    assert build.reload(message).status == MessageStatus.SENT.value
