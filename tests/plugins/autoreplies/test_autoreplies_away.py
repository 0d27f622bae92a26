"""The away message: sent outside business hours (vendor's time zone), once per conversation per interval."""

from __future__ import annotations

import datetime as dt

from autoreplies_support import BERLIN_HOURS, CLOSED, OPEN, RULES, SETTINGS

AWAY = "We are closed; we answer from 9:00 (Berlin time)."


def away(testapp, shop, **fields) -> dict:
    body = {**BERLIN_HOURS, "away_enabled": True, "away_text": AWAY, **fields}
    return testapp.patch_json(SETTINGS, body, headers=shop.headers, status=200).json["settings"]


def test_outside_business_hours_the_away_message_answers(testapp, build, shop, write, clock):
    away(testapp, shop)
    clock.now = CLOSED
    write(shop, "anyone there?")
    assert build.texts(shop) == [AWAY]


def test_inside_business_hours_nothing_is_sent(testapp, build, shop, write, clock):
    away(testapp, shop)
    clock.now = OPEN
    write(shop, "anyone there?")
    assert build.texts(shop) == []


def test_the_hours_are_the_vendors_local_hours(testapp, build, shop, write, clock):
    # 08:30 UTC is 09:30 in Berlin (open) and 03:30 in New York (closed).
    clock.now = dt.datetime(2026, 12, 7, 8, 31, tzinfo=dt.timezone.utc)
    away(testapp, shop)
    write(shop, "hello")
    assert build.texts(shop) == []
    away(testapp, shop, time_zone="America/New_York")
    write(shop, "hello again")
    assert build.texts(shop) == [AWAY]


def test_a_chatty_customer_gets_one_away_message_per_interval(testapp, build, shop, write, clock):
    away(testapp, shop, away_interval_hours=4)
    clock.now = CLOSED
    for said in ("hi", "hello?", "is anyone there"):
        write(shop, said)
    assert build.texts(shop) == [AWAY]
    clock.now = CLOSED + dt.timedelta(hours=3, minutes=59)
    write(shop, "still closed?", ago=1)
    assert build.texts(shop) == [AWAY]
    clock.now = CLOSED + dt.timedelta(hours=4, minutes=1)  # 01:01 the next day in Berlin: still closed
    write(shop, "good night", ago=1)
    assert build.texts(shop) == [AWAY, AWAY]


def test_each_conversation_has_its_own_away_interval(testapp, build, shop, write, clock):
    away(testapp, shop)
    clock.now = CLOSED
    write(shop, "hi")
    write(shop, "hi", sender="+12025550124")
    assert build.texts(shop) == [AWAY, AWAY]


def test_a_keyword_rule_answers_instead_of_the_away_message(testapp, build, shop, write, clock):
    away(testapp, shop)
    testapp.post_json(RULES, {"keyword": "hours", "text": "9 to 5"}, headers=shop.headers, status=201)
    clock.now = CLOSED
    write(shop, "hours")
    assert build.texts(shop) == ["9 to 5"]


def test_the_away_message_is_off_until_enabled(testapp, build, shop, write, clock):
    testapp.patch_json(SETTINGS, BERLIN_HOURS, headers=shop.headers, status=200)
    clock.now = CLOSED
    write(shop, "hi")
    assert build.texts(shop) == []


def test_a_day_not_listed_is_closed_all_day(testapp, build, shop, write, clock):
    away(testapp, shop)
    clock.now = dt.datetime(2026, 12, 12, 11, 0, tzinfo=dt.timezone.utc)  # a Saturday, noon in Berlin
    write(shop, "open today?")
    assert build.texts(shop) == [AWAY]


def test_an_opted_out_contact_gets_no_away_message(testapp, build, shop, write, clock):
    build.contact(shop, opted_out=True)
    away(testapp, shop)
    clock.now = CLOSED
    write(shop, "hi")
    assert build.texts(shop) == []
