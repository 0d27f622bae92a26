"""A rule may answer with an APPROVED template: charged like any template send, and a failure is visible."""

from __future__ import annotations

from autoreplies_support import RULES
from sqlalchemy import select

from kloyst.db import tenancy
from kloyst_plugins.autoreplies.models import AutoReply


def template_rule(testapp, shop, keyword: str = "hours", name: str = "opening_hours") -> dict:
    return testapp.post_json(RULES, {"keyword": keyword, "template": {"name": name, "language": "en_US"}},
                             headers=shop.headers, status=201).json["rule"]


def test_a_template_answer_is_queued_priced_and_held_like_any_template_send(testapp, build, shop, write):
    build.template(shop)
    template_rule(testapp, shop)
    write(shop, "hours")
    [reply] = build.replies(shop)
    assert reply["type"] == "template" and reply["template"]["name"] == "opening_hours"
    row = reply["_row"]
    assert row.template_name == "opening_hours" and row.price_micros > 0 and row.hold_id is not None
    assert row.idempotency_key.startswith("autoreply:inbound:")


def test_a_template_filled_from_the_contact_by_its_mapping_is_accepted(testapp, build, shop, write):
    build.contact(shop)
    build.template(shop, "greeting", body="Hi {{1}}, we open at nine.",
                   variable_mapping={"1": {"field": "country"}})
    template_rule(testapp, shop, "hi", "greeting")
    write(shop, "hi")
    [reply] = build.replies(shop)
    assert reply["template"]["components"][0]["parameters"] == [{"type": "text", "text": "US"}]


def test_a_wallet_that_cannot_pay_fails_the_answer_visibly_and_sends_nothing(testapp, db, build, write):
    broke = build.shop("Broke Co", funds=0)
    build.template(broke)
    created = template_rule(testapp, broke)
    write(broke, "hours")
    assert build.replies(broke) == []
    stats = testapp.get(f"{RULES}/{created['id']}", headers=broke.headers).json["rule"]["stats"]
    assert stats["hits"] == 1 and stats["failures"] == 1
    assert stats["last_error"].startswith("insufficient_funds")
    with tenancy.unscoped(db):
        [claim] = db.scalars(select(AutoReply).where(AutoReply.vendor_id == broke.vendor_id)).all()
    assert claim.status == "failed" and claim.message_id is None and "insufficient_funds" in claim.error
    [shown] = testapp.get("/v1/autoreplies/replies", headers=broke.headers).json["items"]
    assert (shown["kind"], shown["status"], shown["rule_id"]) == ("keyword", "failed", created["id"])
    assert shown["error"].startswith("insufficient_funds")


def test_a_template_paused_after_the_rule_was_made_fails_the_answer(testapp, db, build, shop, write):
    template = build.template(shop)
    created = template_rule(testapp, shop)
    template.status = "PAUSED"
    build.save(template)
    write(shop, "hours")
    assert build.replies(shop) == []
    assert testapp.get(f"{RULES}/{created['id']}", headers=shop.headers).json["rule"]["stats"]["failures"] == 1
