"""A webhook answered 200 is durable (issue 13): committed before the answer, in groups, and nothing of it in Redis.

Real commits seen from other connections (``committed_db``), a real waitress server in this
process or a real ``kloyst run`` WEBHOOK process, and locks taken on the real tables to hold a
commit or an application where a test needs it held.
"""

from __future__ import annotations

import datetime as dt
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from sqlalchemy import event, func, select
from webhooks_support import (Builder, Line, WebhookProcess, meta_id, post_over_http, status, statuses, stored_bodies,
                              table_lock, wait_until)

from kloyst import runner, serving
from kloyst.db import tenancy, utcnow
from kloyst.webhooks import committer as committer_module
from kloyst.webhooks.committer import GroupCommitter
from kloyst.webhooks.drainer import LEASE_SECONDS
from kloyst_plugins.messages.models import MessageStatus, MessageStatusEvent
from kloyst_plugins.waba.models import PhoneNumber

pytestmark = pytest.mark.slow


@pytest.fixture
def live_port(wsgi_app, committed_db):
    """The test application behind a real waitress server (40 request threads) in this process."""
    stopper = runner.Stopper()
    server = runner.start_http(wsgi_app, "127.0.0.1", 0, stopper, threads=40)
    stop = serving.serve_in_background(server)
    yield server.effective_port
    stop()


@pytest.fixture
def engine(registry):
    return registry["kloyst.engine"]


@pytest.fixture
def inserts(engine):
    """Every ``INSERT INTO webhook_delivery`` sent to PostgreSQL while the test runs (one per commit)."""
    sent: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "INSERT INTO webhook_delivery" in statement:  # after the SET LOCALs bounding it
            sent.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    yield sent
    event.remove(engine, "before_cursor_execute", record)


def bodies(count: int) -> list[bytes]:
    """``count`` distinct signed-to-be deliveries about a number nobody holds (stored, then dropped when applied)."""
    stranger = Line(uuid.uuid4(), PhoneNumber(meta_phone_number_id=meta_id()), meta_id())
    return [statuses(stranger, status(f"wamid.durable.{uuid.uuid4().hex}", "sent")) for _ in range(count)]


def waiting_in(committer: GroupCommitter) -> int:
    # White-box on purpose: how many requests wait for the next group is the grouping under test.
    with committer._lock:
        return len(committer._waiting)


def release(lock) -> None:
    lock.rollback()
    lock.connection.close()


def test_the_200_is_sent_only_after_the_commit_so_another_connection_sees_the_row_when_it_arrives(
        engine, live_port):
    [body] = bodies(1)
    lock = table_lock(engine, "webhook_delivery", "SHARE")  # the insert waits; readers do not
    try:
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(post_over_http, live_port, body)
            time.sleep(1.0)
            assert not answer.done(), "answered before its delivery could be committed"
            assert body not in stored_bodies(engine)
            release(lock)
            lock = None
            assert answer.result(timeout=10) == 200
            assert body in stored_bodies(engine)
    finally:
        if lock is not None:
            release(lock)


def test_requests_arriving_during_a_commit_share_the_next_one(registry, engine, live_port, inserts):
    first, *others = bodies(30)
    committer = registry["kloyst.webhook_receiver"].committer
    lock = table_lock(engine, "webhook_delivery", "SHARE")
    try:
        with ThreadPoolExecutor(len(others) + 1) as pool:
            answers = [pool.submit(post_over_http, live_port, first)]
            wait_until(lambda: len(inserts) == 1, "the first delivery's commit to start (and wait for the lock)")
            answers += [pool.submit(post_over_http, live_port, body) for body in others]
            wait_until(lambda: waiting_in(committer) == len(others), "the other requests to wait for the next commit")
            release(lock)
            lock = None
            assert [answer.result(timeout=10) for answer in answers] == [200] * 30
    finally:
        if lock is not None:
            release(lock)
    assert len(inserts) == 2  # the first alone, then the 29 others in one statement
    assert stored_bodies(engine) == {first, *others}


@pytest.fixture
def poison_trigger(engine):
    """A trigger that fails the insert of any body containing "poison": a statement that breaks mid-group."""
    with engine.begin() as connection:
        connection.execute(sa.text("""
            CREATE FUNCTION kloyst_test_refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF position('poison' in convert_from(NEW.body, 'UTF8')) > 0 THEN
                RAISE EXCEPTION 'a poisoned delivery';
              END IF;
              RETURN NEW;
            END $$"""))
        connection.execute(sa.text("CREATE TRIGGER kloyst_test_poison BEFORE INSERT ON webhook_delivery "
                                   "FOR EACH ROW EXECUTE FUNCTION kloyst_test_refuse_poison()"))
    yield
    with engine.begin() as connection:
        connection.execute(sa.text("DROP TRIGGER kloyst_test_poison ON webhook_delivery"))
        connection.execute(sa.text("DROP FUNCTION kloyst_test_refuse_poison()"))


def test_a_failed_commit_answers_503_to_its_whole_group_and_stores_none_of_it(registry, engine, live_port, inserts,
                                                                              poison_trigger):
    plug, *good = bodies(6)
    poisoned = b'{"object":"whatsapp_business_account","entry":[],"poison":true}'
    committer = registry["kloyst.webhook_receiver"].committer
    lock = table_lock(engine, "webhook_delivery", "SHARE")
    try:
        with ThreadPoolExecutor(8) as pool:
            plugged = pool.submit(post_over_http, live_port, plug)
            wait_until(lambda: len(inserts) == 1, "the plug's commit to wait for the lock")
            group = [pool.submit(post_over_http, live_port, body) for body in (*good[:3], poisoned, *good[3:])]
            wait_until(lambda: waiting_in(committer) == 6, "the group to gather behind the plug")
            release(lock)
            lock = None
            assert plugged.result(timeout=10) == 200
            assert [answer.result(timeout=10) for answer in group] == [503] * 6
    finally:
        if lock is not None:
            release(lock)
    assert stored_bodies(engine) == {plug}  # none of the group, although the poison came fourth of six
    assert [post_over_http(live_port, body) for body in good] == [200] * 5  # Meta's retries
    assert stored_bodies(engine) == {plug, *good}


def test_a_commit_not_done_within_the_bounded_wait_is_503_and_stores_nothing(registry, engine, live_port,
                                                                             monkeypatch):
    monkeypatch.setattr(committer_module, "IDLE_SECONDS", 0.5)  # the test's own committer thread ends with it
    monkeypatch.setattr(registry["kloyst.webhook_receiver"], "committer", GroupCommitter(registry, 0.5))
    [body] = bodies(1)
    lock = table_lock(engine, "webhook_delivery", "SHARE")
    try:
        started = time.monotonic()
        assert post_over_http(live_port, body) == 503
        assert time.monotonic() - started < 2.5
        time.sleep(0.5)
    finally:
        release(lock)
    time.sleep(1.0)  # had the statement outlived its wait, it would commit now
    assert body not in stored_bodies(engine)


def _status_events(db, wamids: set[str]) -> int:
    db.rollback()
    with tenancy.unscoped(db):
        return db.scalar(select(func.count()).select_from(MessageStatusEvent)
                         .where(MessageStatusEvent.wamid.in_(wamids)))


def test_deliveries_answered_200_survive_a_flushed_redis_and_are_all_applied(kloyst_settings, registry, committed_db,
                                                                              engine, redis_client, tmp_path):
    build = Builder(committed_db, registry)
    line = build.line()
    messages = [build.message(line) for _ in range(10)]
    process = WebhookProcess(kloyst_settings, tmp_path / "webhook")
    try:
        process.wait_until_serving()
        # The drainer is held up (as by a long campaign's backlog): what Meta had its 200 for waits somewhere.
        lock = table_lock(engine, "message_log", "EXCLUSIVE")
        try:
            answers = [process.post(statuses(line, status(message.wamid, name)))
                       for name in ("delivered", "read") for message in messages]
            redis_client.flushdb()
        finally:
            release(lock)
        assert answers == [200] * 20
        redis_client.flushdb()
        wamids = {message.wamid for message in messages}
        wait_until(lambda: _status_events(committed_db, wamids) == 20, "every status to be applied")
        assert {build.reload(message).status for message in messages} == {MessageStatus.READ.value}
    finally:
        process.stop()


def test_what_a_killed_webhook_process_held_is_applied_by_another_within_the_lease(kloyst_settings, registry,
                                                                                    committed_db, engine, tmp_path):
    build = Builder(committed_db, registry)
    line = build.line()
    message = build.message(line)
    doomed, survivor = (WebhookProcess(kloyst_settings, tmp_path / name) for name in ("doomed", "survivor"))
    try:
        doomed.wait_until_serving()
        survivor.wait_until_serving()
        lock = table_lock(engine, "message_log", "EXCLUSIVE")  # the doomed drainer's application waits here
        try:
            posted_at = time.monotonic()
            assert doomed.post(statuses(line, status(message.wamid, "delivered"))) == 200
            with engine.connect() as connection:
                [leased_until] = connection.scalars(sa.text("SELECT next_attempt_at FROM webhook_delivery")).all()
            # Stored already claimed by the process that received it, and handed to its drainer.
            assert leased_until > utcnow() + dt.timedelta(seconds=LEASE_SECONDS / 2)
            time.sleep(0.5)
            doomed.process.send_signal(signal.SIGKILL)
            doomed.process.wait(timeout=10)
        finally:
            release(lock)
        wait_until(lambda: build.reload(message).status == MessageStatus.DELIVERED.value,
                   "the survivor's drainer to apply the delivery", timeout=LEASE_SECONDS + 15)
        assert time.monotonic() - posted_at < LEASE_SECONDS + 5
    finally:
        doomed.stop()
        survivor.stop()


def test_sigterm_commits_and_answers_the_delivery_in_hand_then_exits_0(kloyst_settings, committed_db, engine,
                                                                      tmp_path):
    [body] = bodies(1)
    process = WebhookProcess(kloyst_settings, tmp_path / "webhook")
    try:
        process.wait_until_serving()
        lock = table_lock(engine, "webhook_delivery", "SHARE")
        try:
            with ThreadPoolExecutor(1) as pool:
                answer = pool.submit(process.post, body)

                def inserting() -> bool:
                    with engine.connect() as connection:
                        return bool(connection.scalar(sa.text(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                            "AND query LIKE '%INSERT INTO webhook_delivery%'")))

                wait_until(inserting, "the delivery's commit to wait for the lock")
                process.process.send_signal(signal.SIGTERM)
                time.sleep(0.5)
                release(lock)
                lock = None
                assert answer.result(timeout=10) == 200
        finally:
            if lock is not None:
                release(lock)
        assert process.process.wait(timeout=20) == 0, process.output()
        assert body in stored_bodies(engine)
    finally:
        process.stop()
