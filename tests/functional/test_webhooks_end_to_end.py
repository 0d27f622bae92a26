"""The whole path with real parts: the sandbox signs and posts to a live waitress server, the drainer thread applies;
and the embedded default (SQLite, no Redis) through the same receiver, committer and drainer."""

from __future__ import annotations

import time

import pytest
from pyramid.registry import Registry
from sqlalchemy import select
from webhooks_support import RECIPIENT, Builder, Line, inbound, sign, status, statuses

from kloyst import runner, serving
from kloyst.db import make_engine, make_session_factory, migrate, tenancy
from kloyst.sandbox.state import PhoneNumber as SandboxNumber
from kloyst.webhooks import WEBHOOK_PATH, drainer
from kloyst.webhooks.models import WebhookDelivery
from kloyst.webhooks.receiver import Receiver
from kloyst_plugins.contacts.models import Contact
from kloyst_plugins.messages.models import DeadLetter, InboundMessage, MessageStatus

pytestmark = pytest.mark.slow


def _wait_for(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def test_the_sandboxs_signed_webhooks_reach_a_live_server_and_the_drainer_thread_applies_them(
        registry, wsgi_app, committed_db, meta_sandbox):
    build = Builder(committed_db, registry)
    line = build.line()
    message = build.message(line)
    stopper = runner.Stopper()
    server = runner.start_http(wsgi_app, "127.0.0.1", 0, stopper, threads=4)
    stop_server = serving.serve_in_background(server)
    thread = drainer.start(registry, stopper.event)
    try:
        meta_sandbox.state.add_number(SandboxNumber(id=line.meta_phone_number_id, waba_id=line.meta_waba_id,
                                                    display_phone_number="+1 555 010 0000"))
        meta_sandbox.state.behaviour.update({"webhook_url": f"http://127.0.0.1:{server.effective_port}{WEBHOOK_PATH}"})
        number = meta_sandbox.state.numbers[line.meta_phone_number_id]
        meta_sandbox.webhooks.message_accepted(number, RECIPIENT.lstrip("+"), message.wamid, None, str(message.id))
        meta_sandbox.webhooks.inbound_text(number, "12025550177", "STOP", "Bob", "wamid.in.e2e")

        def applied() -> bool:
            committed_db.expire_all()
            with tenancy.unscoped(committed_db):
                stop = committed_db.scalars(select(InboundMessage)
                                            .where(InboundMessage.wamid == "wamid.in.e2e")).first()
            return build.reload(message).status == MessageStatus.READ.value and stop is not None and stop.opt_out

        _wait_for(applied, "the sandbox's statuses and inbound STOP to be applied")
        assert meta_sandbox.webhooks.stats()["failed"] == 0
    finally:
        stopper.event.set()
        stop_server()
        thread.join(timeout=10)
    assert not thread.is_alive()


@pytest.fixture
def embedded(tmp_path, registry):
    """The embedded default's webhook path: SQLite built by the migrations, no Redis, its own receiver."""
    engine = make_engine(f"sqlite:///{tmp_path / 'embedded.sqlite'}")
    migrate.upgrade(registry["kloyst.plugin_manager"], engine)
    embedded = Registry("embedded")
    embedded.settings = dict(registry.settings)
    for key in ("kloyst.plugin_manager", "kloyst.cipher", "kloyst.mobile_hasher", "kloyst.access_tokens",
                "kloyst.queue"):
        embedded[key] = registry[key]
    embedded["kloyst.session_factory"] = make_session_factory(engine)
    embedded["kloyst.webhook_receiver"] = Receiver(embedded, WEBHOOK_PATH)
    session = embedded["kloyst.session_factory"]()
    tenancy.set_scope(session, tenancy.ALL_VENDORS)
    yield embedded, session
    session.close()
    engine.dispose()


def test_the_embedded_default_applies_statuses_failures_adoptions_and_opt_outs_on_sqlite(embedded):
    registry, db = embedded
    build = Builder(db, registry)
    line: Line = build.line()
    read_first, early, failing = build.message(line), build.message(line), build.message(line)
    requeued = build.message(line, status=MessageStatus.QUEUED, wamid=None)
    error = {"code": 131026, "title": "Message undeliverable"}
    bodies = [statuses(line, status(read_first.wamid, "read"), status(early.wamid, "delivered"),
                       status(failing.wamid, "failed", errors=[error]),
                       status("wamid.adopted", "sent", opaque=str(requeued.id))),
              statuses(line, status(read_first.wamid, "delivered"), status(early.wamid, "sent"),
                       status(failing.wamid, "failed", errors=[error])),
              inbound(line, "stop", sender="+12025550166")]
    receiver = registry["kloyst.webhook_receiver"]
    for body in bodies:  # each answered 200 once in the SQLite file, applied one drain each: the order is Meta's
        assert receiver.accept(body, sign(body)) == ("200 OK", b'{"ok":true}')
        db.expire_all()
        assert db.scalars(select(WebhookDelivery.body).where(WebhookDelivery.processed_at.is_(None))).all() == [body]
        db.rollback()  # on SQLite an open transaction holds the one write lock, which the drainer needs
        assert drainer.drain_once(registry) == 1
    assert receiver.accept(bodies[0], sign(bodies[0]))[0] == "200 OK"  # a replay adds no row
    assert drainer.drain_once(registry) == 0
    assert [build.reload(m).status for m in (read_first, early, failing, requeued)] == [
        MessageStatus.READ.value, MessageStatus.DELIVERED.value, MessageStatus.FAILED.value, MessageStatus.SENT.value]
    assert build.reload(requeued).wamid == "wamid.adopted"
    db.expire_all()
    with tenancy.unscoped(db):
        assert len(db.scalars(select(DeadLetter)).all()) == 1
        [contact] = db.scalars(select(Contact).where(Contact.vendor_id == line.vendor_id)).all()
    assert contact.opted_out and contact.last_inbound_at is not None
