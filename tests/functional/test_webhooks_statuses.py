"""Status webhooks move messages forward only, once, and catch the send that went twice (docs/messaging.md)."""

import datetime as dt

import pytest
import transaction
from sqlalchemy import func, select
from webhooks_support import Builder, deliveries, status, statuses

from kloyst.db import session_scope, tenancy, utcnow
from kloyst.queue import TaskContext
from kloyst_plugins.messages import statuses as message_statuses
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


# The sender's own clock, to the microsecond, within the second Meta's webhooks will name.
SENT_AT = dt.datetime.fromtimestamp(T0, dt.timezone.utc) + dt.timedelta(milliseconds=734)


def test_a_status_reported_in_the_second_of_the_send_is_never_stored_before_the_send(build, line, deliver):
    message = build.message(line, sent_at=SENT_AT)
    deliver(statuses(line, status(message.wamid, "delivered", at=T0)))
    deliver(statuses(line, status(message.wamid, "read", at=T0)))
    message = build.reload(message)
    assert message.sent_at == SENT_AT
    assert message.delivered_at == message.read_at == SENT_AT


def test_read_reported_before_delivered_in_the_same_second_is_still_not_before_either(build, line, deliver):
    message = build.message(line, sent_at=SENT_AT)
    deliver(statuses(line, status(message.wamid, "read", at=T0), status(message.wamid, "delivered", at=T0)))
    message = build.reload(message)
    assert message.sent_at <= message.delivered_at <= message.read_at


def test_status_times_after_the_send_are_kept_as_meta_reported_them(build, line, deliver):
    message = build.message(line, sent_at=SENT_AT)
    deliver(statuses(line, status(message.wamid, "delivered", at=T0 + 1), status(message.wamid, "read", at=T0 + 7)))
    message = build.reload(message)
    assert message.delivered_at == dt.datetime.fromtimestamp(T0 + 1, dt.timezone.utc)
    assert message.read_at == dt.datetime.fromtimestamp(T0 + 7, dt.timezone.utc)


@pytest.fixture
def sqlite_registry(embedded_config):
    return embedded_config.registry


def test_on_the_embedded_default_a_status_is_never_stored_before_the_send_either(sqlite_registry):
    with sqlite_registry["kloyst.session_factory"]() as db:
        tenancy.set_scope(db, tenancy.ALL_VENDORS)
        build = Builder(db, sqlite_registry)
        line = build.line()
        message = build.message(line, sent_at=SENT_AT)
        manager = transaction.TransactionManager(explicit=True)
        with session_scope(sqlite_registry["kloyst.session_factory"], vendor_id=line.vendor_id,
                           manager=manager) as scoped:
            message_statuses.apply_statuses(TaskContext(sqlite_registry, scoped, manager, line.vendor_id), [
                message_statuses.StatusUpdate.parse(raw, utcnow())
                for raw in (status(message.wamid, "delivered", at=T0), status(message.wamid, "read", at=T0 + 2))])
        message = build.reload(message)
    assert message.delivered_at == SENT_AT
    assert message.read_at == dt.datetime.fromtimestamp(T0 + 2, dt.timezone.utc)


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
