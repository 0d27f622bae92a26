"""The pure parts: which keywords a message can match (bounded work), and business hours across time zones and DST."""

from __future__ import annotations

import datetime as dt

import pytest

from kloyst_plugins.autoreplies import hours, matching

UTC = dt.timezone.utc


def test_a_message_yields_its_word_prefixes_normalized():
    assert matching.candidates("  Price   LIST please ") == ("price list please",
                                                              ["price", "price list", "price list please"])


def test_a_huge_message_costs_a_bounded_number_of_candidates():
    exact, prefixes = matching.candidates("a " * 500_000)
    assert exact == "" and len(prefixes) <= matching.MAX_KEYWORD // 2 + 1
    assert all(len(p) <= matching.MAX_KEYWORD for p in prefixes)


def test_a_keyword_of_the_maximum_length_can_still_match_a_longer_message():
    keyword = "k" * matching.MAX_KEYWORD
    assert keyword in matching.candidates(keyword + " and more")[1]


@pytest.mark.parametrize(("rule", "contact", "fits"), [("", None, True), ("", "de", True), ("es", None, False),
                                                      ("es", "es", True), ("es", "ES-mx", True), ("es", "est", False),
                                                      ("pt_BR", "pt_br", True), ("pt_BR", "pt", False)])
def test_a_rules_language_fits_the_contacts(rule, contact, fits):
    assert matching.language_matches(rule, contact) is fits


def test_opening_hours_follow_the_local_clock_across_daylight_saving():
    schedule = {"mon": [["09:00", "17:00"]]}
    # 08:30 UTC is 09:30 in Berlin in winter (UTC+1) and 10:30 in summer (UTC+2): open both times.
    assert hours.is_open(schedule, "Europe/Berlin", dt.datetime(2026, 1, 5, 8, 30, tzinfo=UTC))
    assert hours.is_open(schedule, "Europe/Berlin", dt.datetime(2026, 7, 6, 8, 30, tzinfo=UTC))
    # 07:30 UTC: 08:30 in winter (closed), 09:30 in summer (open).
    assert not hours.is_open(schedule, "Europe/Berlin", dt.datetime(2026, 1, 5, 7, 30, tzinfo=UTC))
    assert hours.is_open(schedule, "Europe/Berlin", dt.datetime(2026, 7, 6, 7, 30, tzinfo=UTC))


def test_the_day_is_the_local_day():
    schedule = {"tue": [["00:00", "24:00"]]}
    # Monday 20:00 UTC is already Tuesday 01:30 in Kolkata.
    assert hours.is_open(schedule, "Asia/Kolkata", dt.datetime(2026, 12, 7, 20, 0, tzinfo=UTC))
    assert not hours.is_open(schedule, "UTC", dt.datetime(2026, 12, 7, 20, 0, tzinfo=UTC))


def test_an_interval_includes_its_opening_minute_and_excludes_its_closing_one():
    schedule = {"mon": [["09:00", "17:00"]]}
    assert hours.is_open(schedule, "UTC", dt.datetime(2026, 12, 7, 9, 0, tzinfo=UTC))
    assert not hours.is_open(schedule, "UTC", dt.datetime(2026, 12, 7, 17, 0, tzinfo=UTC))


def test_a_schedule_is_checked_and_sorted():
    assert hours.check({"fri": [["14:00", "18:00"], ["08:00", "12:00"]]}) == {"fri": [["08:00", "12:00"],
                                                                                    ["14:00", "18:00"]]}
    for bad in ({"fri": [["12:00", "12:00"]]}, {"fri": [["08:00", "12:00"], ["11:59", "13:00"]]},
                {"fri": [["8:00", "12:00"]]}, {"friday": []}):
        with pytest.raises(ValueError):
            hours.check(bad)


def test_a_message_padded_past_the_window_is_not_an_exact_match_nor_a_cut_word_a_prefix():
    assert matching.candidates("hours" + " " * 600 + "please") == ("", ["hours"])
    assert matching.candidates(" " * 600 + "hours") == ("hours", ["hours"])
    exact, prefixes = matching.candidates("x " + " " * 505 + "hourses")  # the window ends inside "hourses"
    assert exact == "" and prefixes == ["x"]
