"""Every message Meta bills is paid for: a single send holds its price when it is queued and settles like a
campaign's message (capture when Meta accepts it, release when it never went out, refund when it was sent and
then failed). A wallet that cannot pay is a 402 with the amounts, and nothing is queued, so Meta is never called.
"""

from __future__ import annotations

import threading
import uuid

import pytest
import webtest
from messaging_support import LANGUAGE, RECIPIENT, Messaging
from sqlalchemy import select
from test_messages_api import MESSAGES, assert_nothing_queued, queued, send, send_body
from test_sender import wait_for

from kloyst.cli import main
from kloyst.db import session_scope, tenancy
from kloyst.errors import PaymentRequired
from kloyst.sandbox.state import PhoneNumber as SandboxNumber
from kloyst.sandbox.state import Template as SandboxTemplate
from kloyst_plugins.messages import settlement
from kloyst_plugins.messages.models import MessageLog
from kloyst_plugins.messages.sender import Sender, SenderSettings
from kloyst_plugins.messages.services import MessageService, TemplateSend
from kloyst_plugins.pricing.services import QuotationService
from kloyst_plugins.wallet.audit import invariant_violations
from kloyst_plugins.wallet.ledger import Ledger
from kloyst_plugins.wallet.records import ENTRY, HOLD

FAST = SenderSettings(concurrency=4, lease_seconds=60, max_retries=0, retry_base_seconds=0.05)


@pytest.fixture(autouse=True)
def _ledger_checked_after_each_test(ledger_invariants):
    """Every test here ends with each wallet equal to its ledger and its holds."""


def unit_price(db, registry, vendor_id, category: str = "UTILITY", country: str = "US") -> int:
    """What the pricing plugin charges this vendor for one message (its rate card, tiers and rules)."""
    return QuotationService(db, vendor_id=vendor_id, registry=registry, enqueue=None).price(
        {country: 1}, category).items_micros


def entries(db, vendor_id) -> list[tuple[str, int]]:
    rows = db.execute(select(ENTRY.c.kind, ENTRY.c.amount_micros).where(ENTRY.c.vendor_id == vendor_id)
                      .order_by(ENTRY.c.seq)).all()
    return [(kind, amount) for kind, amount in rows]


def hold_of(db, message: MessageLog):
    return db.execute(select(HOLD).where(HOLD.c.id == message.hold_id)).one()


def test_a_vendor_with_nothing_available_is_refused_402_with_the_amounts_and_nothing_reaches_meta(
        testapp, db, registry, messaging):
    broke = messaging.sending_vendor("Broke Co", funds=0)
    error = send(testapp, broke, status=402).json["error"]
    assert error["code"] == "insufficient_funds"
    price = unit_price(db, registry, broke.vendor_id)
    assert error["details"] == {"needed": f"{price / 10**6:.6f}", "available": "0.000000", "currency": "USD"}
    assert_nothing_queued(db, broke.vendor_id)
    assert [kind for kind, _ in entries(db, broke.vendor_id)] == []


def test_five_sends_from_an_empty_wallet_are_all_refused(testapp, db, messaging):
    broke = messaging.sending_vendor("Five Co", funds=0)
    for index in range(5):
        send(testapp, broke, status=402, key=f"marketing-{index}")
    assert_nothing_queued(db, broke.vendor_id)


def test_a_send_holds_its_price_on_the_message_when_it_is_queued(testapp, db, registry, vendor):
    answer = send(testapp, vendor, key="held").json["message"]
    [message], _ = queued(db, vendor.vendor_id)
    price = unit_price(db, registry, vendor.vendor_id)
    assert price > 0
    assert message.price_micros == price and message.hold_id is not None
    hold = hold_of(db, message)
    assert (hold.amount_micros, hold.captured_micros, hold.released_micros) == (price, 0, 0)
    assert hold.reference == f"message:{answer['id']}"
    state = Ledger(db.connection(), vendor.vendor_id).wallet()
    assert state.held_micros == price and state.available_micros == 100_000_000 - price


def test_a_replayed_send_holds_nothing_more(testapp, db, registry, vendor):
    send(testapp, vendor, key="once")
    send(testapp, vendor, key="once")
    price = unit_price(db, registry, vendor.vendor_id)
    assert [kind for kind, _ in entries(db, vendor.vendor_id)] == ["TOPUP", "HOLD"]
    assert Ledger(db.connection(), vendor.vendor_id).wallet().held_micros == price


def test_the_last_affordable_message_is_sent_and_the_next_one_is_refused(testapp, db, registry, messaging):
    price = unit_price(db, registry, messaging.vendor("Probe Co").vendor_id)
    tight = messaging.sending_vendor("Tight Co", funds=price)
    send(testapp, tight, key="first")
    error = send(testapp, tight, status=402, key="second").json["error"]
    assert error["details"]["available"] == "0.000000"
    assert len(queued(db, tight.vendor_id)[0]) == 1


def test_the_price_follows_the_templates_category(testapp, db, registry, messaging):
    vendor = messaging.sending_vendor("Marketing Co")
    marketing = messaging.template(vendor.waba, name="promo", category="MARKETING")
    send(testapp, vendor, template={"name": marketing.name, "language": LANGUAGE})
    [message], _ = queued(db, vendor.vendor_id)
    assert message.price_micros == unit_price(db, registry, vendor.vendor_id, "MARKETING")
    assert message.price_micros != unit_price(db, registry, vendor.vendor_id, "UTILITY")


def test_a_message_a_pricing_rule_made_free_holds_nothing_and_is_queued_unpriced(testapp, db, vendor, monkeypatch):
    monkeypatch.setattr(MessageService, "unit_price", lambda self, country, category: 0)
    send(testapp, vendor)
    [message], [_] = queued(db, vendor.vendor_id)
    assert message.price_micros is None and message.hold_id is None
    assert [kind for kind, _ in entries(db, vendor.vendor_id)] == ["TOPUP"]


def _report(registry, db, message: MessageLog, outcome: str) -> None:
    """What the sender and the status webhook do when a priced message reaches ``outcome`` (same hook)."""
    settlement.report(registry["kloyst.plugin_manager"], db.connection(), settlement.settled_from_rows(
        [(message.id, message.vendor_id, message.campaign_id, message.hold_id, message.price_micros)], outcome))
    db.commit()


def test_a_send_that_never_went_out_gives_its_hold_back(testapp, db, registry, vendor):
    send(testapp, vendor)
    [message], _ = queued(db, vendor.vendor_id)
    _report(registry, db, message, settlement.FAILED)
    hold = hold_of(db, message)
    assert (hold.captured_micros, hold.released_micros) == (0, message.price_micros)
    assert Ledger(db.connection(), vendor.vendor_id).wallet().balance_micros == 100_000_000
    _report(registry, db, message, settlement.FAILED)  # reported again: nothing moves twice
    assert [kind for kind, _ in entries(db, vendor.vendor_id)] == ["TOPUP", "HOLD", "RELEASE"]


def test_a_send_meta_accepted_then_failed_is_refunded(testapp, db, registry, vendor):
    send(testapp, vendor)
    [message], _ = queued(db, vendor.vendor_id)
    _report(registry, db, message, settlement.SENT)
    _report(registry, db, message, settlement.UNDELIVERED)
    assert entries(db, vendor.vendor_id)[1:] == [("HOLD", message.price_micros), ("CAPTURE", message.price_micros),
                                                  ("REFUND", message.price_micros)]
    assert Ledger(db.connection(), vendor.vendor_id).wallet().balance_micros == 100_000_000


def test_a_requeued_dead_letter_pays_again_under_a_new_hold(testapp, db, registry, vendor):
    send(testapp, vendor)
    [message], _ = queued(db, vendor.vendor_id)
    first_hold = message.hold_id
    _report(registry, db, message, settlement.FAILED)
    with tenancy.unscoped(db):
        message.status, message.status_rank = "FAILED", 0
        db.commit()
    letter = Messaging(db, registry).dead_letter(message)
    testapp.post(f"/v1/dead-letters/{letter.id}/requeue", headers=vendor.headers, status=200)
    db.expire_all()
    with tenancy.unscoped(db):
        message = db.get(MessageLog, message.id)
    assert message.hold_id != first_hold and message.status == "QUEUED"
    assert hold_of(db, message).amount_micros == message.price_micros
    assert [kind for kind, _ in entries(db, vendor.vendor_id)] == ["TOPUP", "HOLD", "RELEASE", "HOLD"]


def test_a_requeue_the_wallet_cannot_pay_for_is_402_and_the_letter_stays(testapp, db, registry, messaging):
    price = unit_price(db, registry, messaging.vendor("Probe Two").vendor_id)
    tight = messaging.sending_vendor("Requeue Co", funds=price)
    send(testapp, tight)
    [message], _ = queued(db, tight.vendor_id)
    _report(registry, db, message, settlement.SENT)  # the money is spent on the first round
    with tenancy.unscoped(db):
        message.status = "FAILED"
        db.commit()
    letter = messaging.dead_letter(message)
    error = testapp.post(f"/v1/dead-letters/{letter.id}/requeue", headers=tight.headers, status=402).json["error"]
    assert error["code"] == "insufficient_funds"
    db.expire_all()
    with tenancy.unscoped(db):
        assert db.get(MessageLog, message.id).status == "FAILED"


def _in_sandbox(sandbox, vendor) -> None:
    sandbox.state.add_number(SandboxNumber(id=vendor.number.meta_phone_number_id, waba_id=vendor.waba.meta_waba_id,
                                           display_phone_number="+1 555 010 0000", throughput=80))
    sandbox.state.add_template(vendor.waba.meta_waba_id, SandboxTemplate(
        id=vendor.template.meta_template_id, name=vendor.template.name, language=LANGUAGE,
        category=vendor.template.category, components=vendor.template.components))


def _queue(registry, vendor) -> uuid.UUID:
    """Queue one send in a real transaction, as ``POST /v1/messages`` does, and return its id."""
    with session_scope(registry["kloyst.session_factory"], vendor_id=vendor.vendor_id) as session:
        queued_now = MessageService.for_registry(session, registry, vendor_id=vendor.vendor_id).queue(TemplateSend(
            phone_number_id=vendor.number.id, template_name=vendor.template.name, template_language=LANGUAGE,
            to=RECIPIENT, body=["Ann", "A-1"], use_parameters=True))
        return queued_now.message.id


def _wallet_after(committed_db, vendor_id):
    committed_db.rollback()
    return Ledger(committed_db.connection(), vendor_id).wallet()


def test_the_sender_captures_the_hold_when_meta_accepts_the_message(registry, committed_db, meta_sandbox, cli_ini,
                                                                     capsys):
    vendor = Messaging(committed_db, registry).sending_vendor("Captured Co")
    _in_sandbox(meta_sandbox, vendor)
    message_id = _queue(registry, vendor)
    sender = Sender(registry, FAST).start()
    try:
        [message] = wait_for(committed_db, [message_id], lambda m: m.status in ("SENT", "DELIVERED", "READ")).values()
    finally:
        sender.stop(timeout=10)
    assert message.status in ("SENT", "DELIVERED", "READ")
    state = _wallet_after(committed_db, vendor.vendor_id)
    assert state.held_micros == 0 and state.balance_micros == 100_000_000 - message.price_micros
    assert [kind for kind, _ in entries(committed_db, vendor.vendor_id)] == ["TOPUP", "HOLD", "CAPTURE"]
    committed_db.rollback()
    assert main(["wallet", "check", cli_ini]) == 0
    assert "ok: 1 wallets, 1 holds agree with their ledger" in capsys.readouterr().out


def test_the_sender_releases_the_hold_when_meta_refuses_the_message(registry, committed_db, meta_sandbox):
    vendor = Messaging(committed_db, registry).sending_vendor("Released Co")
    _in_sandbox(meta_sandbox, vendor)
    meta_sandbox.state.behaviour.update({"failure_rates": {131026: 1.0}})  # permanent: undeliverable
    message_id = _queue(registry, vendor)
    sender = Sender(registry, FAST).start()
    try:
        [message] = wait_for(committed_db, [message_id], lambda m: m.status == "FAILED").values()
    finally:
        sender.stop(timeout=10)
    assert message.status == "FAILED"
    state = _wallet_after(committed_db, vendor.vendor_id)
    assert (state.held_micros, state.balance_micros) == (0, 100_000_000)
    assert [kind for kind, _ in entries(committed_db, vendor.vendor_id)] == ["TOPUP", "HOLD", "RELEASE"]


def test_single_sends_are_held_settled_and_refused_on_the_embedded_default_too(embedded_config):
    """SQLite (one writer): the hold shares the send's short write transaction, settlement captures it."""
    registry = embedded_config.registry
    factory = registry["kloyst.session_factory"]
    with factory() as db:
        tenancy.set_scope(db, tenancy.ALL_VENDORS)
        building = Messaging(db, registry)
        funded, broke = building.sending_vendor("Embedded Co"), building.sending_vendor("Embedded Broke", funds=0)
    message_id = _queue(registry, funded)
    with pytest.raises(PaymentRequired):
        _queue(registry, broke)
    with factory() as db:
        tenancy.set_scope(db, tenancy.ALL_VENDORS)
        message = db.get(MessageLog, message_id)
        assert message.price_micros == unit_price(db, registry, funded.vendor_id) and message.hold_id is not None
        _report(registry, db, message, settlement.SENT)
        assert [kind for kind, _ in entries(db, funded.vendor_id)] == ["TOPUP", "HOLD", "CAPTURE"]
        assert db.scalars(select(MessageLog.id).where(MessageLog.vendor_id == broke.vendor_id)).all() == []
        assert entries(db, broke.vendor_id) == []
        assert invariant_violations(db.connection()) == []


def test_concurrent_sends_never_hold_more_than_the_wallet_has(committed_db, registry, wsgi_app):
    """Eight sends at once against money for three: the ledger's conditional UPDATE lets exactly three hold."""
    building = Messaging(committed_db, registry)
    price = unit_price(committed_db, registry, building.vendor("Probe Race").vendor_id)
    vendor = building.sending_vendor("Race Co", funds=3 * price)
    start, answers = threading.Barrier(8, timeout=10), []

    def post(index: int) -> None:
        app = webtest.TestApp(wsgi_app, extra_environ={"REMOTE_ADDR": f"203.0.113.{index + 1}"})
        start.wait()
        answers.append(app.post_json(MESSAGES, send_body(vendor), status="*",
                                     headers={**vendor.headers, "Idempotency-Key": f"race-{index}"}))

    threads = [threading.Thread(target=post, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a.status_int for a in answers) == [202] * 3 + [402] * 5, [a.text for a in answers]
    messages, events = queued(committed_db, vendor.vendor_id)
    assert len(messages) == len(events) == 3
    state = _wallet_after(committed_db, vendor.vendor_id)
    assert (state.held_micros, state.available_micros) == (3 * price, 0)
