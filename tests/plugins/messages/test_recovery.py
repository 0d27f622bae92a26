"""Messages of a sender that died come back within seconds, and a message Meta already reported is not sent again."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid

from sqlalchemy import create_engine, insert, select, update

from kloyst.db import tenancy, utcnow
from kloyst.heartbeat import Heartbeat, HeartbeatSettings, ProcessHeartbeat
from kloyst.webhooks import deliveries
from kloyst_plugins.messages.models import MessageLog
from kloyst_plugins.messages.recovery import take_back_abandoned
from kloyst_plugins.messages.sender import Sender, SenderSettings
from sending_support import queue_messages, sending_setup
from test_sender import messages, wait_for

SETTINGS = HeartbeatSettings(interval_seconds=1.0, dead_after_seconds=6.0)


def _process(db, *, beat_seconds_ago: float) -> uuid.UUID:
    """A process row as ``kloyst run`` keeps it, last beaten that long ago."""
    process_id, beat = uuid.uuid4(), utcnow() - dt.timedelta(seconds=beat_seconds_ago)
    db.execute(insert(ProcessHeartbeat).values(id=process_id, mode="WORKER", hostname="elsewhere", pid=4242,
                                               started_at=beat, beat_at=beat))
    db.commit()
    return process_id


def _claimed(db, ids, owner: uuid.UUID | None, *, lease_seconds: float = 60) -> None:
    """The state a sender leaves its messages in while its calls are in flight."""
    with tenancy.unscoped(db):
        db.execute(update(MessageLog).where(MessageLog.id.in_(ids)).values(
            status="SENDING", status_rank=1, attempts=1, claimed_by=owner, updated_at=utcnow(),
            lease_until=utcnow() + dt.timedelta(seconds=lease_seconds)))
    db.commit()


def _take_back(registry):
    return take_back_abandoned(registry["kloyst.engine"], registry["kloyst.plugin_manager"], SETTINGS)


def _store_status(db, meta_phone_number_id: str, message_id: uuid.UUID, wamid: str, name: str = "sent") -> None:
    """A status webhook Meta was answered 200 for, not applied yet (the WEBHOOK process is behind)."""
    body = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
        "field": "messages", "value": {"messaging_product": "whatsapp",
                                       "metadata": {"phone_number_id": meta_phone_number_id},
                                       "statuses": [{"id": wamid, "status": name, "timestamp": str(int(time.time())),
                                                     "biz_opaque_callback_data": str(message_id)}]}}]}]}).encode()
    now = utcnow()
    deliveries.store(db, [(body, now)], next_attempt_at=now + dt.timedelta(seconds=30))
    db.commit()


def test_messages_of_a_process_that_stopped_beating_come_back_though_their_lease_is_live(
        registry, committed_db, meta_sandbox):
    setup = sending_setup(committed_db, registry, meta_sandbox)
    ids = queue_messages(committed_db, registry, setup, 5)
    _claimed(committed_db, ids, _process(committed_db, beat_seconds_ago=SETTINGS.dead_after_seconds + 1))
    recovered = _take_back(registry)
    assert (recovered.requeued, recovered.adopted) == (5, 0)
    found = messages(committed_db, ids)
    assert {(m.status, m.maybe_sent_before, m.claimed_by, m.lease_until) for m in found.values()} == {
        ("QUEUED", True, None, None)}


def test_messages_taken_back_go_ahead_of_those_queued_at_the_same_time(registry, committed_db, meta_sandbox):
    setup = sending_setup(committed_db, registry, meta_sandbox)
    ids = queue_messages(committed_db, registry, setup, 10)
    with tenancy.unscoped(committed_db):  # one time for all, as a fan-out chunk writes them
        committed_db.execute(update(MessageLog).where(MessageLog.id.in_(ids)).values(next_attempt_at=utcnow()))
    committed_db.commit()
    _claimed(committed_db, ids[7:], _process(committed_db, beat_seconds_ago=60))
    _take_back(registry)
    found = messages(committed_db, ids)
    assert max(found[i].next_attempt_at for i in ids[7:]) < min(found[i].next_attempt_at for i in ids[:7])


def test_messages_of_a_live_process_are_left_alone(registry, committed_db, meta_sandbox):
    setup = sending_setup(committed_db, registry, meta_sandbox)
    ids = queue_messages(committed_db, registry, setup, 3)
    _claimed(committed_db, ids, _process(committed_db, beat_seconds_ago=1))
    assert _take_back(registry).requeued == 0
    assert {m.status for m in messages(committed_db, ids).values()} == {"SENDING"}


def test_a_message_whose_owner_is_unknown_comes_back_once_its_lease_runs_out(registry, committed_db, meta_sandbox):
    setup = sending_setup(committed_db, registry, meta_sandbox)
    ids = queue_messages(committed_db, registry, setup, 2)
    _claimed(committed_db, ids[:1], None, lease_seconds=-1)  # a sender without a heartbeat, lease over
    _claimed(committed_db, ids[1:], None, lease_seconds=60)  # ... and one whose lease still runs
    assert _take_back(registry).requeued == 1
    assert [messages(committed_db, ids)[i].status for i in ids] == ["QUEUED", "SENDING"]


def test_a_message_meta_reported_in_a_webhook_not_applied_yet_adopts_its_wamid_instead_of_going_again(
        registry, committed_db, meta_sandbox):
    setup = sending_setup(committed_db, registry, meta_sandbox)
    reported, silent, stranger = queue_messages(committed_db, registry, setup, 3)
    _claimed(committed_db, [reported, silent, stranger], _process(committed_db, beat_seconds_ago=60))
    _store_status(committed_db, setup.meta_phone_number_id, reported, "wamid.reported", "delivered")
    # A status naming the message that came for another number is not this message's: never across numbers.
    _store_status(committed_db, "199999999999999", stranger, "wamid.elsewhere")
    recovered = _take_back(registry)
    assert (recovered.adopted, recovered.requeued) == (1, 2)
    found = messages(committed_db, [reported, silent, stranger])
    assert (found[reported].status, found[reported].wamid, found[reported].maybe_sent_before) == (
        "SENT", "wamid.reported", False)
    assert (found[silent].status, found[silent].maybe_sent_before) == ("QUEUED", True)
    assert (found[stranger].status, found[stranger].wamid) == ("QUEUED", None)


def test_a_message_queued_again_whose_status_arrived_meanwhile_is_adopted_when_claimed_not_sent_again(
        registry, committed_db, meta_sandbox):
    setup = sending_setup(committed_db, registry, meta_sandbox)
    waiting, other = queue_messages(committed_db, registry, setup, 2)
    with tenancy.unscoped(committed_db):  # taken back from a dead sender; its status came while it waited
        committed_db.execute(update(MessageLog).where(MessageLog.id.in_([waiting, other]))
                             .values(maybe_sent_before=True, attempts=1))
    committed_db.commit()
    _store_status(committed_db, setup.meta_phone_number_id, waiting, "wamid.came-meanwhile", "delivered")
    sender = Sender(registry, SenderSettings(concurrency=4)).start()
    try:
        found = wait_for(committed_db, [waiting, other], lambda m: m.status == "SENT", timeout=10)
    finally:
        sender.stop(timeout=10)
    assert (found[waiting].wamid, found[other].wamid.startswith("wamid.")) == ("wamid.came-meanwhile", True)
    assert [send["opaque"] for send in meta_sandbox.state.sends] == [str(other)]  # one call: the other message's


def test_a_sender_claims_in_its_processs_name_and_claims_nothing_while_it_cannot_beat(
        registry, committed_db, meta_sandbox):
    setup = sending_setup(committed_db, registry, meta_sandbox)
    meta_sandbox.state.behaviour.update({"latency_ms": 300})
    heartbeat = Heartbeat(registry["kloyst.engine"], "WORKER",
                          HeartbeatSettings(interval_seconds=0.1, dead_after_seconds=0.4)).start()
    engine = heartbeat.engine
    heartbeat.engine = create_engine("postgresql+psycopg2://postgres@127.0.0.1:1/unreachable",
                                     connect_args={"connect_timeout": 1})
    sender = Sender(registry, SenderSettings(concurrency=4), heartbeat=heartbeat).start()
    try:
        deadline = time.monotonic() + 5
        while heartbeat.healthy and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not heartbeat.healthy
        ids = queue_messages(committed_db, registry, setup, 3)
        time.sleep(1.0)
        assert {m.status for m in messages(committed_db, ids).values()} == {"QUEUED"}  # fenced: nothing claimed
        heartbeat.engine = engine  # the database is back: beats succeed, claims resume
        in_flight = wait_for(committed_db, ids, lambda m: m.status != "QUEUED", timeout=10)
        assert {m.claimed_by for m in in_flight.values() if m.status == "SENDING"} <= {heartbeat.id}
        done = wait_for(committed_db, ids, lambda m: m.status == "SENT", timeout=10)
        assert {(m.status, m.claimed_by) for m in done.values()} == {("SENT", None)}
    finally:
        sender.stop(timeout=10)
        heartbeat.stop()


def test_a_sender_stopped_mid_campaign_gives_back_what_it_holds_and_leaves_nothing_to_take_back(
        registry, committed_db, meta_sandbox):
    setup = sending_setup(committed_db, registry, meta_sandbox)
    meta_sandbox.state.behaviour.update({"latency_ms": 200})
    heartbeat = Heartbeat(registry["kloyst.engine"], "WORKER").start()
    ids = queue_messages(committed_db, registry, setup, 40)
    sender = Sender(registry, SenderSettings(concurrency=8), heartbeat=heartbeat).start()
    deadline = time.monotonic() + 10
    while sum(m.status != "QUEUED" for m in messages(committed_db, ids).values()) < 8:
        assert time.monotonic() < deadline, "the sender never started"
        time.sleep(0.02)
    sender.stop(timeout=10)
    heartbeat.stop()
    found = messages(committed_db, ids)
    assert {m.status for m in found.values()} <= {"SENT", "QUEUED"}
    assert not any(m.maybe_sent_before for m in found.values())
    with tenancy.unscoped(committed_db):
        assert committed_db.scalar(select(ProcessHeartbeat.id).where(ProcessHeartbeat.id == heartbeat.id)) is None


def test_two_senders_taking_back_the_same_messages_at_once_agree_without_an_error(registry, committed_db,
                                                                                  meta_sandbox):
    setup = sending_setup(committed_db, registry, meta_sandbox)
    ids = queue_messages(committed_db, registry, setup, 30)
    _claimed(committed_db, ids, _process(committed_db, beat_seconds_ago=60))
    for message_id in ids[:10]:  # Meta reported a third of them; the drainer has not applied those yet
        _store_status(committed_db, setup.meta_phone_number_id, message_id, f"wamid.{message_id}")
    barrier, results, failures = threading.Barrier(2), [], []

    def take_back() -> None:
        barrier.wait()
        try:
            results.append(_take_back(registry))
        except Exception as exc:  # pragma: no cover - reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=take_back) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert failures == []
    assert (sum(r.adopted for r in results), sum(r.requeued for r in results)) == (10, 20)
    found = messages(committed_db, ids)
    assert {found[i].wamid for i in ids[:10]} == {f"wamid.{i}" for i in ids[:10]}
    assert {(m.status, m.maybe_sent_before) for i, m in found.items() if i not in ids[:10]} == {("QUEUED", True)}
