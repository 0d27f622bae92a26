"""A WABA's template sync is queued once however often it is asked for, and two syncs of one WABA at once both
succeed: the second waits for the first and updates what it wrote (issue 15, finding 6)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa
from templates_support import TOKEN, WABA_ID, body_component, task_context

from kloyst import testing
from kloyst.db import tenancy
from kloyst.sandbox.state import Template
from kloyst_plugins.templates import tasks
from kloyst_plugins.templates.models import MessageTemplate, TemplateSync
from kloyst_plugins.templates.tasks import SYNC
from kloyst_plugins.waba.access import encrypt_waba_token
from kloyst_plugins.waba.models import Waba


def sync(testapp, account) -> dict:
    return testapp.post_json("/v1/templates/sync", {}, headers=account.headers, status=202).json


def test_a_hundred_sync_requests_queue_one_sync_per_waba(testapp, vendor, task_recorder, run_outbox, sandbox_template):
    sandbox_template("hello", [body_component("Hello")])
    answers = [sync(testapp, vendor) for _ in range(100)]
    assert [name for name, _ in task_recorder] == [SYNC]
    assert answers[0] == {"queued": [WABA_ID], "already_queued": []}
    assert all(a == {"queued": [], "already_queued": [WABA_ID]} for a in answers[1:])
    assert testapp.get("/v1/templates/sync", headers=vendor.headers).json["items"][0]["queued"] is True
    assert run_outbox() == 1
    state = testapp.get("/v1/templates/sync", headers=vendor.headers).json["items"][0]
    assert state["queued"] is False and state["template_count"] == 1
    assert sync(testapp, vendor)["queued"] == [WABA_ID]  # once it has run, a new ask queues one


def test_two_template_syncs_of_one_waba_at_once_both_succeed(registry, committed_db, meta_sandbox):
    accounts = testing.AccountFactory(committed_db, registry["kloyst.access_tokens"])
    owner = accounts.vendor("Busy Templates Co")
    for plugin in ("waba", "templates"):
        testing.enable_plugin(committed_db, owner.vendor_id, plugin)
    encrypted, kid = encrypt_waba_token(registry["kloyst.cipher"], owner.vendor_id, TOKEN)
    with tenancy.unscoped(committed_db):
        committed_db.add(Waba(vendor_id=owner.vendor_id, meta_waba_id=WABA_ID, name="Main", access_token_enc=encrypted,
                              enc_kid=kid))
    committed_db.commit()
    for n in range(3):
        meta_sandbox.state.add_template(WABA_ID, Template(id=meta_sandbox.state.new_id(), name=f"t{n}",
                                                          language="en_US", category="UTILITY",
                                                          components=[body_component("Hi")], status="APPROVED",
                                                          parameter_format="POSITIONAL"))
    meta_sandbox.state.behaviour.latency_ms = 300  # both syncs hold Meta's answer before either writes
    start = threading.Barrier(2)

    def run_sync() -> None:
        start.wait()
        with task_context(registry, owner.vendor_id) as ctx:
            tasks.sync_templates(ctx, vendor_id=owner.vendor_id, meta_waba_id=WABA_ID)

    with ThreadPoolExecutor(max_workers=2) as pool:
        for future in [pool.submit(run_sync) for _ in range(2)]:
            future.result()  # neither raises (today: a unique-key error, then an outbox retry)
    committed_db.expire_all()
    with tenancy.unscoped(committed_db):
        names = committed_db.scalars(sa.select(MessageTemplate.name).where(
            MessageTemplate.vendor_id == owner.vendor_id)).all()
        record = committed_db.scalar(sa.select(TemplateSync).where(TemplateSync.vendor_id == owner.vendor_id))
    assert sorted(names) == ["t0", "t1", "t2"]
    assert record.template_count == 3 and record.last_error is None and record.queued_at is None
