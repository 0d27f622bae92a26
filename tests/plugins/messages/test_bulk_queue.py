"""The bulk queue (``messages.api.queue_many``) and the state machine's single definition, on both databases.

``queue_many`` writes a batch with COPY on PostgreSQL and one executemany INSERT on SQLite; both
must leave the same rows, ring (or not) the same doorbell, and refuse a batch queued a second
time (the unique ``(vendor_id, idempotency_key)``), leaving the first copy alone.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid

import psycopg2
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from kloyst.accounts.models import Vendor
from kloyst.crypto import FieldCipher
from kloyst.db import Base, make_engine, make_session_factory, session_scope, tenancy, utcnow
from kloyst.outbox import OutboxEvent
from kloyst_plugins.messages import api, dispatch, statements
from kloyst_plugins.messages.content import open_content, seal_content
from kloyst_plugins.messages.models import MessageLog, MessageStatus, SQL_WORDS, STATUS_RANK, TRANSITIONS
from kloyst_plugins.waba.models import PhoneNumber, Waba

SQLITE_TABLES = ("vendor", "contact", "waba", "shared_waba", "phone_number", "message_log", "dead_letter",
                 "message_status_event", "duplicate_send", "outbox_event")


@pytest.fixture(params=["postgresql", "sqlite"])
def target(request, tmp_path):
    """``(session, cipher, vendor_id, phone_number_id)`` on either database; the session is scoped to the vendor."""
    if request.param == "postgresql":
        db, registry = request.getfixturevalue("db"), request.getfixturevalue("registry")
        messaging = request.getfixturevalue("messaging")
        account = messaging.vendor("Bulk Co", funds=0)
        number = messaging.number(messaging.waba(account.vendor_id))
        tenancy.set_scope(db, account.vendor_id)
        try:
            yield db, registry["kloyst.cipher"], account.vendor_id, number.id
        finally:
            db.rollback()
            tenancy.set_scope(db, tenancy.ALL_VENDORS)
        return
    engine = make_engine(f"sqlite:///{tmp_path / 'bulk.sqlite'}")
    Base.metadata.create_all(engine, tables=[Base.metadata.tables[name] for name in SQLITE_TABLES])
    factory = make_session_factory(engine)
    with session_scope(factory, vendor_id=tenancy.ALL_VENDORS) as db:
        vendor = Vendor(name="Bulk")
        db.add(vendor)
        db.flush()
        waba = Waba(vendor_id=vendor.id, meta_waba_id="600000000000001", name="W", access_token_enc=b"x",
                    enc_kid="k")
        db.add(waba)
        db.flush()
        number = PhoneNumber(vendor_id=vendor.id, waba_id=waba.id, meta_phone_number_id="600000000000002",
                             display_phone_number="+1 555", throughput_mps=80)
        db.add(number)
        db.flush()
        ids = vendor.id, number.id
    session = factory()
    tenancy.set_scope(session, ids[0])
    try:
        yield session, FieldCipher({"k": os.urandom(32)}), *ids
    finally:
        session.close()
        engine.dispose()


def _batch(vendor_id, number_id, *, paused=False, hold_id=None) -> api.MessageBatch:
    now = utcnow()
    return api.MessageBatch(vendor_id=vendor_id, phone_number_id=number_id, campaign_id=uuid.uuid4(),
                            template_id=uuid.uuid4(), template_name="promo", template_language="en_US",
                            category="MARKETING", enc_kid="k", hold_id=hold_id,
                            next_attempt_at=now + dt.timedelta(minutes=5), now=now, paused=paused)


def _recipients(cipher, vendor_id, batch: api.MessageBatch, count: int) -> list[tuple]:
    rows = []
    for index in range(count):
        message_id, contact_id = api.new_message_id(), str(uuid.uuid4())
        sealed, _ = seal_content(cipher, vendor_id, {"to": f"+1202555{index:04d}", "biz_opaque_callback_data":
                                                     message_id})
        rows.append((message_id, contact_id, os.urandom(32).hex(), "US" if index % 2 else None, sealed,
                     f"campaign:{batch.campaign_id}:{contact_id}", 100 + index if index else None))
    return rows


def _doorbells(db, vendor_id) -> int:
    with tenancy.unscoped(db):
        return db.scalar(select(func.count()).select_from(OutboxEvent).where(
            OutboxEvent.vendor_id == vendor_id, OutboxEvent.topic == dispatch.QUEUED_TOPIC))


def test_a_batch_is_queued_with_every_column_and_one_doorbell(target):
    db, cipher, vendor_id, number_id = target
    hold_id = uuid.uuid4()
    batch = _batch(vendor_id, number_id, hold_id=hold_id)
    recipients = _recipients(cipher, vendor_id, batch, 5)
    postgres = db.get_bind().dialect.name == "postgresql"

    assert api.queue_many(db, batch, recipients) == 5
    db.flush()

    found = {str(m.id): m for m in db.scalars(select(MessageLog).where(MessageLog.campaign_id == batch.campaign_id))}
    assert len(found) == 5
    for message_id, contact_id, recipient_hash, country, _sealed, key, price in recipients:
        message = found[message_id]
        assert (message.status, message.status_rank) == ("QUEUED", STATUS_RANK[MessageStatus.QUEUED])
        assert message.contact_id == uuid.UUID(contact_id) and message.country == country
        assert bytes(message.recipient_hash) == bytes.fromhex(recipient_hash)
        assert message.idempotency_key == key
        # COPY writes a missing price as 0 (as the fan-out always has); the INSERT leaves it NULL.
        assert message.price_micros == (int(price or 0) if postgres else price)
        assert message.hold_id == hold_id and message.phone_number_id == number_id
        assert (message.template_name, message.template_language, message.category) == ("promo", "en_US",
                                                                                         "MARKETING")
        assert (message.attempts, message.retry_count, message.duplicate_sends, message.maybe_sent_before) == (
            0, 0, 0, False)
        assert message.next_attempt_at == batch.next_attempt_at and message.wamid is None
        assert open_content(cipher, vendor_id, bytes(message.content_enc))["biz_opaque_callback_data"] == message_id
    assert _doorbells(db, vendor_id) == 1
    assert api.count_by_status(db, vendor_id, batch.campaign_id)[MessageStatus.QUEUED] == 5
    assert api.any_unfinished(db, vendor_id, batch.campaign_id)
    assert not api.any_accepted(db, vendor_id, batch.campaign_id)


def test_a_paused_batch_is_written_paused_and_rings_nothing(target):
    db, cipher, vendor_id, number_id = target
    batch = _batch(vendor_id, number_id, paused=True)

    api.queue_many(db, batch, _recipients(cipher, vendor_id, batch, 3))
    api.queue_many(db, batch, [])  # nothing to write: no statement, no doorbell

    assert api.count_by_status(db, vendor_id, batch.campaign_id)[MessageStatus.PAUSED] == 3
    assert _doorbells(db, vendor_id) == 0


def test_a_batch_queued_again_is_refused_whole_and_the_first_copy_stays(target):
    """A re-run chunk never writes twice: its keys are taken (the campaign's chunk row makes it a no-op before)."""
    db, cipher, vendor_id, number_id = target
    batch = _batch(vendor_id, number_id)
    recipients = _recipients(cipher, vendor_id, batch, 4)
    api.queue_many(db, batch, recipients)
    db.flush()
    again = [(api.new_message_id(), *rest) for _, *rest in recipients]  # same contacts and keys, new ids

    savepoint = db.begin_nested()
    with pytest.raises((IntegrityError, psycopg2.IntegrityError)):  # COPY raises the driver's own
        api.queue_many(db, batch, again)
        db.flush()
    savepoint.rollback()

    assert api.count_by_status(db, vendor_id, batch.campaign_id)[MessageStatus.QUEUED] == 4
    assert {str(i) for i in db.scalars(select(MessageLog.id).where(MessageLog.campaign_id == batch.campaign_id))} \
        == {r[0] for r in recipients}


def test_a_campaigns_messages_are_paused_resumed_and_cancelled_with_their_prices_per_hold(target):
    db, cipher, vendor_id, number_id = target
    hold_id = uuid.uuid4()
    batch = _batch(vendor_id, number_id, hold_id=hold_id)
    api.queue_many(db, batch, _recipients(cipher, vendor_id, batch, 3))  # prices None, 101, 102
    now = utcnow()

    assert api.pause_waiting(db, vendor_id, batch.campaign_id, now) == 3
    assert api.resume_paused(db, vendor_id, batch.campaign_id, now, due=now, phone_number_id=number_id) == 3
    [total] = api.cancel_waiting(db, vendor_id, batch.campaign_id, now)

    assert total == api.HoldTotal(hold_id, 203, 3)
    counts = api.count_by_status(db, vendor_id, batch.campaign_id)
    assert counts[MessageStatus.CANCELLED] == 3 and sum(counts.values()) == 3
    assert not api.any_unfinished(db, vendor_id, batch.campaign_id)


def test_the_state_machine_is_the_one_the_sql_uses():
    assert SQL_WORDS["SENT"] == "'SENT'" and SQL_WORDS["FAILED_RANK"] == str(STATUS_RANK[MessageStatus.FAILED])
    assert f"status_rank = {STATUS_RANK[MessageStatus.SENDING]}" in str(statements.CLAIM_PG)
    assert "{" not in str(statements.CLAIM_PG) and "{" not in str(statements.ABANDONED_PG)
    for old, targets in TRANSITIONS.items():
        for new in targets:
            # Forward by rank, except the listed moves back to the queue.
            assert STATUS_RANK[new] > STATUS_RANK[old] or new is MessageStatus.QUEUED or (
                old is MessageStatus.QUEUED and new is MessageStatus.PAUSED), (old, new)
    assert api.can_move("SENT", "DELIVERED") and not api.can_move("READ", "DELIVERED")
    assert {MessageStatus.QUEUED, MessageStatus.SENDING, MessageStatus.PAUSED} == api.UNFINISHED
