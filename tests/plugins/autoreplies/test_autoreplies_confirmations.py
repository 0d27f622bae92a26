"""Opt-out and opt-in confirmations: STOP is confirmed once, START (an opt_in rule) opts back in and is confirmed."""

from __future__ import annotations

from autoreplies_support import CUSTOMER, RULES, SETTINGS
from sqlalchemy import select

from kloyst.db import tenancy
from kloyst_plugins.autoreplies.services import DEFAULT_OPT_IN_TEXT, DEFAULT_OPT_OUT_TEXT
from kloyst_plugins.contacts.models import Contact


def contact(db, registry, shop) -> Contact:
    db.expire_all()
    with tenancy.unscoped(db):
        return db.scalars(select(Contact).where(Contact.vendor_id == shop.vendor_id, Contact.mobile_hash ==
                                                registry["kloyst.mobile_hasher"](shop.vendor_id, CUSTOMER))).one()


def test_stop_is_confirmed_once_even_to_the_contact_who_just_opted_out(testapp, db, registry, build, shop, write):
    testapp.post_json(RULES, {"keyword": "stop", "text": "a rule never answers an opt-out"}, headers=shop.headers,
                      status=201)
    write(shop, "hello")
    write(shop, "STOP")
    write(shop, "stop")  # already opted out: no second ContactOptedOut, no second confirmation
    assert contact(db, registry, shop).opted_out is True
    assert build.texts(shop) == [DEFAULT_OPT_OUT_TEXT]


def test_the_confirmation_texts_come_from_the_settings_and_can_be_turned_off(testapp, db, registry, build, shop,
                                                                            write):
    testapp.patch_json(SETTINGS, {"opt_out_text": "Bye! Reply START to come back."}, headers=shop.headers)
    write(shop, "STOP")
    assert build.texts(shop) == ["Bye! Reply START to come back."]
    quiet = build.shop("Quiet Co")
    testapp.patch_json(SETTINGS, {"opt_out_confirmation": False}, headers=quiet.headers)
    write(quiet, "STOP")
    assert build.texts(quiet) == []


def test_an_opt_out_through_the_api_is_not_confirmed_to_the_customer(testapp, db, registry, build, shop, write,
                                                                   run_outbox):
    write(shop, "hello")
    found = contact(db, registry, shop)
    testapp.post(f"/v1/contacts/{found.id}/opt-out", headers=shop.headers, status=200)
    run_outbox()
    assert build.texts(shop) == []


def test_start_opts_the_contact_back_in_and_is_confirmed(testapp, db, registry, build, shop, write):
    testapp.post_json(RULES, {"keyword": "start", "action": "opt_in"}, headers=shop.headers, status=201)
    write(shop, "STOP")
    write(shop, "Start")
    assert contact(db, registry, shop).opted_out is False
    assert build.texts(shop) == [DEFAULT_OPT_OUT_TEXT, DEFAULT_OPT_IN_TEXT]
    done = testapp.get("/v1/autoreplies/replies", headers=shop.headers).json["items"]
    assert sorted((r["kind"], r["status"]) for r in done) == [("opt_in_confirmation", "queued"),
                                                              ("opt_out_confirmation", "queued"), ("opted_in", "done")]
    write(shop, "START")  # already in: nothing to do, nothing said
    assert build.texts(shop) == [DEFAULT_OPT_OUT_TEXT, DEFAULT_OPT_IN_TEXT]


def test_without_an_opt_in_rule_an_opted_out_contact_stays_out_and_hears_nothing(testapp, db, registry, build, shop,
                                                                               write):
    write(shop, "STOP")
    write(shop, "START")
    assert contact(db, registry, shop).opted_out is True
    assert build.texts(shop) == [DEFAULT_OPT_OUT_TEXT]
