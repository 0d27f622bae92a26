"""Registering, reading, changing and deleting a vendor's own WABA through /v1/wabas; its token stays secret."""

import logging

import pytest
import sqlalchemy as sa

from waba_support import TOKEN
from kloyst.accounts.models import Role
from kloyst.outbox.models import OutboxEvent
from kloyst.testing import route_walk
from kloyst_plugins.messages.models import MessageLog
from kloyst_plugins.waba.models import PhoneNumber, Waba
from kloyst_plugins.waba.tasks import SYNC_PHONE_NUMBERS


def test_a_registered_waba_says_it_has_a_token_and_never_shows_it(testapp, vendor, add_waba):
    created = testapp.post_json("/v1/wabas", {"meta_waba_id": "1001", "name": "Main", "access_token": TOKEN,
                                              "business_id": "555"}, headers=vendor.headers, status=201)
    waba = created.json["waba"]
    assert waba["meta_waba_id"] == "1001" and waba["name"] == "Main" and waba["business_id"] == "555"
    assert waba["has_access_token"] is True
    assert created.json["sync"] == "queued"
    responses = [created,
                 testapp.get("/v1/wabas", headers=vendor.headers),
                 testapp.get(f"/v1/wabas/{waba['id']}", headers=vendor.headers),
                 testapp.patch_json(f"/v1/wabas/{waba['id']}", {"name": "Renamed"}, headers=vendor.headers)]
    for response in responses:
        assert TOKEN not in response.text
        assert "access_token" not in response.text.replace("has_access_token", "")


@pytest.mark.parametrize("token", ["EAA tok", "EAAtoką", "EAA\u00a0x"])
def test_a_token_that_cannot_travel_in_a_header_is_a_422(testapp, vendor, add_waba, token):
    answer = testapp.post_json("/v1/wabas", {"meta_waba_id": "1001", "name": "Main", "access_token": token},
                               headers=vendor.headers, status=422).json
    assert answer["error"]["details"]["fields"][0]["field"] == "access_token"


def test_the_token_is_encrypted_at_rest(db, vendor, add_waba):
    waba = add_waba(vendor, "1002")
    raw = db.execute(sa.text("SELECT access_token_enc FROM waba WHERE id = :id"), {"id": waba["id"]}).scalar_one()
    assert TOKEN.encode() not in bytes(raw)


def test_the_token_is_in_no_log_line_and_no_queued_task(caplog, db, vendor, add_waba, sandbox_numbers, testapp):
    caplog.set_level(logging.DEBUG)
    sandbox_numbers("1003", 2)
    waba = add_waba(vendor, "1003")
    testapp.patch_json(f"/v1/wabas/{waba['id']}", {"access_token": TOKEN + "-new"}, headers=vendor.headers)
    testapp.post(f"/v1/wabas/{waba['id']}/sync", headers=vendor.headers, status=202)
    assert caplog.records
    for record in caplog.records:
        assert TOKEN not in record.getMessage() and TOKEN not in str(record.__dict__)
    payloads = db.scalars(sa.select(OutboxEvent.payload)).all()
    assert payloads and all(TOKEN not in str(p) for p in payloads)


def test_creating_a_waba_queues_its_sync_only_after_commit(testapp, vendor, task_recorder):
    testapp.post_json("/v1/wabas", {"meta_waba_id": "1004", "name": "A", "access_token": TOKEN},
                      headers=vendor.headers, status=201)
    assert [name for name, _ in task_recorder] == [SYNC_PHONE_NUMBERS]
    testapp.post_json("/v1/wabas", {"meta_waba_id": "1004", "name": "B", "access_token": TOKEN},
                      headers=vendor.headers, status=409)
    assert len(task_recorder) == 1  # the refused registration rolled back, and its task with it


def test_registering_the_same_waba_twice_is_409_naming_the_first(vendor, add_waba):
    first = add_waba(vendor, "1005")
    error = add_waba(vendor, "1005", status=409)["error"]
    assert error["code"] == "waba_registered"
    assert first["id"] in error["message"] and error["details"]["waba_id"] == first["id"]


def test_another_vendors_waba_is_409_without_saying_whose(vendor, other_vendor, add_waba):
    first = add_waba(vendor, "1006")
    error = add_waba(other_vendor, "1006", status=409)["error"]
    assert error["code"] == "waba_registered"
    assert "another account" in error["message"]
    assert first["id"] not in str(error) and str(vendor.vendor_id) not in str(error)


@pytest.mark.parametrize(("body", "field"), [
    ({"meta_waba_id": "12ab", "name": "x", "access_token": "t"}, "meta_waba_id"),
    ({"meta_waba_id": "https://business.facebook.com/1", "name": "x", "access_token": "t"}, "meta_waba_id"),
    ({"meta_waba_id": "1", "name": "", "access_token": "t"}, "name"),
    ({"meta_waba_id": "1", "name": "x", "access_token": ""}, "access_token"),
    ({"meta_waba_id": "1", "name": "x", "access_token": "two words"}, "access_token"),
    ({"meta_waba_id": "1", "name": "x"}, "access_token"),
    ({"meta_waba_id": "1", "name": "x", "access_token": "t", "vendor_id": "00000000-0000-0000-0000-000000000000"},
     "vendor_id"),
])
def test_invalid_registrations_are_422_naming_the_field(testapp, vendor, body, field):
    error = testapp.post_json("/v1/wabas", body, headers=vendor.headers, status=422).json["error"]
    assert [f["field"] for f in error["details"]["fields"]] == [field]
    assert "two words" not in str(error)


def test_members_read_wabas_but_only_admins_change_them(testapp, accounts, vendor, add_waba):
    waba = add_waba(vendor, "1007")
    member = accounts.user(vendor.vendor, role=Role.MEMBER)
    testapp.get(f"/v1/wabas/{waba['id']}", headers=member.headers, status=200)
    testapp.post(f"/v1/wabas/{waba['id']}/sync", headers=member.headers, status=202)
    testapp.post_json("/v1/wabas", {"meta_waba_id": "1008", "name": "x", "access_token": "t"},
                      headers=member.headers, status=403)
    testapp.patch_json(f"/v1/wabas/{waba['id']}", {"name": "x"}, headers=member.headers, status=403)
    testapp.delete(f"/v1/wabas/{waba['id']}", headers=member.headers, status=403)


def test_replacing_the_token_stores_the_new_one_and_syncs_again(testapp, db, registry, vendor, add_waba,
                                                                task_recorder):
    from kloyst_plugins.waba import access

    waba = add_waba(vendor, "1009")
    answer = testapp.patch_json(f"/v1/wabas/{waba['id']}", {"access_token": "replacement-token"},
                                headers=vendor.headers).json
    assert answer["sync"] == "queued"
    assert [name for name, _ in task_recorder] == [SYNC_PHONE_NUMBERS, SYNC_PHONE_NUMBERS]
    row = db.get(Waba, waba["id"])
    db.refresh(row)
    assert access.waba_token(registry["kloyst.cipher"], row) == "replacement-token"
    renamed = testapp.patch_json(f"/v1/wabas/{waba['id']}", {"name": "Only a name"}, headers=vendor.headers).json
    assert "sync" not in renamed and renamed["waba"]["name"] == "Only a name"
    assert len(task_recorder) == 2


def test_wabas_are_listed_newest_first_with_a_cursor(testapp, vendor, add_waba):
    ids = [add_waba(vendor, f"20{i}")["id"] for i in range(3)]
    first = testapp.get("/v1/wabas?limit=2", headers=vendor.headers).json
    second = testapp.get(f"/v1/wabas?limit=2&cursor={first['next_cursor']}", headers=vendor.headers).json
    assert [w["id"] for w in first["items"] + second["items"]] == ids[::-1]
    assert second["next_cursor"] is None


def test_deleting_a_waba_removes_it_and_its_numbers(testapp, db, vendor, add_waba, sandbox_numbers, run_outbox):
    sandbox_numbers("1010", 2)
    waba = add_waba(vendor, "1010")
    run_outbox()
    assert db.scalar(sa.select(sa.func.count()).select_from(PhoneNumber).where(PhoneNumber.waba_id == waba["id"])) == 2
    testapp.delete(f"/v1/wabas/{waba['id']}", headers=vendor.headers, status=204)
    testapp.get(f"/v1/wabas/{waba['id']}", headers=vendor.headers, status=404)
    db.expire_all()
    assert db.scalar(sa.select(sa.func.count()).select_from(PhoneNumber).where(PhoneNumber.waba_id == waba["id"])) == 0


def test_a_waba_whose_numbers_have_messages_cannot_be_deleted(testapp, db, vendor, add_waba, sandbox_numbers,
                                                              run_outbox):
    sandbox_numbers("1011", 1)
    waba = add_waba(vendor, "1011")
    run_outbox()
    number = db.scalars(sa.select(PhoneNumber).where(PhoneNumber.waba_id == waba["id"])).one()
    message = route_walk.make_row(db, MessageLog, vendor.vendor_id, vendor.user.id)
    message.phone_number_id = number.id
    db.commit()
    error = testapp.delete(f"/v1/wabas/{waba['id']}", headers=vendor.headers, status=409).json["error"]
    assert error["code"] == "waba_has_history"
    testapp.get(f"/v1/wabas/{waba['id']}", headers=vendor.headers, status=200)


def test_another_vendor_cannot_see_or_touch_a_waba(testapp, vendor, other_vendor, add_waba):
    waba = add_waba(vendor, "1012")
    path = f"/v1/wabas/{waba['id']}"
    testapp.get(path, headers=other_vendor.headers, status=404)
    testapp.patch_json(path, {"name": "mine now", "access_token": "theirs"}, headers=other_vendor.headers,
                       status=404)
    testapp.post(f"{path}/sync", headers=other_vendor.headers, status=404)
    testapp.delete(path, headers=other_vendor.headers, status=404)
    assert testapp.get("/v1/wabas", headers=other_vendor.headers).json["items"] == []
    assert testapp.get(path, headers=vendor.headers).json["waba"]["name"] == "WABA 1012"


def test_the_api_is_404_for_a_vendor_without_the_plugin(testapp, accounts):
    outsider = accounts.vendor("No Waba")
    testapp.get("/v1/wabas", headers=outsider.headers, status=404)
    testapp.get("/v1/phone-numbers", headers=outsider.headers, status=404)
