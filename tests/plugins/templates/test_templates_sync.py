"""POST /v1/templates/sync: each WABA's templates copied from Meta, page after page; what Meta dropped is DELETED."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from templates_support import WABA_ID, body_component

from kloyst.db import tenancy
from kloyst.meta.errors import MetaError
from kloyst.outbox.models import OutboxEvent, OutboxStatus
from kloyst_plugins.templates import services
from kloyst_plugins.templates.models import MessageTemplate, TemplateSync
from kloyst_plugins.waba.access import encrypt_shared_token
from kloyst_plugins.waba.models import PhoneNumber, SharedWaba

URL = "/v1/templates"


def sync(testapp, account, status=202, **body):
    return testapp.post_json(f"{URL}/sync", body, headers=account.headers, status=status).json


def templates(testapp, account) -> dict[str, dict]:
    return {(t["name"], t["language"]): t for t in testapp.get(URL, {"limit": 200}, headers=account.headers).json[
        "items"]}


def sync_task_events(db) -> list[OutboxEvent]:
    db.expire_all()
    return [e for e in db.scalars(select(OutboxEvent).order_by(OutboxEvent.id))
            if e.payload.get("task") == "templates.sync"]


def test_the_sync_is_queued_per_waba_after_commit(testapp, vendor, task_recorder):
    assert sync(testapp, vendor) == {"queued": [WABA_ID], "already_queued": []}
    assert task_recorder == [("templates.sync", {"vendor_id": vendor.vendor_id, "meta_waba_id": WABA_ID})]


def test_every_page_of_metas_list_is_copied_with_its_variables(testapp, vendor, sandbox_template, monkeypatch):
    monkeypatch.setattr(services, "SYNC_PAGE_SIZE", 2)
    for n in range(4):
        sandbox_template(f"notice_{n}", [body_component(f"Notice {n}: {{{{1}}}}")], status="PENDING")
    named = sandbox_template("welcome", [{"type": "HEADER", "format": "TEXT", "text": "Hi {{first_name}}"},
                                         body_component("Welcome {{first_name}}, code {{code}}")],
                             language="pt_BR", category="MARKETING", parameter_format="NAMED")
    sync(testapp, vendor)
    found = templates(testapp, vendor)
    assert len(found) == 5
    assert {found[(f"notice_{n}", "en_US")]["status"] for n in range(4)} == {"PENDING"}
    welcome = found[("welcome", "pt_BR")]
    assert welcome["meta_template_id"] == named.id and welcome["category"] == "MARKETING"
    assert welcome["parameter_format"] == "NAMED"
    assert welcome["header_variables"] == ["first_name"] and welcome["body_variables"] == ["first_name", "code"]
    assert welcome["last_synced_at"] is not None
    state = testapp.get(f"{URL}/sync", headers=vendor.headers).json["items"]
    assert [(s["meta_waba_id"], s["template_count"], s["last_error"]) for s in state] == [(WABA_ID, 5, None)]


def test_a_second_sync_updates_in_place_and_marks_vanished_templates_deleted(testapp, vendor, sandbox_template,
                                                                            meta_sandbox):
    kept = sandbox_template("kept", [body_component("Hello")], status="PENDING")
    sandbox_template("dropped", [body_component("Bye")])
    sync(testapp, vendor)
    before = templates(testapp, vendor)
    kept.status = "APPROVED"
    kept.components = [body_component("Hello {{1}}")]
    meta_sandbox.state.templates[WABA_ID] = [kept]
    sync(testapp, vendor)
    after = templates(testapp, vendor)
    assert after[("kept", "en_US")]["id"] == before[("kept", "en_US")]["id"]
    assert after[("kept", "en_US")]["status"] == "APPROVED" and after[("kept", "en_US")]["body_variables"] == ["1"]
    assert after[("dropped", "en_US")]["id"] == before[("dropped", "en_US")]["id"]
    assert after[("dropped", "en_US")]["status"] == "DELETED"


def test_a_template_back_at_meta_is_restored_from_deleted(testapp, vendor, sandbox_template, meta_sandbox):
    template = sandbox_template("comeback", [body_component("Hi")])
    sync(testapp, vendor)
    meta_sandbox.state.templates[WABA_ID] = []
    sync(testapp, vendor)
    assert templates(testapp, vendor)[("comeback", "en_US")]["status"] == "DELETED"
    meta_sandbox.state.templates[WABA_ID] = [template]
    sync(testapp, vendor)
    assert templates(testapp, vendor)[("comeback", "en_US")]["status"] == "APPROVED"


def test_quality_score_and_rejection_reason_are_read_from_metas_listing():
    template = MessageTemplate(name="t", language="en", status="PENDING", category="UTILITY")
    services.apply_listing(template, {"id": "42", "status": "REJECTED", "category": "MARKETING",
                                      "components": [body_component("x")], "quality_score": {"score": "YELLOW",
                                                                                               "date": 1700000000},
                                      "rejected_reason": "INVALID_FORMAT"}, now=None)
    assert (template.meta_template_id, template.status, template.category) == ("42", "REJECTED", "MARKETING")
    assert template.quality_score == "YELLOW" and template.rejected_reason == "INVALID_FORMAT"
    assert template.parameter_format == "POSITIONAL"
    services.apply_listing(template, {"id": "42", "status": "APPROVED", "rejected_reason": "NONE"}, now=None)
    assert template.rejected_reason is None and template.quality_score == "YELLOW"


def test_a_waba_meta_does_not_know_is_recorded_and_not_retried(testapp, vendor, sandbox_template, meta_sandbox, db):
    sandbox_template("old", [body_component("Hi")])
    sync(testapp, vendor)
    del meta_sandbox.state.templates[WABA_ID]
    sync(testapp, vendor)
    state = testapp.get(f"{URL}/sync", headers=vendor.headers).json["items"][0]
    assert "Meta refused to list the templates" in state["last_error"] and "code 100" in state["last_error"]
    assert state["template_count"] == 1  # from the sync that worked
    assert templates(testapp, vendor)[("old", "en_US")]["status"] == "APPROVED"  # nothing marked deleted
    assert [e.status for e in sync_task_events(db)] == [OutboxStatus.DELIVERED] * 2


def test_a_token_meta_refuses_is_recorded_and_a_later_sync_clears_it(testapp, vendor, meta_sandbox, db):
    meta_sandbox.state.behaviour.access_token = "another-token"
    sync(testapp, vendor)
    assert "code 190" in testapp.get(f"{URL}/sync", headers=vendor.headers).json["items"][0]["last_error"]
    assert sync_task_events(db)[-1].status == OutboxStatus.DELIVERED
    meta_sandbox.state.behaviour.access_token = None
    sync(testapp, vendor)
    assert testapp.get(f"{URL}/sync", headers=vendor.headers).json["items"][0]["last_error"] is None


def test_a_transient_meta_error_fails_the_task_so_the_outbox_retries_it(testapp, vendor, registry, monkeypatch, db,
                                                                       sandbox_template):
    sandbox_template("t", [body_component("Hi")])

    def busy(*args, **kwargs):
        raise MetaError("(#2) API Service", http_status=503, code=2, is_transient=True)

    monkeypatch.setattr(registry["kloyst.meta"], "list_templates", busy)
    sync(testapp, vendor)
    event = sync_task_events(db)[-1]
    assert event.status == OutboxStatus.PENDING and event.failures == 1 and "API Service" in event.last_error
    state = testapp.get(f"{URL}/sync", headers=vendor.headers).json["items"]
    assert [(s["queued"], s["last_attempt_at"]) for s in state] == [(True, None)]  # the attempt rolled back with it
    monkeypatch.undo()
    with tenancy.unscoped(db):
        db.get(OutboxEvent, event.id).available_at = event.created_at
    db.commit()
    from kloyst.outbox.relay import relay_once

    relay_once(registry)
    assert sync_task_events(db)[-1].status == OutboxStatus.DELIVERED
    assert templates(testapp, vendor)[("t", "en_US")]["status"] == "APPROVED"


def test_the_shared_wabas_templates_sync_for_a_vendor_with_its_numbers(testapp, vendor, db, registry,
                                                                       sandbox_template, meta_sandbox):
    encrypted, kid = encrypt_shared_token(registry["kloyst.cipher"], "platform-token")
    shared = SharedWaba(meta_waba_id="555000555", name="Shared", access_token_enc=encrypted, enc_kid=kid)
    with tenancy.unscoped(db):
        db.add(shared)
        db.flush()
        db.add(PhoneNumber(vendor_id=vendor.vendor_id, meta_phone_number_id="1061234", shared_waba_id=shared.id,
                           display_phone_number="+1 555 0100"))
    db.commit()
    sandbox_template("platform_hello", [body_component("Hello")], waba_id="555000555")
    assert sorted(sync(testapp, vendor)["queued"]) == sorted([WABA_ID, "555000555"])
    assert templates(testapp, vendor)[("platform_hello", "en_US")]["meta_waba_id"] == "555000555"


def test_one_waba_can_be_synced_alone(testapp, vendor, task_recorder):
    assert sync(testapp, vendor, meta_waba_id=WABA_ID) == {"queued": [WABA_ID], "already_queued": []}


def test_a_waba_the_vendor_cannot_use_is_422(testapp, vendor, task_recorder):
    error = sync(testapp, vendor, status=422, meta_waba_id="123")["error"]
    assert error["code"] == "unknown_waba" and task_recorder == []


def test_a_vendor_without_a_waba_is_told_to_add_one(testapp, accounts, enable_plugin, task_recorder):
    account = accounts.vendor("No WABA")
    enable_plugin(account, "waba")
    enable_plugin(account, "templates")
    assert sync(testapp, account, status=422)["error"]["code"] == "no_waba"


def test_a_sync_for_a_waba_removed_meanwhile_does_nothing(testapp, vendor, db, task_recorder, run_outbox):
    from kloyst_plugins.waba.models import Waba

    sync(testapp, vendor)
    with tenancy.unscoped(db):
        db.delete(db.scalar(select(Waba).where(Waba.meta_waba_id == WABA_ID)))
    db.commit()
    run_outbox()
    assert sync_task_events(db)[-1].status == OutboxStatus.DELIVERED
    with tenancy.unscoped(db):
        assert db.scalars(select(TemplateSync)).all() == []


@pytest.mark.parametrize("field", ["name", "language"])
def test_a_listed_item_without_name_or_language_is_skipped(vendor, registry, field):
    from templates_support import task_context

    from kloyst_plugins.waba.access import accessible_wabas

    class Meta:
        def list_templates(self, *args, **kwargs):
            good = {"id": "1", "name": "ok", "language": "en", "status": "APPROVED", "components": []}
            return [{**good, field: None}, good, "garbage"]

    with task_context(registry, vendor.vendor_id) as ctx:
        access = accessible_wabas(ctx.db, registry["kloyst.cipher"])[0]
        record = services.sync_waba(ctx.db, Meta(), access)
        assert record.template_count == 1
        assert [t.name for t in ctx.db.scalars(select(MessageTemplate))] == ["ok"]
