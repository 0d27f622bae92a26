"""Meta webhooks: which vendor a change belongs to (kloyst_webhook_vendors) and what quality updates change."""

import pytest
import sqlalchemy as sa

from kloyst.db import utcnow
from kloyst.webhooks import WebhookChange
from kloyst_plugins.waba import webhooks
from kloyst_plugins.waba.models import THROUGHPUT_HIGH, PhoneNumber, SharedPhoneNumber
from kloyst_plugins.waba.tasks import SYNC_PHONE_NUMBERS
from waba_support import SHARED_TOKEN


def change(field, value, meta_waba_id, meta_phone_number_id=None):
    return WebhookChange(field=field, value=value, meta_waba_id=meta_waba_id,
                         meta_phone_number_id=meta_phone_number_id, delivery_id=1, received_at=utcnow())


def quality(meta_waba_id, display, event, **extra):
    return change("phone_number_quality_update", {"display_phone_number": display, "event": event, **extra},
                  meta_waba_id)


@pytest.fixture
def synced(testapp, vendor, add_waba, sandbox_numbers, run_outbox):
    """Vendor A's WABA 5000 with one synced number; returns the number's JSON."""
    sandbox_numbers("5000", 1)
    add_waba(vendor, "5000")
    run_outbox()
    return testapp.get("/v1/phone-numbers", headers=vendor.headers).json["items"][0]


@pytest.fixture
def shared_assigned(testapp, admin, vendor, other_vendor, sandbox_numbers, run_outbox):
    """Shared WABA 5100 with three numbers: one assigned to each vendor, one free. Returns the sandbox numbers."""
    numbers = sandbox_numbers("5100", 3)
    testapp.post_json("/v1/admin/shared-wabas", {"meta_waba_id": "5100", "name": "Platform",
                                                 "access_token": SHARED_TOKEN}, headers=admin.headers)
    run_outbox()
    rows = {n["meta_phone_number_id"]: n for n in testapp.get("/v1/admin/shared-phone-numbers",
                                                              headers=admin.headers).json["items"]}
    for meta_number, account in zip(numbers, (vendor, other_vendor)):
        testapp.post_json(f"/v1/admin/shared-phone-numbers/{rows[meta_number.id]['id']}/assign",
                          {"vendor_id": str(account.vendor_id)}, headers=admin.headers)
    return numbers


def _vendors(registry, db, meta_waba_id, meta_phone_number_id=None):
    answers = registry["kloyst.plugin_manager"].hook.kloyst_webhook_vendors(
        meta_waba_id=meta_waba_id, meta_phone_number_id=meta_phone_number_id, db=db)
    return sorted({vendor_id for answer in answers for vendor_id in answer}, key=str)


def _number(db, number_id) -> PhoneNumber:
    db.expire_all()
    return db.get(PhoneNumber, number_id)


def test_a_change_naming_a_number_goes_to_its_holder(registry, db, vendor, synced):
    assert _vendors(registry, db, "5000", synced["meta_phone_number_id"]) == [vendor.vendor_id]
    assert _vendors(registry, db, "anything", synced["meta_phone_number_id"]) == [vendor.vendor_id]


def test_a_change_naming_only_a_waba_goes_to_its_owner(registry, db, vendor, synced):
    assert _vendors(registry, db, "5000") == [vendor.vendor_id]


def test_a_change_naming_a_number_no_vendor_holds_goes_nowhere_even_on_a_known_waba(registry, db, vendor, synced):
    assert _vendors(registry, db, "5000", "999999") == []  # not the owner's: Kloyst sent nothing through it


def test_a_change_of_an_unknown_waba_goes_nowhere(registry, db, synced):
    assert _vendors(registry, db, "5999") == []
    assert _vendors(registry, db, "5999", "999999") == []


def test_a_shared_waba_change_goes_to_every_vendor_holding_one_of_its_numbers(registry, db, vendor, other_vendor,
                                                                              shared_assigned):
    mine, theirs, free = shared_assigned
    assert _vendors(registry, db, "5100") == sorted([vendor.vendor_id, other_vendor.vendor_id], key=str)
    assert _vendors(registry, db, "5100", mine.id) == [vendor.vendor_id]
    assert _vendors(registry, db, "5100", theirs.id) == [other_vendor.vendor_id]
    assert _vendors(registry, db, "5100", free.id) == []  # nobody's traffic is handed to everybody


def test_an_unassigned_numbers_changes_still_reach_the_vendor_with_its_history(testapp, registry, db, admin, vendor,
                                                                               other_vendor, shared_assigned):
    mine = shared_assigned[0]
    row = db.scalars(sa.select(SharedPhoneNumber).where(SharedPhoneNumber.meta_phone_number_id == mine.id)).one()
    testapp.post(f"/v1/admin/shared-phone-numbers/{row.id}/unassign", headers=admin.headers)
    assert _vendors(registry, db, "5100", mine.id) == [vendor.vendor_id]
    assert _vendors(registry, db, "5100") == [other_vendor.vendor_id]


def test_flagged_turns_the_number_red_and_records_the_limit(db, vendor, synced, vendor_context):
    with vendor_context(vendor.vendor_id) as ctx:
        webhooks.apply_changes([quality("5000", "".join(filter(str.isdigit, synced["display_phone_number"])),
                                        "FLAGGED", current_limit="TIER_10K")], ctx)
    number = _number(db, synced["id"])
    assert (number.quality_rating, number.messaging_limit_tier) == ("RED", "TIER_10K")


@pytest.mark.parametrize(("event", "extra", "expected"), [
    ("UNFLAGGED", {}, {"quality_rating": "YELLOW"}),
    ("UPGRADE", {"old_limit": "TIER_1K", "current_limit": "TIER_100K"}, {"messaging_limit_tier": "TIER_100K"}),
    ("DOWNGRADE", {"max_daily_conversation_per_phone": 1000}, {"messaging_limit_tier": "TIER_1K"}),
    ("THROUGHPUT_UPGRADE", {}, {"throughput_mps": THROUGHPUT_HIGH}),
    ("SOMETHING_NEW", {"current_limit": "TIER_UNLIMITED"}, {"messaging_limit_tier": "TIER_UNLIMITED"}),
])
def test_quality_events_map_as_the_table_says(db, vendor, synced, vendor_context, event, extra, expected):
    before = _number(db, synced["id"])
    untouched = {key: getattr(before, key) for key in ("quality_rating", "messaging_limit_tier", "throughput_mps")
                 if key not in expected}
    with vendor_context(vendor.vendor_id) as ctx:
        webhooks.apply_changes([quality("5000", synced["display_phone_number"], event, **extra)], ctx)
    number = _number(db, synced["id"])
    assert {key: getattr(number, key) for key in expected} == expected
    assert {key: getattr(number, key) for key in untouched} == untouched


def test_a_quality_update_is_matched_by_meta_id_when_it_has_one(db, vendor, synced, vendor_context):
    with vendor_context(vendor.vendor_id) as ctx:
        webhooks.apply_changes([change("phone_number_quality_update", {"event": "FLAGGED"}, "5000",
                                       synced["meta_phone_number_id"])], ctx)
    assert _number(db, synced["id"]).quality_rating == "RED"


def test_applying_the_same_update_twice_changes_nothing_more(db, vendor, synced, vendor_context):
    update = quality("5000", synced["display_phone_number"], "FLAGGED", current_limit="TIER_1K")
    for _ in range(2):
        with vendor_context(vendor.vendor_id) as ctx:
            webhooks.apply_changes([update, update], ctx)
    number = _number(db, synced["id"])
    assert (number.quality_rating, number.messaging_limit_tier) == ("RED", "TIER_1K")


def test_a_vendor_never_updates_a_number_it_does_not_hold(db, vendor, other_vendor, synced, vendor_context):
    with vendor_context(other_vendor.vendor_id) as ctx:
        webhooks.apply_changes([quality("5000", synced["display_phone_number"], "FLAGGED"),
                                change("phone_number_quality_update", {"event": "FLAGGED"}, "5000",
                                       synced["meta_phone_number_id"])], ctx)
    assert _number(db, synced["id"]).quality_rating != "RED"


def test_a_shared_numbers_update_reaches_the_vendor_copy_and_the_platform_row(db, vendor, other_vendor,
                                                                            shared_assigned, vendor_context):
    mine, theirs, _ = shared_assigned
    for account in (vendor, other_vendor):  # the drainer gives the change to both holders of 5100's numbers
        with vendor_context(account.vendor_id) as ctx:
            webhooks.apply_changes([quality("5100", mine.display_phone_number, "FLAGGED")], ctx)
    db.expire_all()
    ratings = {n.meta_phone_number_id: n.quality_rating for n in db.scalars(sa.select(PhoneNumber))}
    assert ratings[mine.id] == "RED" and ratings[theirs.id] != "RED"
    platform = db.scalars(sa.select(SharedPhoneNumber).where(SharedPhoneNumber.meta_phone_number_id == mine.id)).one()
    assert platform.quality_rating == "RED"


def test_an_account_update_queues_one_sync_of_the_vendors_waba(db, vendor, synced, vendor_context, task_recorder):
    update = change("account_update", {"event": "ACCOUNT_RESTRICTION"}, "5000")
    with vendor_context(vendor.vendor_id) as ctx:
        webhooks.apply_changes([update, update, change("messages", {}, "5000", synced["meta_phone_number_id"])], ctx)
    assert [name for name, _ in task_recorder] == [SYNC_PHONE_NUMBERS]
    assert task_recorder[0][1]["waba_id"] == db.get(PhoneNumber, synced["id"]).waba_id


def test_the_plugin_hook_delegates_to_the_webhook_module(registry, db, vendor, synced, vendor_context):
    hook = registry["kloyst.plugin_manager"].for_plugins("kloyst_webhook_changes", ["waba"])
    with vendor_context(vendor.vendor_id) as ctx:
        hook(changes=[quality("5000", synced["display_phone_number"], "FLAGGED")], ctx=ctx)
    assert _number(db, synced["id"]).quality_rating == "RED"
