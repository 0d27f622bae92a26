"""On the embedded default (SQLite, no row locks, one writer at a time) sync requests made at once still queue
one phone-number sync and one template sync per WABA, and neither sync holds the write lock while Meta answers."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import transaction
import webtest

from kloyst import testing
from kloyst.db import session_scope, tenancy
from kloyst.queue import TaskContext
from kloyst_plugins.templates.tasks import SYNC as SYNC_TEMPLATES
from kloyst_plugins.waba import services
from kloyst_plugins.waba.models import SyncStatus, Waba
from kloyst_plugins.waba.tasks import SYNC_PHONE_NUMBERS
from waba_support import TOKEN


def test_sync_requests_at_once_queue_one_of_each_sync_on_sqlite(embedded_config, monkeypatch):
    registry = embedded_config.registry
    sent: list[str] = []
    monkeypatch.setattr(registry["kloyst.queue"], "send_after_commit",
                        lambda event_id, name, kwargs: sent.append(name))
    with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:
        owner = testing.AccountFactory(db, registry["kloyst.access_tokens"]).vendor("Lite Co")
        for plugin in ("waba", "templates"):
            testing.enable_plugin(db, owner.vendor_id, plugin)
        waba = services.create_waba(db, registry["kloyst.cipher"], vendor_id=owner.vendor_id, meta_waba_id="3201",
                                    name="Main", access_token=TOKEN)
        waba.sync_status = SyncStatus.SYNCED.value
        waba_id = waba.id
    wsgi = embedded_config.make_wsgi_app()
    start = threading.Barrier(8)

    def ask(path: str) -> dict:
        app = webtest.TestApp(wsgi, extra_environ={"REMOTE_ADDR": "203.0.113.30"})
        start.wait()
        return app.post_json(path, {}, headers=owner.headers, status=202).json

    for path in (f"/v1/wabas/{waba_id}/sync", "/v1/templates/sync"):
        with ThreadPoolExecutor(max_workers=8) as pool:
            for future in [pool.submit(ask, path) for _ in range(8)]:
                future.result()
    assert sorted(sent) == sorted([SYNC_PHONE_NUMBERS, SYNC_TEMPLATES])


class WriterDuringMeta:
    """A Meta whose answer takes as long as another writer of the process needs to rename the WABA (at most 3 s):
    a sync that held the write lock while it asked would make that writer wait it out."""

    def __init__(self, factory, vendor_id, waba_id) -> None:
        self.factory, self.vendor_id, self.waba_id = factory, vendor_id, waba_id
        self.wrote: list[bool] = []

    def _answer_after_a_write(self) -> list:
        def rename() -> None:
            with session_scope(self.factory, vendor_id=self.vendor_id) as db:
                db.get(Waba, self.waba_id).name = "Renamed while Meta answered"
            self.wrote.append(True)

        writer = threading.Thread(target=rename)
        writer.start()
        writer.join(timeout=3)
        return []

    def list_phone_numbers(self, meta_waba_id, *, fields, token):
        return self._answer_after_a_write()

    def list_templates(self, meta_waba_id, *, limit, fields, token):
        return self._answer_after_a_write()


@pytest.mark.parametrize("sync", ["phone numbers", "templates"])
def test_on_sqlite_a_sync_asks_meta_without_holding_the_write_lock(embedded_config, monkeypatch, sync):
    """Meta answers in 100 ms to seconds: another writer of the process must not wait for that answer."""
    registry = embedded_config.registry
    factory = registry["kloyst.session_factory"]
    with session_scope(factory, vendor_id=tenancy.ALL_VENDORS) as db:
        owner = testing.AccountFactory(db, registry["kloyst.access_tokens"]).vendor("Slow Meta Co")
        for plugin in ("waba", "templates"):
            testing.enable_plugin(db, owner.vendor_id, plugin)
        waba_id = services.create_waba(db, registry["kloyst.cipher"], vendor_id=owner.vendor_id, meta_waba_id="3202",
                                       name="Main", access_token=TOKEN).id
    meta = WriterDuringMeta(factory, owner.vendor_id, waba_id)
    monkeypatch.setitem(registry, "kloyst.meta", meta)
    name, kwargs = ((SYNC_PHONE_NUMBERS, {"waba_id": waba_id}) if sync == "phone numbers"
                    else (SYNC_TEMPLATES, {"vendor_id": owner.vendor_id, "meta_waba_id": "3202"}))
    manager = transaction.TransactionManager(explicit=True)
    with session_scope(factory, vendor_id=owner.vendor_id, manager=manager) as db:
        ctx = TaskContext(registry, db, manager, owner.vendor_id, plugins=frozenset({"waba", "templates"}))
        registry["kloyst.queue"].run_task(ctx, name, kwargs)
    assert meta.wrote == [True]
    with session_scope(factory, vendor_id=owner.vendor_id, read_only=True) as db:
        waba = db.get(Waba, waba_id)
        assert waba.name == "Renamed while Meta answered"
        if sync == "phone numbers":
            assert waba.sync_status == SyncStatus.SYNCED.value
