"""The rules and settings API: what it stores, what it refuses (and says why), who may change it, per vendor."""

from __future__ import annotations

import pytest
from autoreplies_support import RULES, SETTINGS

from kloyst.accounts.models import Role
from kloyst_plugins.autoreplies.services import DEFAULT_OPT_OUT_TEXT


def problems(answer) -> str:
    error = answer.json["error"]
    return " ".join([error["message"], *(f["problem"] for f in error["details"].get("fields", []))])


def test_a_rule_is_created_read_changed_and_deleted(testapp, shop):
    created = testapp.post_json(RULES, {"keyword": "Hours", "text": "9 to 5", "language": "en"},
                                headers=shop.headers, status=201).json["rule"]
    assert (created["keyword"], created["match"], created["language"], created["action"]) == ("hours", "exact", "en",
                                                                                            "reply")
    assert created["stats"] == {"hits": 0, "failures": 0, "last_hit_at": None, "last_failed_at": None,
                                "last_error": None}
    url = f"{RULES}/{created['id']}"
    changed = testapp.patch_json(url, {"match": "prefix", "language": None, "text": "10 to 6"},
                                 headers=shop.headers).json["rule"]
    assert (changed["match"], changed["language"], changed["text"]) == ("prefix", None, "10 to 6")
    assert testapp.get(url, headers=shop.headers).json["rule"] == changed
    testapp.delete(url, headers=shop.headers, status=204)
    testapp.get(url, headers=shop.headers, status=404)


def test_a_template_replaces_the_text_of_a_rule(testapp, build, shop):
    build.template(shop)
    created = testapp.post_json(RULES, {"keyword": "hours", "text": "9 to 5"}, headers=shop.headers).json["rule"]
    changed = testapp.patch_json(f"{RULES}/{created['id']}", {"template": {"name": "opening_hours",
                                                                          "language": "en_US"}},
                                 headers=shop.headers).json["rule"]
    assert changed["text"] is None and changed["template"] == {"name": "opening_hours", "language": "en_US"}


def test_the_rules_list_is_paged_by_cursor_newest_first(testapp, shop):
    for word in ("one", "two", "three"):
        testapp.post_json(RULES, {"keyword": word, "text": word}, headers=shop.headers, status=201)
    first = testapp.get(RULES, {"limit": 2}, headers=shop.headers).json
    second = testapp.get(RULES, {"limit": 2, "cursor": first["next_cursor"]}, headers=shop.headers).json
    assert [r["keyword"] for r in first["items"] + second["items"]] == ["three", "two", "one"]
    assert second["next_cursor"] is None


@pytest.mark.parametrize(("body", "says"), [
    ({"keyword": "", "text": "x"}, "empty"),
    ({"keyword": "   ", "text": "x"}, "empty"),
    ({"keyword": "k" * 65, "text": "x"}, "at most 64"),
    ({"keyword": "hi", "match": "fuzzy", "text": "x"}, "'exact' or 'prefix'"),
    ({"keyword": "hi", "text": "x" * 4097}, "at most 4096"),
    ({"keyword": "hi"}, "exactly one of 'text' and 'template'"),
    ({"keyword": "hi", "text": "x", "template": {"name": "opening_hours", "language": "en_US"}}, "exactly one"),
    ({"keyword": "start", "action": "opt_in", "text": "x"}, "leave out 'text'"),
    ({"keyword": "hi", "text": "x", "language": "english!"}, "pattern"),
    ({"keyword": "h\ti", "text": "x"}, "control character"),
    ({"keyword": "hi", "text": "x", "colour": "red"}, "colour"),
])
def test_a_bad_rule_is_a_422_saying_what_to_fix(testapp, shop, body, says):
    answer = testapp.post_json(RULES, body, headers=shop.headers, status=422)
    assert says in problems(answer)


@pytest.mark.parametrize(("status", "says"), [("PAUSED", "is PAUSED, not APPROVED"),
                                              ("REJECTED", "is REJECTED, not APPROVED")])
def test_a_template_that_is_not_approved_is_refused(testapp, build, shop, status, says):
    build.template(shop, status=status)
    answer = testapp.post_json(RULES, {"keyword": "hi", "template": {"name": "opening_hours", "language": "en_US"}},
                               headers=shop.headers, status=422)
    assert answer.json["error"]["code"] == "template_not_sendable" and says in problems(answer)


def test_an_unknown_template_or_one_that_needs_parameters_is_refused(testapp, build, shop):
    build.template(shop, "needs_a_name", body="Hi {{1}}!")
    build.template(shop, "with_image", header={"type": "HEADER", "format": "IMAGE"})
    for name, says in (("no_such_template", "you have no template"), ("needs_a_name", "variables (1)"),
                       ("with_image", "IMAGE header")):
        answer = testapp.post_json(RULES, {"keyword": "hi", "template": {"name": name, "language": "en_US"}},
                                   headers=shop.headers, status=422)
        assert says in problems(answer)


def test_another_vendors_template_is_not_yours_to_use(testapp, build, shop):
    build.template(build.shop("Other Co"), "theirs")
    testapp.post_json(RULES, {"keyword": "hi", "template": {"name": "theirs", "language": "en_US"}},
                      headers=shop.headers, status=422)


def test_a_second_rule_for_the_same_keyword_match_and_language_is_a_409(testapp, shop):
    first = testapp.post_json(RULES, {"keyword": "hi", "text": "x"}, headers=shop.headers).json["rule"]
    answer = testapp.post_json(RULES, {"keyword": " HI ", "text": "y"}, headers=shop.headers, status=409)
    assert answer.json["error"]["details"]["rule_id"] == first["id"]
    testapp.post_json(RULES, {"keyword": "hi", "text": "y", "language": "es"}, headers=shop.headers, status=201)
    testapp.post_json(RULES, {"keyword": "hi", "text": "y", "match": "prefix"}, headers=shop.headers, status=201)


def test_members_read_rules_and_settings_but_only_admins_change_them(testapp, accounts, shop):
    member = accounts.user(shop.account.vendor, role=Role.MEMBER)
    testapp.get(RULES, headers=member.headers, status=200)
    testapp.get(SETTINGS, headers=member.headers, status=200)
    testapp.post_json(RULES, {"keyword": "hi", "text": "x"}, headers=member.headers, status=403)
    testapp.patch_json(SETTINGS, {"away_enabled": False}, headers=member.headers, status=403)


def test_rules_are_kept_per_vendor(testapp, build, shop):
    other = build.shop("Other Co")
    mine = testapp.post_json(RULES, {"keyword": "hi", "text": "x"}, headers=shop.headers).json["rule"]
    assert testapp.get(RULES, headers=other.headers).json["items"] == []
    for method in ("get", "delete"):
        getattr(testapp, method)(f"{RULES}/{mine['id']}", headers=other.headers, status=404)
    testapp.patch_json(f"{RULES}/{mine['id']}", {"text": "theirs"}, headers=other.headers, status=404)
    assert testapp.get(f"{RULES}/{mine['id']}", headers=shop.headers).json["rule"]["text"] == "x"


def test_settings_have_defaults_until_changed(testapp, shop):
    settings = testapp.get(SETTINGS, headers=shop.headers).json["settings"]
    assert settings["time_zone"] == "UTC" and settings["business_hours"] == {}
    assert settings["away_enabled"] is False and settings["opt_out_confirmation"] is True
    assert settings["opt_out_text"] == DEFAULT_OPT_OUT_TEXT and settings["open_now"] is False


def test_settings_are_changed_field_by_field_and_hours_are_sorted(testapp, shop):
    changed = testapp.patch_json(SETTINGS, {"time_zone": "Asia/Kolkata",
                                            "business_hours": {"mon": [["14:00", "18:00"], ["09:00", "13:00"]],
                                                               "sun": []}},
                                 headers=shop.headers).json["settings"]
    assert changed["business_hours"] == {"mon": [["09:00", "13:00"], ["14:00", "18:00"]], "sun": []}
    changed = testapp.patch_json(SETTINGS, {"away_enabled": True, "away_text": "Closed.", "away_interval_hours": 6},
                                 headers=shop.headers).json["settings"]
    assert (changed["time_zone"], changed["away_interval_hours"]) == ("Asia/Kolkata", 6)
    assert testapp.get(SETTINGS, headers=shop.headers).json["settings"] == changed


@pytest.mark.parametrize(("body", "says"), [
    ({"time_zone": "Mars/Olympus_Mons"}, "not an IANA time zone"),
    ({"time_zone": "../../etc/passwd"}, "not an IANA time zone"),
    ({"business_hours": {"mon": [["17:00", "09:00"]]}}, "closes before it opens"),
    ({"business_hours": {"mon": [["09:00", "13:00"], ["12:00", "18:00"]]}}, "overlap"),
    ({"business_hours": {"mon": [["25:00", "26:00"]]}}, "HH:MM"),
    ({"business_hours": {"mon": [["09:00"]]}}, "at least 2"),
    ({"business_hours": {"funday": [["09:00", "17:00"]]}}, "funday"),
    ({"business_hours": {"mon": [["00:00", "01:00"]] * 7}}, "at most 6"),
    ({"away_enabled": True}, "needs a text"),
    ({"away_interval_hours": 0}, "greater than or equal to 1"),
    ({"opt_out_text": ""}, "at least 1"),
    ({"time_zone": None}, "may not be null"),
])
def test_bad_settings_are_a_422_saying_what_to_fix(testapp, shop, body, says):
    answer = testapp.patch_json(SETTINGS, body, headers=shop.headers, status=422)
    assert says in problems(answer)
    assert testapp.get(SETTINGS, headers=shop.headers).json["settings"]["time_zone"] == "UTC"
