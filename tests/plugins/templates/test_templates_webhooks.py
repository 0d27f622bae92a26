"""Meta's template webhooks move the vendor's copy: status, category, quality; idempotent, scoped, forgiving."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from templates_support import WABA_ID, body_component, task_context

from kloyst.webhooks import WebhookChange
from kloyst_plugins.templates import plugin

NOW = dt.datetime(2026, 11, 22, tzinfo=dt.timezone.utc)


def change(field: str, value: dict, *, waba: str = WABA_ID) -> WebhookChange:
    return WebhookChange(field=field, value=value, meta_waba_id=waba, meta_phone_number_id=None, delivery_id=1,
                         received_at=NOW)


def status_event(template, event: str, **extra) -> WebhookChange:
    return change("message_template_status_update", {
        "event": event, "message_template_id": int(template.meta_template_id),
        "message_template_name": template.name, "message_template_language": template.language, **extra})


@pytest.fixture
def deliver(registry, db):
    """``deliver(account, *changes)`` runs the plugin's hook as the webhook drainer does, in the vendor's scope."""

    def run(account, *changes):
        with task_context(registry, account.vendor_id) as ctx:
            plugin.kloyst_webhook_changes(changes=list(changes), ctx=ctx)
        db.expire_all()

    return run


@pytest.fixture
def pending(vendor, stored_template):
    return stored_template(vendor, "order_ready", [body_component("Hi {{1}}")], status="PENDING",
                           meta_template_id="900000000000123")


def test_approval_makes_the_template_approved(deliver, vendor, pending):
    deliver(vendor, status_event(pending, "APPROVED", reason="NONE"))
    assert pending.status == "APPROVED" and pending.rejected_reason is None


def test_rejection_keeps_metas_reason(deliver, vendor, pending):
    deliver(vendor, status_event(pending, "REJECTED", reason="INVALID_FORMAT"))
    assert pending.status == "REJECTED" and pending.rejected_reason == "INVALID_FORMAT"
    deliver(vendor, status_event(pending, "REJECTED", reason="NONE",
                                 rejection_info={"reason": "TAG_CONTENT_MISMATCH", "recommendation": "…"}))
    assert pending.rejected_reason == "TAG_CONTENT_MISMATCH"


@pytest.mark.parametrize(("event", "status"), [("PAUSED", "PAUSED"), ("DISABLED", "DISABLED"),
                                               ("PENDING_DELETION", "PENDING_DELETION"), ("REINSTATED", "APPROVED")])
def test_status_events_set_the_status(deliver, vendor, pending, event, status):
    deliver(vendor, status_event(pending, event))
    assert pending.status == status


@pytest.mark.parametrize("event", ["FLAGGED", "LOCKED", "UNARCHIVED", "SOMETHING_NEW"])
def test_events_that_are_not_review_states_leave_the_status(deliver, vendor, pending, event):
    deliver(vendor, status_event(pending, event))
    assert pending.status == "PENDING"


def test_a_redelivered_change_changes_nothing_more(deliver, vendor, pending):
    approved = status_event(pending, "APPROVED")
    deliver(vendor, approved)
    updated_at = pending.updated_at
    deliver(vendor, approved)
    assert pending.status == "APPROVED" and pending.updated_at == updated_at


def test_changes_apply_in_metas_order(deliver, vendor, pending):
    deliver(vendor, status_event(pending, "APPROVED"), status_event(pending, "PAUSED"))
    assert pending.status == "PAUSED"


def test_a_category_update_sets_the_new_category(deliver, vendor, pending):
    deliver(vendor, change("template_category_update", {"message_template_id": pending.meta_template_id,
                                                        "previous_category": "UTILITY", "new_category": "MARKETING"}))
    assert pending.category == "MARKETING"
    deliver(vendor, change("template_category_update", {"message_template_id": pending.meta_template_id,
                                                        "correct_category": "UTILITY"}))
    assert pending.category == "UTILITY"


def test_a_quality_update_sets_the_score(deliver, vendor, pending):
    deliver(vendor, change("message_template_quality_update", {
        "message_template_id": int(pending.meta_template_id), "previous_quality_score": "GREEN",
        "new_quality_score": "YELLOW"}))
    assert pending.quality_score == "YELLOW"


def test_an_unknown_template_is_ignored(deliver, vendor, pending, caplog):
    deliver(vendor, change("message_template_status_update", {"event": "APPROVED", "message_template_id": 1}),
            change("message_template_status_update", {"event": "APPROVED"}))
    assert pending.status == "PENDING"
    assert "which this vendor has not synced" in caplog.text


def test_the_same_meta_id_in_another_waba_is_not_this_template(deliver, vendor, pending):
    deliver(vendor, dataclasses.replace(status_event(pending, "APPROVED"), meta_waba_id="777"))
    assert pending.status == "PENDING"


def test_another_vendors_copy_is_out_of_reach(deliver, vendor, pending, accounts, enable_plugin, stored_template):
    other = accounts.vendor("Other")
    enable_plugin(other, "waba")
    enable_plugin(other, "templates")
    theirs = stored_template(other, "order_ready", [body_component("Hi")], status="PENDING",
                             meta_template_id=pending.meta_template_id)
    deliver(other, status_event(theirs, "REJECTED", reason="SCAM"))
    assert theirs.status == "REJECTED"
    assert pending.status == "PENDING"


def test_fields_of_other_plugins_are_left_alone(deliver, vendor, pending):
    deliver(vendor, change("messages", {"statuses": [{"id": pending.meta_template_id, "status": "APPROVED"}]}),
            change("phone_number_quality_update", {"event": "FLAGGED"}))
    assert pending.status == "PENDING"
