"""The platform's shared WABA: admins register and sync it, and assign its numbers to vendors."""

import pytest
import sqlalchemy as sa

from kloyst.outbox.models import OutboxEvent
from kloyst.testing import route_walk
from kloyst_plugins.messages.models import MessageLog
from kloyst_plugins.waba import access
from kloyst_plugins.waba.models import PhoneNumber, SharedPhoneNumber, SharedWaba
from waba_support import SHARED_TOKEN, TOKEN

SHARED = "4000"


@pytest.fixture
def shared(testapp, admin, sandbox_numbers, run_outbox):
    """The shared WABA with two numbers in the sandbox, registered and synced; ``shared.numbers`` are the sandbox's."""
    numbers = sandbox_numbers(SHARED, 2)
    answer = testapp.post_json("/v1/admin/shared-wabas", {"meta_waba_id": SHARED, "name": "Platform",
                                                          "access_token": SHARED_TOKEN}, headers=admin.headers,
                               status=201).json
    run_outbox()
    answer["numbers"] = numbers
    return answer


def _shared_numbers(testapp, admin, **query):
    return testapp.get("/v1/admin/shared-phone-numbers", params=query, headers=admin.headers).json["items"]


def _shared_number(testapp, admin, meta_id):
    return next(n for n in _shared_numbers(testapp, admin) if n["meta_phone_number_id"] == meta_id)


def _assign(testapp, admin, number, account, status=200):
    return testapp.post_json(f"/v1/admin/shared-phone-numbers/{number['id']}/assign",
                             {"vendor_id": str(account.vendor_id)}, headers=admin.headers, status=status).json


def _unassign(testapp, admin, number, status=200):
    return testapp.post(f"/v1/admin/shared-phone-numbers/{number['id']}/unassign", headers=admin.headers,
                        status=status).json


def _vendor_numbers(testapp, account):
    return testapp.get("/v1/phone-numbers", headers=account.headers).json["items"]


def test_a_shared_waba_is_synced_into_the_platform_list(testapp, admin, shared):
    assert shared["shared_waba"]["has_access_token"] is True and SHARED_TOKEN not in str(shared)
    numbers = _shared_numbers(testapp, admin)
    assert sorted(n["meta_phone_number_id"] for n in numbers) == sorted(n.id for n in shared["numbers"])
    assert all(n["assigned_vendor_id"] is None and n["status"] == "CONNECTED" for n in numbers)
    listed = testapp.get("/v1/admin/shared-wabas", headers=admin.headers).json["items"]
    assert [w["id"] for w in listed] == [shared["shared_waba"]["id"]]
    assert listed[0]["last_synced_at"] is not None and SHARED_TOKEN not in str(listed)
    assert shared["shared_waba"]["sync_status"] == "queued" and listed[0]["sync_status"] == "synced"


def test_the_shared_token_is_encrypted_at_rest(db, shared):
    raw = db.execute(sa.text("SELECT access_token_enc FROM shared_waba")).scalar_one()
    assert SHARED_TOKEN.encode() not in bytes(raw)


def test_a_shared_waba_id_cannot_be_registered_by_a_vendor_or_twice(testapp, admin, vendor, add_waba, shared):
    assert "shared WABA" in add_waba(vendor, SHARED, status=409)["error"]["message"]
    add_waba(vendor, "4001")
    for meta_id in (SHARED, "4001"):
        testapp.post_json("/v1/admin/shared-wabas", {"meta_waba_id": meta_id, "name": "x", "access_token": "t"},
                          headers=admin.headers, status=409)


def test_assigning_gives_the_vendor_a_number_that_sends_with_the_platform_token(testapp, db, registry, admin,
                                                                               vendor, shared):
    number = _shared_numbers(testapp, admin)[0]
    answer = _assign(testapp, admin, number, vendor)
    assert answer["shared_phone_number"]["assigned_vendor_id"] == str(vendor.vendor_id)
    mine = _vendor_numbers(testapp, vendor)
    assert [n["meta_phone_number_id"] for n in mine] == [number["meta_phone_number_id"]]
    assert mine[0]["shared"] is True and mine[0]["waba_id"] is None
    assert mine[0]["shared_waba_id"] == shared["shared_waba"]["id"]
    row = db.get(PhoneNumber, mine[0]["id"])
    found = access.phone_number_access(db, registry["kloyst.cipher"], row)
    assert found.shared and found.meta_waba_id == SHARED and found.token == SHARED_TOKEN
    assert _shared_numbers(testapp, admin, assigned="true") == [answer["shared_phone_number"]]
    assert len(_shared_numbers(testapp, admin, assigned="false")) == 1


def test_an_assigned_number_cannot_be_assigned_again(testapp, admin, vendor, other_vendor, shared):
    number = _shared_numbers(testapp, admin)[0]
    _assign(testapp, admin, number, vendor)
    for account in (other_vendor, vendor):
        error = _assign(testapp, admin, number, account, status=409)["error"]
        assert error["code"] == "number_assigned"
    assert _vendor_numbers(testapp, other_vendor) == []


def test_assigning_to_a_vendor_that_does_not_exist_is_422(testapp, admin, shared):
    number = _shared_numbers(testapp, admin)[0]
    error = testapp.post_json(f"/v1/admin/shared-phone-numbers/{number['id']}/assign",
                              {"vendor_id": "00000000-0000-4000-8000-000000000000"}, headers=admin.headers,
                              status=422).json["error"]
    assert error["details"]["fields"][0]["field"] == "vendor_id"


def test_unassigning_keeps_the_vendors_row_and_reassigning_reactivates_it(testapp, admin, vendor, shared):
    number = _shared_numbers(testapp, admin)[0]
    row_id = _assign(testapp, admin, number, vendor)["phone_number"]["id"]
    answer = _unassign(testapp, admin, number)
    assert answer["shared_phone_number"]["assigned_vendor_id"] is None
    assert answer["phone_number"]["status"] == "UNASSIGNED"
    assert [(n["id"], n["status"]) for n in _vendor_numbers(testapp, vendor)] == [(row_id, "UNASSIGNED")]
    _unassign(testapp, admin, number, status=409)
    again = _assign(testapp, admin, number, vendor)["phone_number"]
    assert (again["id"], again["status"]) == (row_id, "CONNECTED")


def test_a_number_without_history_moves_to_another_vendor(testapp, admin, vendor, other_vendor, shared):
    number = _shared_numbers(testapp, admin)[0]
    _assign(testapp, admin, number, vendor)
    _unassign(testapp, admin, number)
    _assign(testapp, admin, number, other_vendor)
    assert _vendor_numbers(testapp, vendor) == []
    assert [n["meta_phone_number_id"] for n in _vendor_numbers(testapp, other_vendor)] == [
        number["meta_phone_number_id"]]


def test_a_number_with_history_stays_with_its_vendor(testapp, db, admin, vendor, other_vendor, shared):
    number = _shared_numbers(testapp, admin)[0]
    row_id = _assign(testapp, admin, number, vendor)["phone_number"]["id"]
    message = route_walk.make_row(db, MessageLog, vendor.vendor_id, vendor.user.id)
    message.phone_number_id = row_id
    db.commit()
    _unassign(testapp, admin, number)
    error = _assign(testapp, admin, number, other_vendor, status=409)["error"]
    assert error["code"] == "number_has_history"
    assert db.get(MessageLog, message.id) is not None
    assert row_id in [n["id"] for n in _vendor_numbers(testapp, vendor)]
    assert _assign(testapp, admin, number, vendor)["phone_number"]["id"] == row_id


def test_a_shared_sync_refreshes_the_assigned_copies_and_marks_dropped_numbers(testapp, admin, vendor, shared,
                                                                               meta_sandbox, run_outbox):
    kept, dropped = shared["numbers"]
    for meta_number in (kept, dropped):
        _assign(testapp, admin, _shared_number(testapp, admin, meta_number.id), vendor)
    kept.quality_rating, kept.throughput = "RED", 1000
    meta_sandbox.state.numbers.pop(dropped.id)
    testapp.post(f"/v1/admin/shared-wabas/{shared['shared_waba']['id']}/sync", headers=admin.headers, status=202)
    run_outbox()
    platform = {n["meta_phone_number_id"]: n for n in _shared_numbers(testapp, admin)}
    assert platform[dropped.id]["status"] == "DELETED"
    assert (platform[kept.id]["quality_rating"], platform[kept.id]["throughput_mps"]) == ("RED", 1000)
    mine = {n["meta_phone_number_id"]: n for n in _vendor_numbers(testapp, vendor)}
    assert mine[dropped.id]["status"] == "DELETED"
    assert (mine[kept.id]["quality_rating"], mine[kept.id]["throughput_mps"]) == ("RED", 1000)


def test_a_shared_sync_leaves_a_vendors_own_number_alone(testapp, db, admin, vendor, add_waba, sandbox_numbers,
                                                        run_outbox, meta_sandbox):
    own = sandbox_numbers("4002", 1)[0]
    add_waba(vendor, "4002")
    run_outbox()
    own.waba_id = SHARED
    meta_sandbox.state.templates.setdefault(SHARED, [])
    shared = testapp.post_json("/v1/admin/shared-wabas", {"meta_waba_id": SHARED, "name": "Platform",
                                                          "access_token": SHARED_TOKEN}, headers=admin.headers).json
    run_outbox()
    assert _shared_numbers(testapp, admin) == []
    assert own.id in db.get(SharedWaba, shared["shared_waba"]["id"]).last_sync_error
    assert db.scalar(sa.select(sa.func.count()).select_from(SharedPhoneNumber)) == 0


def test_admin_routes_are_for_platform_admins_only(testapp, accounts, vendor, shared):
    outsider = accounts.vendor("No Waba")
    number_id = shared["numbers"][0].id
    for account in (vendor, outsider):
        headers = account.headers
        testapp.get("/v1/admin/shared-wabas", headers=headers, status=403)
        testapp.post_json("/v1/admin/shared-wabas", {"meta_waba_id": "4100", "name": "x", "access_token": TOKEN},
                          headers=headers, status=403)
        testapp.get(f"/v1/admin/shared-wabas/{shared['shared_waba']['id']}", headers=headers, status=403)
        testapp.post(f"/v1/admin/shared-wabas/{shared['shared_waba']['id']}/sync", headers=headers, status=403)
        testapp.get("/v1/admin/shared-phone-numbers", headers=headers, status=403)
        testapp.post_json(f"/v1/admin/shared-phone-numbers/{number_id}/assign",
                          {"vendor_id": str(account.vendor_id)}, headers=headers, status=403)


def test_admins_rename_and_retoken_the_shared_waba(testapp, db, registry, admin, shared, task_recorder):
    path = f"/v1/admin/shared-wabas/{shared['shared_waba']['id']}"
    answer = testapp.patch_json(path, {"name": "Renamed", "access_token": "new-platform-token"},
                                headers=admin.headers).json
    assert answer["shared_waba"]["name"] == "Renamed" and answer["sync"] == "queued"
    assert "new-platform-token" not in str(answer)
    row = db.get(SharedWaba, shared["shared_waba"]["id"])
    db.refresh(row)
    assert access.shared_token(registry["kloyst.cipher"], row) == "new-platform-token"
    testapp.get(f"/v1/admin/shared-wabas/{'0' * 8}", headers=admin.headers, status=404)


def test_an_admin_sync_runs_platform_wide(db, testapp, admin, shared, task_recorder):
    testapp.post(f"/v1/admin/shared-wabas/{shared['shared_waba']['id']}/sync", headers=admin.headers, status=202)
    queued = db.scalars(sa.select(OutboxEvent).where(OutboxEvent.status == "pending")).all()
    assert [e.vendor_id for e in queued] == [None]
