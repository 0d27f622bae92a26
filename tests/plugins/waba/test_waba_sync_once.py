"""A WABA's phone-number sync is queued once however often it is asked for, and two syncs of one WABA at once
both succeed: the second waits for the first and updates what it wrote (issue 15, finding 6)."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa
import transaction
import webtest

from kloyst import testing
from kloyst.db import session_scope, utcnow
from kloyst.queue import TaskContext
from kloyst.sandbox.state import PhoneNumber as SandboxNumber
from kloyst_plugins.waba import services, tasks
from kloyst_plugins.waba.models import PhoneNumber, SyncStatus, Waba
from kloyst_plugins.waba.tasks import SYNC_PHONE_NUMBERS
from waba_support import TOKEN


def _sync(testapp, account, waba_id: str) -> dict:
    return testapp.post(f"/v1/wabas/{waba_id}/sync", headers=account.headers, status=202).json


def test_a_hundred_sync_requests_queue_one_sync(testapp, vendor, add_waba, sandbox_numbers, task_recorder,
                                                run_outbox):
    sandbox_numbers("3101", 1)
    waba = add_waba(vendor, "3101")
    run_outbox()  # the registration's own sync
    task_recorder.clear()
    answers = [_sync(testapp, vendor, waba["id"]) for _ in range(100)]
    assert [name for name, _ in task_recorder] == [SYNC_PHONE_NUMBERS]
    assert answers[0]["already_queued"] is False
    assert all(a["already_queued"] is True and a["sync"] == "queued" for a in answers[1:])
    assert run_outbox() == 1
    assert testapp.get(f"/v1/wabas/{waba['id']}", headers=vendor.headers).json["waba"]["sync_status"] == "synced"
    task_recorder.clear()
    assert _sync(testapp, vendor, waba["id"])["already_queued"] is False  # once it has run, a new ask queues one
    assert len(task_recorder) == 1


def test_a_sync_queued_long_ago_is_presumed_lost_and_queued_again(testapp, db, vendor, add_waba, task_recorder):
    waba = add_waba(vendor, "3102")  # its sync stays queued: the recorder keeps it from running
    assert _sync(testapp, vendor, waba["id"])["already_queued"] is True
    db.execute(sa.update(Waba).where(Waba.id == waba["id"])
               .values(updated_at=utcnow() - dt.timedelta(minutes=16)))
    db.commit()
    task_recorder.clear()
    assert _sync(testapp, vendor, waba["id"])["already_queued"] is False
    assert len(task_recorder) == 1


def _committed_waba(registry, committed_db, meta_waba_id: str):
    accounts = testing.AccountFactory(committed_db, registry["kloyst.access_tokens"])
    owner = accounts.vendor("Sync Co")
    testing.enable_plugin(committed_db, owner.vendor_id, "waba")
    waba = services.create_waba(committed_db, registry["kloyst.cipher"], vendor_id=owner.vendor_id,
                                meta_waba_id=meta_waba_id, name="Main", access_token=TOKEN)
    waba.sync_status = SyncStatus.SYNCED.value
    committed_db.commit()
    return owner, waba.id


def test_sync_requests_at_once_queue_one_sync(wsgi_app, registry, committed_db, task_recorder):
    owner, waba_id = _committed_waba(registry, committed_db, "3103")
    start = threading.Barrier(12)

    def ask() -> dict:
        app = webtest.TestApp(wsgi_app, extra_environ={"REMOTE_ADDR": "203.0.113.20"})
        start.wait()
        return app.post(f"/v1/wabas/{waba_id}/sync", headers=owner.headers, status=202).json

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = [future.result() for future in [pool.submit(ask) for _ in range(12)]]
    assert [name for name, _ in task_recorder] == [SYNC_PHONE_NUMBERS]
    assert sorted(a["already_queued"] for a in answers) == [False] + [True] * 11


def test_two_syncs_of_one_waba_at_once_both_succeed(registry, committed_db, meta_sandbox):
    owner, waba_id = _committed_waba(registry, committed_db, "3104")
    for n in range(3):
        meta_sandbox.state.add_number(SandboxNumber(id=f"73104{n:05d}", waba_id="3104",
                                                    display_phone_number=f"+1 555-310-{n:04d}"))
    meta_sandbox.state.behaviour.latency_ms = 300  # both syncs hold Meta's answer before either writes
    start = threading.Barrier(2)

    def run_sync() -> dict:
        manager = transaction.TransactionManager(explicit=True)
        start.wait()
        with session_scope(registry["kloyst.session_factory"], vendor_id=owner.vendor_id, manager=manager) as db:
            return tasks.sync_phone_numbers(TaskContext(registry, db, manager, owner.vendor_id), waba_id=waba_id)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = [future.result() for future in [pool.submit(run_sync) for _ in range(2)]]
    assert all(result["skipped"] == [] for result in results), results
    assert sorted(len(result["created"]) for result in results) == [0, 3]  # the second updated what the first made
    committed_db.expire_all()
    numbers = committed_db.scalars(sa.select(PhoneNumber).where(PhoneNumber.waba_id == waba_id)).all()
    assert len(numbers) == 3
    waba = committed_db.get(Waba, waba_id)
    assert waba.sync_status == SyncStatus.SYNCED.value and waba.last_sync_error is None
