"""Domain events through the real outbox: same transaction as the change, at least once, only to the enabled
plugins that subscribe, and nothing written for a type nobody subscribes to.

In Kloyst's own test run the ``probe`` plugin subscribes to every type and logs what it is delivered
(``probe_plugin.delivered_events``); the example plugin subscribes to ``ImportCompleted`` and the legacy
types only, so it stands for an enabled plugin that does not want a ``QuotationReady``.
"""

from __future__ import annotations

import types
import uuid

import probe_plugin
import pytest
from sqlalchemy import func, select, update

from kloyst import events
from kloyst.db import session_scope, utcnow
from kloyst.outbox import Outbox, OutboxEvent, OutboxStatus
from kloyst.plugins import build_plugin_manager, hookimpl
from kloyst.queue import TaskContext


def vendor_events(db, vendor_id) -> list[OutboxEvent]:
    db.expire_all()
    return list(db.scalars(select(OutboxEvent).where(OutboxEvent.vendor_id == vendor_id,
                                                     OutboxEvent.topic == events.TOPIC).order_by(OutboxEvent.id)))


def completed(n: int = 3) -> events.ImportCompleted:
    return events.ImportCompleted(import_id=uuid.uuid4(), created=n, updated=1, skipped=2, failed=0)


@pytest.fixture
def listening(accounts, enable_plugin):
    """A vendor with ``probe`` (subscribes to everything) and ``example`` (ImportCompleted + legacy types) enabled."""
    account = accounts.vendor("Listening Co")
    enable_plugin(account, "probe")
    enable_plugin(account, "example")
    return account


def record_committed(registry, vendor_id, *recorded: events.Event) -> None:
    with session_scope(registry["kloyst.session_factory"], vendor_id=vendor_id) as session:
        events.record_events(Outbox(session), vendor_id, recorded)


def test_a_committed_event_is_delivered_typed_to_an_enabled_subscriber_only(db, registry, listening, accounts,
                                                                            run_outbox):
    from kloyst_example.models import ExampleEventLog

    silent = accounts.vendor("Probe Off Co")  # probe installed and subscribed, but this vendor never enabled it
    event = events.QuotationReady(quotation_id=uuid.uuid4(), total_micros=1_500_000, currency="USD")
    record_committed(registry, listening.vendor_id, event)
    record_committed(registry, silent.vendor_id, event)
    (row,) = vendor_events(db, listening.vendor_id)
    run_outbox()

    assert probe_plugin.delivered_events(db, listening.vendor_id) == [
        {"event_id": row.id, "name": "QuotationReady", "payload": event.to_payload(), "data": "QuotationReady"}]
    assert probe_plugin.delivered_events(db, silent.vendor_id) == []
    assert vendor_events(db, silent.vendor_id) == []  # not even written: no plugin it enabled wants it
    # example is enabled but did not subscribe to QuotationReady
    assert db.scalars(select(ExampleEventLog).where(ExampleEventLog.vendor_id == listening.vendor_id)).all() == []


def test_an_event_recorded_in_a_rolled_back_transaction_is_never_delivered(db, registry, listening, run_outbox):
    with pytest.raises(RuntimeError), session_scope(registry["kloyst.session_factory"],
                                                    vendor_id=listening.vendor_id) as session:
        events.record_event(Outbox(session), listening.vendor_id, completed())
        session.flush()
        raise RuntimeError("the change failed")
    assert vendor_events(db, listening.vendor_id) == []
    run_outbox()
    assert probe_plugin.delivered_events(db, listening.vendor_id) == []


def test_a_redelivered_event_carries_the_same_id(db, registry, listening, run_outbox, monkeypatch):
    pm = registry["kloyst.plugin_manager"]
    (impl,) = [i for i in pm.hook.kloyst_vendor_event.get_hookimpls() if i.plugin_name == "probe"]
    original, seen = impl.function, []

    def flaky(event, ctx):
        seen.append(event.id)
        if len(seen) == 1:
            raise ConnectionError("the subscriber's own service was down")
        original(event=event, ctx=ctx)

    monkeypatch.setattr(impl, "function", flaky)
    record_committed(registry, listening.vendor_id, completed())
    (row,) = vendor_events(db, listening.vendor_id)
    run_outbox()
    assert vendor_events(db, listening.vendor_id)[0].status == OutboxStatus.PENDING  # failed once: retried later
    db.execute(update(OutboxEvent).where(OutboxEvent.id == row.id).values(available_at=utcnow()))
    db.commit()
    run_outbox()

    assert seen == [row.id, row.id]
    assert [e["event_id"] for e in probe_plugin.delivered_events(db, listening.vendor_id)] == [row.id]


def test_recording_with_no_subscriber_installed_writes_no_outbox_row(db, registry, listening):
    without_probe = build_plugin_manager()  # the installed entry points but vendor_webhooks: nobody wants statuses
    without_probe.unregister(name="vendor_webhooks")
    status = events.MessageStatusChanged(message_id=uuid.uuid4(), campaign_id=None, old_status="sent",
                                         new_status="delivered", wamid="wamid.X")
    assert not events.is_subscribed(Outbox(db, plugin_manager=without_probe), events.MessageStatusChanged)
    assert events.record_events(Outbox(db, plugin_manager=without_probe), listening.vendor_id, [status] * 50) == 0
    db.flush()
    assert vendor_events(db, listening.vendor_id) == []

    # The application's own outbox knows its plugins (probe subscribes): the same call writes.
    assert Outbox(db).plugin_manager is registry["kloyst.plugin_manager"]
    assert events.record_events(Outbox(db), listening.vendor_id, [status]) == 1
    assert [e.payload["name"] for e in vendor_events(db, listening.vendor_id)] == ["MessageStatusChanged"]


def test_record_events_writes_many_in_few_statements_and_the_database_round_trip_is_exact(db, registry, listening):
    recorded = [events.MessageStatusChanged(message_id=uuid.uuid4(), campaign_id=uuid.uuid4() if i % 2 else None,
                                            old_status="sent", new_status="read", wamid=f"wamid.{i}")
                for i in range(2500)] + [events.WalletLowBalance(wallet_id=uuid.uuid4(), balance_micros=2 ** 62,
                                                                threshold_micros=-1, currency="USD")]
    statements = []
    connection = db.connection()
    from sqlalchemy import event as sa_event

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("INSERT INTO outbox_event"):
            statements.append(statement)

    sa_event.listen(connection.engine, "before_cursor_execute", count)
    try:
        assert events.record_events(Outbox(db), listening.vendor_id, recorded) == 2501
    finally:
        sa_event.remove(connection.engine, "before_cursor_execute", count)
    assert len(statements) == 3  # 1000 rows per INSERT
    rows = vendor_events(db, listening.vendor_id)
    back = [events.CATALOGUE[r.payload["name"]].from_payload(r.payload["payload"]) for r in rows]
    assert back == recorded
    assert {r.status for r in rows} == {OutboxStatus.PENDING}


class _Registry(dict):
    """The application's registry with another plugin manager: delivery decided by a set of test plugins."""

    def __init__(self, registry, pm) -> None:
        super().__init__(registry)
        self.settings = registry.settings
        self["kloyst.plugin_manager"] = pm


def test_delivery_reaches_the_enabled_subscribers_and_nobody_else(db, registry, listening):
    heard: list[tuple[str, object]] = []

    def plugin(name, declared=None):
        module = types.ModuleType(f"kloyst_test_events_{name}")
        module.kloyst_vendor_event = hookimpl(lambda event, ctx: heard.append((name, event)))
        if declared is not None:
            module.kloyst_event_types = hookimpl(lambda: declared)
        return (name, module)

    pm = build_plugin_manager([plugin("on_sub", [events.ImportCompleted]), plugin("off_sub", [events.Event]),
                               plugin("on_other", [events.QuotationReady]), plugin("on_legacy")])
    event = completed()
    row = Outbox(db).add(events.TOPIC, {"name": event.name, "payload": event.to_payload()},
                         vendor_id=listening.vendor_id)
    db.flush()
    ctx = TaskContext(_Registry(registry, pm), db, None, listening.vendor_id,
                      plugins=frozenset({"core", "on_sub", "on_other", "on_legacy"}))
    events.deliver(ctx, row)
    events.deliver(ctx, row)  # at least once: a second delivery is the same event

    assert [name for name, _ in heard] == ["on_sub", "on_sub"]
    first, second = heard[0][1], heard[1][1]
    assert first == second and first.id == row.id and first.vendor_id == listening.vendor_id
    assert first.data == event and first.payload == event.to_payload() and first.name == "ImportCompleted"
    assert first.occurred_at == row.created_at


def test_a_legacy_listener_still_gets_the_old_events_with_their_old_payload(db, registry, listening, run_outbox):
    from kloyst_example.models import ExampleEventLog

    user = uuid.uuid4()
    with session_scope(registry["kloyst.session_factory"], vendor_id=listening.vendor_id) as session:
        events.record(Outbox(session), listening.vendor_id, "UserInvited", user_id=str(user), role="agent")
    run_outbox()
    logged = db.scalars(select(ExampleEventLog.name).where(ExampleEventLog.vendor_id == listening.vendor_id)).all()
    assert logged == ["UserInvited"]
    (delivered,) = probe_plugin.delivered_events(db, listening.vendor_id)
    assert delivered["payload"] == {"user_id": str(user), "role": "agent"} and delivered["data"] == "UserInvited"
    assert db.scalar(select(func.count()).select_from(OutboxEvent).where(
        OutboxEvent.vendor_id == listening.vendor_id, OutboxEvent.topic == events.TOPIC)) == 1
