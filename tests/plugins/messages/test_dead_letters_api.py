"""The dead-letter list, and requeueing a message that failed for good: GET /v1/dead-letters, POST …/requeue."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from messaging_support import RECIPIENT
from sqlalchemy import select

from kloyst.db import tenancy, utcnow
from kloyst.outbox import OutboxEvent
from kloyst_plugins.messages import dispatch
from kloyst_plugins.messages.models import DeadLetter, MessageLog, MessageStatus

DEAD_LETTERS = "/v1/dead-letters"


def requeue_url(letter) -> str:
    return f"{DEAD_LETTERS}/{letter.id}/requeue"


def fresh(db, row):
    db.expire_all()
    with tenancy.unscoped(db):
        return db.get(type(row), row.id)


def doorbells(db, vendor_id) -> list[OutboxEvent]:
    with tenancy.unscoped(db):
        return list(db.scalars(select(OutboxEvent).where(OutboxEvent.vendor_id == vendor_id,
                                                         OutboxEvent.topic == dispatch.QUEUED_TOPIC)))


def test_dead_letters_list_newest_first_with_their_message(testapp, messaging, vendor):
    letters = [messaging.failed(vendor.number, error_code=code)[1] for code in (131026, 131047, 131050)]
    messaging.failed(messaging.sending_vendor("Other Co").number)  # never listed
    first = testapp.get(DEAD_LETTERS, {"limit": 2}, headers=vendor.headers).json
    second = testapp.get(DEAD_LETTERS, {"limit": 2, "cursor": first["next_cursor"]}, headers=vendor.headers).json
    items = first["items"] + second["items"]
    assert [i["id"] for i in items] == [str(letter.id) for letter in letters[::-1]]
    assert second["next_cursor"] is None
    newest = items[0]
    assert newest["error_code"] == 131050 and newest["error_kind"] == "permanent"
    assert newest["reason"] == "Message undeliverable" and newest["requeued_at"] is None
    assert newest["message"]["id"] == newest["message_id"]
    assert newest["message"]["status"] == "FAILED" and newest["message"]["to"] == RECIPIENT


def test_the_list_can_leave_out_or_keep_only_requeued_letters(testapp, messaging, vendor):
    _, waiting = messaging.failed(vendor.number)
    _, handled = messaging.failed(vendor.number)
    testapp.post(requeue_url(handled), headers=vendor.headers)

    def listed(**query) -> list[str]:
        return [i["id"] for i in testapp.get(DEAD_LETTERS, query, headers=vendor.headers).json["items"]]

    assert listed(requeued="false") == [str(waiting.id)]
    assert listed(requeued="true") == [str(handled.id)]
    assert set(listed()) == {str(waiting.id), str(handled.id)}


def test_requeue_puts_the_message_back_in_the_queue_and_rings_the_doorbell(testapp, db, messaging, vendor):
    message, letter = messaging.failed(vendor.number, retry_count=8, wamid=None,
                                       lease_until=utcnow() + dt.timedelta(minutes=1))
    before = utcnow()
    answer = testapp.post(requeue_url(letter), headers=vendor.headers).json["dead_letter"]

    assert answer["id"] == str(letter.id) and answer["requeued_at"] is not None
    assert answer["message"]["status"] == "QUEUED"
    message, letter = fresh(db, message), fresh(db, letter)
    assert message.status == MessageStatus.QUEUED.value and message.status_rank == 0
    assert message.lease_until is None and message.next_attempt_at >= before
    assert message.retry_count == 0 and message.attempts == 1  # a fresh round of retries; the calls made stay
    assert message.error_code is None and message.error_message is None and message.failed_at is None
    assert letter.requeued_at >= before
    assert (letter.error_code, letter.reason) == (131026, "Message undeliverable")  # why it failed stays here
    assert [e.payload for e in doorbells(db, vendor.vendor_id)] == [{"phone_number_id": str(vendor.number.id)}]


def test_a_dead_letter_is_requeued_once(testapp, db, messaging, vendor):
    _, letter = messaging.failed(vendor.number)
    testapp.post(requeue_url(letter), headers=vendor.headers)
    error = testapp.post(requeue_url(letter), headers=vendor.headers, status=409).json["error"]
    assert error["code"] == "already_requeued"
    assert len(doorbells(db, vendor.vendor_id)) == 1


@pytest.mark.parametrize("status", [MessageStatus.QUEUED, MessageStatus.SENDING, MessageStatus.DELIVERED])
def test_a_message_that_is_no_longer_failed_is_not_requeued(testapp, db, messaging, vendor, status):
    message, letter = messaging.failed(vendor.number)
    with tenancy.unscoped(db):
        db.get(MessageLog, message.id).status = status.value
        db.commit()
    error = testapp.post(requeue_url(letter), headers=vendor.headers, status=409).json["error"]
    assert error["code"] == "message_not_failed" and status.value in error["message"]
    assert fresh(db, letter).requeued_at is None
    assert doorbells(db, vendor.vendor_id) == []


def test_a_contact_who_opted_out_since_is_not_sent_to_again(testapp, db, messaging, vendor):
    contact = messaging.contact(vendor.vendor_id, opted_out=True)
    message, letter = messaging.failed(vendor.number, contact_id=contact.id)
    error = testapp.post(requeue_url(letter), headers=vendor.headers, status=409).json["error"]
    assert error["code"] == "contact_opted_out"
    assert fresh(db, message).status == MessageStatus.FAILED.value and fresh(db, letter).requeued_at is None
    assert doorbells(db, vendor.vendor_id) == []


def test_a_number_out_of_service_cannot_take_requeued_messages(testapp, db, messaging, vendor):
    number = messaging.number(vendor.waba, status="FLAGGED")
    message, letter = messaging.failed(number)
    error = testapp.post(requeue_url(letter), headers=vendor.headers, status=409).json["error"]
    assert error["code"] == "phone_number_unavailable"
    assert fresh(db, message).status == MessageStatus.FAILED.value
    assert doorbells(db, vendor.vendor_id) == []


def test_another_vendors_dead_letter_is_404_and_left_alone(testapp, db, messaging, vendor):
    other = messaging.sending_vendor("Other Co")
    message, letter = messaging.failed(other.number)
    testapp.post(requeue_url(letter), headers=vendor.headers, status=404)
    testapp.get(f"{DEAD_LETTERS}/{letter.id}", headers=vendor.headers, status=404)
    assert fresh(db, message).status == MessageStatus.FAILED.value
    assert fresh(db, letter).requeued_at is None
    assert doorbells(db, other.vendor_id) == []


def test_one_dead_letter_reads_back_with_its_message(testapp, messaging, vendor):
    message, letter = messaging.failed(vendor.number, error_code=131047)
    got = testapp.get(f"{DEAD_LETTERS}/{letter.id}", headers=vendor.headers).json["dead_letter"]
    assert got["message_id"] == str(message.id) and got["error_code"] == 131047
    assert got["message"]["error_code"] == 131047


def test_a_message_that_failed_again_has_a_new_dead_letter_to_requeue(testapp, db, messaging, vendor):
    message, first = messaging.failed(vendor.number)
    testapp.post(requeue_url(first), headers=vendor.headers)
    with tenancy.unscoped(db):
        fresh(db, message).status = MessageStatus.FAILED.value
        db.commit()
    second = messaging.dead_letter(message)
    testapp.post(requeue_url(first), headers=vendor.headers, status=409)
    testapp.post(requeue_url(second), headers=vendor.headers)
    assert fresh(db, message).status == MessageStatus.QUEUED.value
    with tenancy.unscoped(db):
        assert db.scalars(select(DeadLetter.requeued_at.is_not(None)).where(DeadLetter.message_id == message.id)
                          ).all() == [True, True]


def test_a_campaigns_message_is_not_requeued_here_but_through_its_campaign(testapp, db, messaging, vendor):
    message, letter = messaging.failed(vendor.number)
    with tenancy.unscoped(db):
        row = db.get(MessageLog, message.id)
        row.price_micros, row.campaign_id = 6_800, uuid.uuid4()
        db.flush()
    error = testapp.post(requeue_url(letter), headers=vendor.headers, status=409).json["error"]
    assert error["code"] == "priced_message" and "retry-failed" in error["message"]
    assert fresh(db, message).status == MessageStatus.FAILED.value and fresh(db, letter).requeued_at is None
