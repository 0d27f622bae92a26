"""Keyword rules answer a customer's message: exact or prefix, case and spaces ignored, per language, once."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from autoreplies_support import CUSTOMER, RULES, SHOP_NUMBER
from sqlalchemy import select

from kloyst.db import tenancy
from kloyst.events import DomainEvent, MessageReceived
from kloyst.outbox.models import OutboxEvent
from kloyst.queue import TaskContext
from kloyst_plugins.autoreplies import plugin
from kloyst_plugins.autoreplies.models import AutoReply


def rule(testapp, shop, keyword: str, text: str = "We open at nine.", **fields) -> dict:
    return testapp.post_json(RULES, {"keyword": keyword, "text": text, **fields}, headers=shop.headers,
                             status=201).json["rule"]


def test_an_exact_keyword_is_answered_with_its_text_as_a_free_service_reply(testapp, build, shop, write):
    rule(testapp, shop, "hours", "Mon–Fri 9–17.")
    write(shop, "Hours")
    [reply] = build.replies(shop)
    assert reply["type"] == "text" and reply["text"] == {"body": "Mon–Fri 9–17."}
    assert reply["to"] == CUSTOMER
    row = reply["_row"]
    assert (row.status, row.category, row.price_micros, row.hold_id) == ("QUEUED", "service", None, None)


@pytest.mark.parametrize("said", ["OPENING HOURS", "  opening   hours ", "Opening\tHoUrS"])
def test_case_and_spaces_do_not_matter(testapp, build, shop, write, said):
    created = rule(testapp, shop, "  Opening   HOURS ")
    assert created["keyword"] == "opening hours"
    write(shop, said)
    assert build.texts(shop) == ["We open at nine."]


def test_an_exact_rule_does_not_answer_a_longer_message(testapp, build, shop, write):
    rule(testapp, shop, "hours")
    write(shop, "hours please")
    assert build.texts(shop) == []


@pytest.mark.parametrize(("said", "answered"), [("price", True), ("Price list please", True), ("pricey?", False),
                                                ("the price", False)])
def test_a_prefix_rule_answers_messages_that_start_with_its_words(testapp, build, shop, write, said, answered):
    rule(testapp, shop, "price", "Prices: see our site.", match="prefix")
    write(shop, said)
    assert build.texts(shop) == (["Prices: see our site."] if answered else [])


def test_the_most_specific_rule_wins(testapp, build, shop, write):
    rule(testapp, shop, "price", "prefix short", match="prefix")
    rule(testapp, shop, "price list", "prefix long", match="prefix")
    rule(testapp, shop, "price list", "exact", match="exact")
    write(shop, "price list")
    write(shop, "price list for shoes")
    write(shop, "price of socks")
    assert build.texts(shop) == ["exact", "prefix long", "prefix short"]


def test_a_rule_in_the_contacts_language_comes_before_one_for_everyone(testapp, build, shop, write):
    build.contact(shop, language="es_MX")
    build.contact(shop, "+12025550124")
    rule(testapp, shop, "hola", "for everyone")
    rule(testapp, shop, "hola", "en español", language="es")
    rule(testapp, shop, "hello", "in English", language="en")
    write(shop, "hola")
    write(shop, "hola", sender="+12025550124")
    write(shop, "hello")  # the contact speaks Spanish: the English rule is not theirs
    assert build.texts(shop) == ["en español", "for everyone"]


def test_a_tapped_button_and_an_interactive_reply_are_matched_by_their_text(testapp, build, shop, write):
    rule(testapp, shop, "talk to us", "An agent will answer.")
    write(shop, None, kind="button", part={"payload": "x", "text": "Talk to us"})
    write(shop, None, kind="interactive", part={"type": "button_reply",
                                                "button_reply": {"id": "b1", "title": "Talk to us"}})
    assert build.texts(shop) == ["An agent will answer.", "An agent will answer."]


def test_a_disabled_rule_answers_nothing(testapp, build, shop, write):
    created = rule(testapp, shop, "hours")
    testapp.patch_json(f"{RULES}/{created['id']}", {"enabled": False}, headers=shop.headers, status=200)
    write(shop, "hours")
    assert build.texts(shop) == []


def test_hits_are_counted_on_the_rule(testapp, shop, write):
    created = rule(testapp, shop, "hours")
    write(shop, "hours")
    write(shop, "HOURS")
    stats = testapp.get(f"{RULES}/{created['id']}", headers=shop.headers).json["rule"]["stats"]
    assert stats["hits"] == 2 and stats["failures"] == 0 and stats["last_hit_at"] is not None


def test_one_inbound_message_gets_one_reply_however_often_its_event_is_delivered(testapp, db, registry, build, shop,
                                                                                write, clock):
    rule(testapp, shop, "hours")
    write(shop, "hours")
    with tenancy.unscoped(db):
        outbox = db.scalars(select(OutboxEvent).where(OutboxEvent.vendor_id == shop.vendor_id,
                                                      OutboxEvent.topic == "vendor.event")).all()
    [received] = [e for e in outbox if e.payload["name"] == "MessageReceived"]
    event = DomainEvent(id=received.id, name="MessageReceived", vendor_id=shop.vendor_id,
                        payload=received.payload["payload"],
                        data=MessageReceived.from_payload(received.payload["payload"]))
    for _ in range(3):  # at-least-once: the same event again, as a worker that died before its commit would
        session = registry["kloyst.session_factory"]()
        tenancy.set_scope(session, shop.vendor_id)
        plugin.kloyst_vendor_event(event, TaskContext(registry, session, None, shop.vendor_id))
        session.commit()
    assert build.texts(shop) == ["We open at nine."]
    with tenancy.unscoped(db):
        assert len(db.scalars(select(AutoReply).where(AutoReply.vendor_id == shop.vendor_id)).all()) == 1


def test_a_customer_known_only_by_a_business_scoped_user_id_is_answered_by_it(testapp, build, shop, write):
    rule(testapp, shop, "hours")
    write(shop, "hours", sender=None, bsuid="US.13491208655302741918")
    [reply] = build.replies(shop)
    assert reply["recipient"] == "US.13491208655302741918" and "to" not in reply
    assert reply["text"] == {"body": "We open at nine."}


def test_a_message_older_than_the_customer_service_window_is_not_answered(testapp, build, shop, write):
    rule(testapp, shop, "hours")
    write(shop, "hours", ago=dt.timedelta(hours=24, minutes=1).total_seconds())
    assert build.texts(shop) == []
    write(shop, "hours", ago=dt.timedelta(hours=23, minutes=59).total_seconds())
    assert build.texts(shop) == ["We open at nine."]


def test_a_message_from_the_shops_own_number_is_never_answered(testapp, build, shop, write):
    rule(testapp, shop, "hours")
    write(shop, "hours", sender="+" + "".join(ch for ch in SHOP_NUMBER if ch.isdigit()))
    assert build.texts(shop) == []


def test_a_reaction_is_not_answered(testapp, build, shop, write):
    rule(testapp, shop, "hours")
    write(shop, None, kind="reaction", part={"message_id": "wamid.x", "emoji": "👍"})
    assert build.texts(shop) == []


def test_an_opted_out_contact_gets_no_keyword_reply(testapp, build, shop, write):
    build.contact(shop, opted_out=True)
    rule(testapp, shop, "hours")
    write(shop, "hours")
    assert build.texts(shop) == []


def test_a_vendors_rules_never_answer_another_vendors_customers(testapp, build, shop, write):
    other = build.shop("Other Co")
    rule(testapp, shop, "hours", "shop's answer")
    write(other, "hours")
    assert build.texts(other) == [] and build.texts(shop) == []
    rule(testapp, other, "hours", "other's answer")
    write(other, "hours")
    assert build.texts(other) == ["other's answer"] and build.texts(shop) == []


def test_a_vendor_without_the_plugin_is_never_answered(testapp, build, write):
    plain = build.shop("Plain Co", autoreplies=False)
    write(plain, "hours")
    assert build.texts(plain) == []


def test_an_unknown_rule_id_is_404(testapp, shop):
    testapp.get(f"{RULES}/{uuid.uuid4()}", headers=shop.headers, status=404)
