"""Campaign drafts over HTTP: create, read, list, edit, delete, and every problem in one 422."""

from __future__ import annotations

import datetime as dt
import uuid

from campaigns_support import MAPPING, PLUGINS

from kloyst_plugins.campaigns.models import Campaign


def test_a_valid_draft_is_created_and_read_back(testapp, vendor):
    created = testapp.post_json("/v1/campaigns", vendor.draft(), headers=vendor.headers, status=201).json["campaign"]
    assert created["status"] == "DRAFT" and created["schedule"] is None and created["recipients"] == 0
    assert created["template_id"] == str(vendor.template.id)
    read = testapp.get(f"/v1/campaigns/{created['id']}", headers=vendor.headers).json["campaign"]
    assert read == created
    listed = testapp.get("/v1/campaigns", headers=vendor.headers).json
    assert [c["id"] for c in listed["items"]] == [created["id"]]


def test_every_problem_of_a_draft_is_listed_in_one_422(testapp, world, vendor):
    paused = world.template(vendor.waba, name="old_promo", status="PAUSED")
    body = vendor.draft(template_id=str(paused.id), variables={"1": {"field": "name"}, "9": {"value": "x"}},
                        audience={"labels_exclude": ["vip"]},
                        schedule={"start_at": "2001-01-01T09:00:00", "timezone": "Europe/Paris"})
    error = testapp.post_json("/v1/campaigns", body, headers=vendor.headers, status=422).json["error"]
    assert error["code"] == "invalid_campaign"
    problems = {(p["field"], p["problem"].split(";")[0][:40]) for p in error["details"]["fields"]}
    fields = [p["field"] for p in error["details"]["fields"]]
    assert "template_id" in fields  # PAUSED, not APPROVED
    assert fields.count("variables") >= 3  # '9' unknown, '1' has no default, '2' unmapped
    assert "audience" in fields  # no source
    assert "schedule.start_at" in fields  # in the past
    assert len(problems) == len(error["details"]["fields"])
    assert testapp.get("/v1/campaigns", headers=vendor.headers).json["items"] == []


def test_a_template_of_another_waba_than_the_number_is_refused(testapp, world, vendor):
    other_waba = world.vendor("Other").waba
    foreign = world.template(other_waba, name="elsewhere")
    error = testapp.post_json("/v1/campaigns", vendor.draft(template_id=str(foreign.id)), headers=vendor.headers,
                              status=422).json["error"]
    # Another vendor's template is simply not found for this vendor.
    assert [p["field"] for p in error["details"]["fields"]] == ["template_id"]


def test_an_unknown_time_zone_is_refused_and_a_naive_time_is_read_in_its_zone(testapp, vendor):
    bad = vendor.draft(schedule={"start_at": "2099-06-01T09:00:00", "timezone": "Mars/Olympus"})
    error = testapp.post_json("/v1/campaigns", bad, headers=vendor.headers, status=422).json["error"]
    assert [p["field"] for p in error["details"]["fields"]] == ["schedule.timezone"]
    good = vendor.draft(schedule={"start_at": "2099-06-01T09:00:00", "timezone": "Europe/Paris"})
    schedule = testapp.post_json("/v1/campaigns", good, headers=vendor.headers, status=201).json["campaign"]["schedule"]
    assert schedule["start_at"] == "2099-06-01T07:00:00+00:00"  # 09:00 CEST
    assert schedule["timezone"] == "Europe/Paris" and schedule["local_start_at"] == "2099-06-01T09:00:00+02:00"


def test_a_draft_is_edited_and_checked_whole_again(testapp, vendor):
    campaign = testapp.post_json("/v1/campaigns", vendor.draft(), headers=vendor.headers).json["campaign"]
    url = f"/v1/campaigns/{campaign['id']}"
    edited = testapp.patch_json(url, {"name": "Summer", "audience": {"labels_include": ["vip"]}},
                                headers=vendor.headers).json["campaign"]
    assert edited["name"] == "Summer" and edited["audience"] == {"labels_include": ["vip"]}
    # Variables are replaced whole: "1" keeps its mapping, "2" now needs a default.
    error = testapp.patch_json(url, {"variables": {"1": MAPPING["1"], "2": {"field": "attributes.code"}}},
                               headers=vendor.headers, status=422).json["error"]
    assert [p["field"] for p in error["details"]["fields"]] == ["variables"]
    assert testapp.get(url, headers=vendor.headers).json["campaign"]["variables"]["2"] == {"value": "SALE10"}


def test_a_draft_is_deleted_and_a_launched_campaign_is_neither_edited_nor_deleted(testapp, db, vendor):
    first = testapp.post_json("/v1/campaigns", vendor.draft(), headers=vendor.headers).json["campaign"]
    testapp.delete(f"/v1/campaigns/{first['id']}", headers=vendor.headers, status=204)
    testapp.get(f"/v1/campaigns/{first['id']}", headers=vendor.headers, status=404)
    second = testapp.post_json("/v1/campaigns", vendor.draft(), headers=vendor.headers).json["campaign"]
    db.get(Campaign, uuid.UUID(second["id"])).status = "RUNNING"
    db.commit()
    error = testapp.patch_json(f"/v1/campaigns/{second['id']}", {"name": "x"}, headers=vendor.headers,
                               status=409).json["error"]
    assert error["code"] == "campaign_not_draft" and error["details"]["status"] == "RUNNING"
    testapp.delete(f"/v1/campaigns/{second['id']}", headers=vendor.headers, status=409)


def test_another_vendors_campaign_is_not_found_on_every_route(testapp, world, vendor):
    campaign = testapp.post_json("/v1/campaigns", vendor.draft(), headers=vendor.headers).json["campaign"]
    intruder = world.vendor("Intruder")
    url = f"/v1/campaigns/{campaign['id']}"
    testapp.get(url, headers=intruder.headers, status=404)
    testapp.patch_json(url, {"name": "mine"}, headers=intruder.headers, status=404)
    testapp.delete(url, headers=intruder.headers, status=404)
    for action in ("quote", "launch", "pause", "resume", "cancel", "retry-failed"):
        testapp.post_json(f"{url}/{action}", {}, headers=intruder.headers, status=404)
    testapp.post_json(f"{url}/test-send", {"phone": "+12025550100"}, headers=intruder.headers, status=404)
    testapp.get(f"{url}/stats", headers=intruder.headers, status=404)
    testapp.get(f"{url}/recipients.csv", headers=intruder.headers, status=404)
    assert testapp.get("/v1/campaigns", headers=intruder.headers).json["items"] == []


def test_the_campaigns_api_is_404_for_a_vendor_without_the_plugin(testapp, world):
    without = world.vendor("No Campaigns", plugins=[p for p in PLUGINS if p != "campaigns"])
    error = testapp.get("/v1/campaigns", headers=without.headers, status=404).json["error"]
    assert error["code"] == "not_found"
    testapp.post_json("/v1/campaigns", without.draft(), headers=without.headers, status=404)


def test_the_schedule_is_cleared_with_null(testapp, vendor):
    start = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)).replace(microsecond=0)
    campaign = testapp.post_json("/v1/campaigns", vendor.draft(schedule={"start_at": start.isoformat()}),
                                 headers=vendor.headers).json["campaign"]
    assert campaign["schedule"]["start_at"] == start.isoformat()
    cleared = testapp.patch_json(f"/v1/campaigns/{campaign['id']}", {"schedule": None},
                                 headers=vendor.headers).json["campaign"]
    assert cleared["schedule"] is None
