"""Phone-number sync from the Meta sandbox, and the vendor's /v1/phone-numbers API."""

import sqlalchemy as sa

from kloyst.meta.client import MetaClient
from kloyst.outbox.models import OutboxEvent
from kloyst_plugins.waba.models import THROUGHPUT_HIGH, THROUGHPUT_STANDARD, PhoneNumber, Waba
from kloyst_plugins.waba.sync import number_fields
from waba_support import TOKEN


def _numbers(testapp, account, **query):
    return testapp.get("/v1/phone-numbers", params=query, headers=account.headers).json["items"]


def _waba(db, waba_id) -> Waba:
    db.expire_all()
    return db.get(Waba, waba_id)


def test_sync_maps_metas_numbers_onto_the_vendors_numbers(testapp, vendor, add_waba, sandbox_numbers, run_outbox):
    high, standard = sandbox_numbers("3001", 1, throughput=1000, verified_name="Acme Support",
                                     quality_rating="YELLOW")[0], sandbox_numbers("3001", 1)[0]
    waba = add_waba(vendor, "3001")
    run_outbox()
    numbers = {n["meta_phone_number_id"]: n for n in _numbers(testapp, vendor)}
    assert set(numbers) == {high.id, standard.id}
    first = numbers[high.id]
    assert first["waba_id"] == waba["id"] and first["shared"] is False
    assert first["display_phone_number"] == high.display_phone_number
    assert first["verified_name"] == "Acme Support" and first["quality_rating"] == "YELLOW"
    assert first["status"] == "CONNECTED" and first["throughput_mps"] == THROUGHPUT_HIGH
    assert first["last_synced_at"] is not None
    assert numbers[standard.id]["throughput_mps"] == THROUGHPUT_STANDARD
    synced = testapp.get(f"/v1/wabas/{waba['id']}", headers=vendor.headers).json["waba"]
    assert synced["last_synced_at"] is not None and synced["last_sync_error"] is None


def test_registering_says_the_numbers_sync_in_the_background_and_where_to_poll(testapp, vendor, sandbox_numbers,
                                                                               task_recorder, run_outbox):
    sandbox_numbers("3020", 2)
    created = testapp.post_json("/v1/wabas", {"meta_waba_id": "3020", "name": "Main", "access_token": TOKEN},
                                headers=vendor.headers, status=201)
    waba = created.json["waba"]
    assert created.json["sync"] == "queued" and waba["sync_status"] == "queued"
    assert created.headers["Location"].endswith(f"/v1/wabas/{waba['id']}")
    assert f"GET /v1/wabas/{waba['id']}" in created.json["next"] and "sync_status" in created.json["next"]
    assert _numbers(testapp, vendor) == []  # nothing yet: the sync has not run

    run_outbox()
    polled = testapp.get(created.headers["Location"], headers=vendor.headers).json["waba"]
    assert polled["sync_status"] == "synced"
    assert len(_numbers(testapp, vendor, waba_id=waba["id"])) == 2


def test_a_sync_asked_for_again_shows_queued_until_it_has_run(testapp, vendor, add_waba, sandbox_numbers, task_recorder,
                                                              run_outbox):
    sandbox_numbers("3021", 1)
    waba = add_waba(vendor, "3021")
    run_outbox()
    answer = testapp.post(f"/v1/wabas/{waba['id']}/sync", headers=vendor.headers, status=202)
    assert answer.headers["Location"].endswith(f"/v1/wabas/{waba['id']}")
    assert testapp.get(f"/v1/wabas/{waba['id']}", headers=vendor.headers).json["waba"]["sync_status"] == "queued"
    run_outbox()
    assert testapp.get(f"/v1/wabas/{waba['id']}", headers=vendor.headers).json["waba"]["sync_status"] == "synced"


def test_meta_fields_map_explicitly():
    assert number_fields({"id": "1", "display_phone_number": "+1 555", "verified_name": "V", "quality_rating": "NA",
                          "status": "connected", "throughput": {"level": "HIGH"},
                          "messaging_limit_tier": "TIER_10K"}) == {
        "display_phone_number": "+1 555", "verified_name": "V", "quality_rating": "UNKNOWN", "status": "CONNECTED",
        "throughput_mps": THROUGHPUT_HIGH, "messaging_limit_tier": "TIER_10K"}
    assert number_fields({"id": "1", "quality_rating": "PURPLE"}) == {"quality_rating": "UNKNOWN",
                                                                     "throughput_mps": THROUGHPUT_STANDARD}


def test_sync_follows_every_page(testapp, vendor, add_waba, sandbox_numbers, run_outbox):
    listed = sandbox_numbers("3002", 130)  # the client asks for 100 a page
    add_waba(vendor, "3002")
    run_outbox()
    seen, cursor = [], None
    while True:
        page = testapp.get("/v1/phone-numbers", params={"limit": 200, **({"cursor": cursor} if cursor else {})},
                           headers=vendor.headers).json
        seen += [n["meta_phone_number_id"] for n in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(n.id for n in listed)


def test_a_number_meta_no_longer_lists_is_kept_as_deleted_and_comes_back(testapp, vendor, add_waba, sandbox_numbers,
                                                                          meta_sandbox, run_outbox):
    kept, gone = sandbox_numbers("3003", 2)
    waba = add_waba(vendor, "3003")
    run_outbox()
    removed = meta_sandbox.state.numbers.pop(gone.id)
    testapp.post(f"/v1/wabas/{waba['id']}/sync", headers=vendor.headers, status=202)
    run_outbox()
    statuses = {n["meta_phone_number_id"]: n["status"] for n in _numbers(testapp, vendor)}
    assert statuses == {kept.id: "CONNECTED", gone.id: "DELETED"}
    assert [n["meta_phone_number_id"] for n in _numbers(testapp, vendor, status="deleted")] == [gone.id]
    meta_sandbox.state.add_number(removed)
    testapp.post(f"/v1/wabas/{waba['id']}/sync", headers=vendor.headers, status=202)
    run_outbox()
    assert {n["status"] for n in _numbers(testapp, vendor)} == {"CONNECTED"}


def test_a_second_sync_updates_in_place(testapp, db, vendor, add_waba, sandbox_numbers, meta_sandbox, run_outbox):
    number = sandbox_numbers("3004", 1)[0]
    waba = add_waba(vendor, "3004")
    run_outbox()
    before = _numbers(testapp, vendor)
    number.quality_rating, number.throughput = "RED", 1000
    testapp.post(f"/v1/wabas/{waba['id']}/sync", headers=vendor.headers, status=202)
    run_outbox()
    after = _numbers(testapp, vendor)
    assert [n["id"] for n in after] == [n["id"] for n in before]
    assert after[0]["quality_rating"] == "RED" and after[0]["throughput_mps"] == THROUGHPUT_HIGH


def test_a_number_held_by_another_vendor_is_never_taken_over(testapp, db, vendor, other_vendor, add_waba,
                                                             sandbox_numbers, run_outbox):
    number = sandbox_numbers("3005", 1)[0]
    add_waba(vendor, "3005")
    run_outbox()
    held = _numbers(testapp, vendor)[0]
    number.waba_id = "3006"  # Meta now lists A's number under B's WABA
    theirs = sandbox_numbers("3006", 1)[0]
    waba_b = add_waba(other_vendor, "3006")
    run_outbox()
    assert [n["meta_phone_number_id"] for n in _numbers(testapp, other_vendor)] == [theirs.id]
    assert _numbers(testapp, vendor) == [held]
    error = testapp.get(f"/v1/wabas/{waba_b['id']}", headers=other_vendor.headers).json["waba"]["last_sync_error"]
    assert number.id in error and "held by another account" in error
    testapp.get(f"/v1/phone-numbers/{held['id']}", headers=other_vendor.headers, status=404)


def test_a_number_moving_between_a_vendors_own_wabas_follows_the_waba(testapp, vendor, add_waba, sandbox_numbers,
                                                                      meta_sandbox, run_outbox):
    number = sandbox_numbers("3007", 1)[0]
    add_waba(vendor, "3007")
    run_outbox()
    row_id = _numbers(testapp, vendor)[0]["id"]
    number.waba_id = "3008"
    meta_sandbox.state.templates.setdefault("3008", [])  # the sandbox knows WABA 3008 now
    second = add_waba(vendor, "3008")
    run_outbox()
    moved = testapp.get(f"/v1/phone-numbers/{row_id}", headers=vendor.headers).json["phone_number"]
    assert moved["waba_id"] == second["id"]
    assert [n["id"] for n in _numbers(testapp, vendor, waba_id=second["id"])] == [row_id]


def test_a_rejected_token_is_recorded_once_without_retrying_or_leaking(testapp, db, vendor, add_waba,
                                                                        sandbox_numbers, meta_sandbox, run_outbox):
    sandbox_numbers("3009", 1)
    meta_sandbox.state.behaviour.access_token = "the-only-valid-token"
    waba = add_waba(vendor, "3009")
    run_outbox()
    error = _waba(db, waba["id"]).last_sync_error
    assert error.startswith("auth:") and "190" in error and TOKEN not in error
    events = db.scalars(sa.select(OutboxEvent).where(OutboxEvent.topic == "kloyst.task")).all()
    assert [e.status for e in events] == ["delivered"]
    assert _numbers(testapp, vendor) == []


def test_a_waba_meta_does_not_know_is_a_permanent_error(db, vendor, add_waba, meta_sandbox, run_outbox):
    waba = add_waba(vendor, "3010")
    run_outbox()
    row = _waba(db, waba["id"])
    assert row.last_sync_error.startswith("permanent:") and "3010" in row.last_sync_error
    assert row.sync_status == "failed"


def test_fixing_the_token_clears_the_error(testapp, db, vendor, add_waba, sandbox_numbers, meta_sandbox,
                                           run_outbox):
    sandbox_numbers("3011", 1)
    meta_sandbox.state.behaviour.access_token = "good-token"
    waba = add_waba(vendor, "3011", token="bad-token")
    run_outbox()
    assert _waba(db, waba["id"]).last_sync_error
    assert _waba(db, waba["id"]).sync_status == "failed"
    patched = testapp.patch_json(f"/v1/wabas/{waba['id']}", {"access_token": "good-token"}, headers=vendor.headers)
    assert patched.json["waba"]["sync_status"] == "queued"
    run_outbox()
    assert _waba(db, waba["id"]).last_sync_error is None
    assert _waba(db, waba["id"]).sync_status == "synced"
    assert len(_numbers(testapp, vendor)) == 1


def test_an_unreachable_meta_is_retried_later_not_recorded(db, registry, monkeypatch, vendor, add_waba,
                                                           task_recorder, run_outbox):
    waba = add_waba(vendor, "3012")
    settings = registry.settings
    monkeypatch.setitem(registry, "kloyst.meta", MetaClient("http://127.0.0.1:9", settings["kloyst.meta.graph_version"],
                                                            timeout=2))
    run_outbox()
    event = db.scalars(sa.select(OutboxEvent).where(OutboxEvent.topic == "kloyst.task")).one()
    db.refresh(event)
    assert event.status == "pending" and event.failures == 1
    assert "network" in event.last_error and TOKEN not in event.last_error
    row = _waba(db, waba["id"])
    assert row.last_sync_error is None and row.last_synced_at is None
    assert row.sync_status == "queued"  # it will run again


def test_a_sync_queued_before_its_waba_was_deleted_does_nothing(testapp, db, vendor, add_waba, task_recorder,
                                                                run_outbox):
    waba = add_waba(vendor, "3013")
    testapp.delete(f"/v1/wabas/{waba['id']}", headers=vendor.headers, status=204)
    run_outbox()
    assert [e.status for e in db.scalars(sa.select(OutboxEvent).where(OutboxEvent.topic == "kloyst.task"))] == [
        "delivered"]


def test_phone_numbers_filter_by_waba_and_status(testapp, vendor, add_waba, sandbox_numbers, run_outbox):
    sandbox_numbers("3014", 2)
    sandbox_numbers("3015", 1, status="PENDING")
    first = add_waba(vendor, "3014")
    second = add_waba(vendor, "3015")
    run_outbox()
    assert len(_numbers(testapp, vendor, waba_id=first["id"])) == 2
    assert [n["waba_id"] for n in _numbers(testapp, vendor, status="PENDING")] == [second["id"]]
    error = testapp.get("/v1/phone-numbers", params={"waba_id": "not-a-uuid"}, headers=vendor.headers,
                        status=422).json["error"]
    assert error["details"]["fields"][0]["field"] == "waba_id"


def test_a_phone_number_row_is_the_vendors_only(db, testapp, vendor, other_vendor, add_waba, sandbox_numbers,
                                                run_outbox):
    sandbox_numbers("3016", 1)
    add_waba(vendor, "3016")
    run_outbox()
    number_id = _numbers(testapp, vendor)[0]["id"]
    assert testapp.get(f"/v1/phone-numbers/{number_id}", headers=vendor.headers).json["phone_number"]["id"] == \
        number_id
    testapp.get(f"/v1/phone-numbers/{number_id}", headers=other_vendor.headers, status=404)
    assert _numbers(testapp, other_vendor) == []
    assert db.scalar(sa.select(sa.func.count()).select_from(PhoneNumber)) == 1
