"""On the embedded default (SQLite, no row locks, one writer at a time) sync requests made at once still queue
one phone-number sync and one template sync per WABA, and neither sync holds the write lock while Meta answers."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

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


def test_on_sqlite_a_sync_asks_meta_without_holding_the_write_lock(embedded_config, monkeypatch):
    """Meta answers in 100 ms to seconds: another writer of the process must not wait for that answer."""
    registry = embedded_config.registry
    factory = registry["kloyst.session_factory"]
    with session_scope(factory, vendor_id=tenancy.ALL_VENDORS) as db:
        owner = testing.AccountFactory(db, registry["kloyst.access_tokens"]).vendor("Slow Meta Co")
        testing.enable_plugin(db, owner.vendor_id, "waba")
        waba_id = services.create_waba(db, registry["kloyst.cipher"], vendor_id=owner.vendor_id, meta_waba_id="3202",
                                       name="Main", access_token=TOKEN).id
    wrote_during_the_call: list[bool] = []

    class SlowMeta:
        def list_phone_numbers(self, meta_waba_id, *, fields, token):
            def rename() -> None:
                with session_scope(factory, vendor_id=owner.vendor_id) as db:
                    db.get(Waba, waba_id).name = "Renamed while Meta answered"
                wrote_during_the_call.append(True)

            writer = threading.Thread(target=rename)
            writer.start()
            writer.join(timeout=3)
            return []

    monkeypatch.setitem(registry, "kloyst.meta", SlowMeta())
    manager = transaction.TransactionManager(explicit=True)
    with session_scope(factory, vendor_id=owner.vendor_id, manager=manager) as db:
        ctx = TaskContext(registry, db, manager, owner.vendor_id, plugins=frozenset({"waba"}))
        registry["kloyst.queue"].run_task(ctx, SYNC_PHONE_NUMBERS, {"waba_id": waba_id})
    assert wrote_during_the_call == [True]
    with session_scope(factory, vendor_id=owner.vendor_id, read_only=True) as db:
        waba = db.get(Waba, waba_id)
        assert (waba.name, waba.sync_status) == ("Renamed while Meta answered", SyncStatus.SYNCED.value)


def test_on_sqlite_a_template_sync_asks_meta_without_holding_the_write_lock(embedded_config, monkeypatch):
    registry = embedded_config.registry
    factory = registry["kloyst.session_factory"]
    with session_scope(factory, vendor_id=tenancy.ALL_VENDORS) as db:
        owner = testing.AccountFactory(db, registry["kloyst.access_tokens"]).vendor("Slow Templates Co")
        for plugin in ("waba", "templates"):
            testing.enable_plugin(db, owner.vendor_id, plugin)
        waba_id = services.create_waba(db, registry["kloyst.cipher"], vendor_id=owner.vendor_id, meta_waba_id="3203",
                                       name="Main", access_token=TOKEN).id
    wrote_during_the_call: list[bool] = []

    class SlowMeta:
        def list_templates(self, meta_waba_id, *, limit, fields, token):
            def rename() -> None:
                with session_scope(factory, vendor_id=owner.vendor_id) as db:
                    db.get(Waba, waba_id).name = "Renamed while Meta answered"
                wrote_during_the_call.append(True)

            writer = threading.Thread(target=rename)
            writer.start()
            writer.join(timeout=3)
            return []

    monkeypatch.setitem(registry, "kloyst.meta", SlowMeta())
    manager = transaction.TransactionManager(explicit=True)
    with session_scope(factory, vendor_id=owner.vendor_id, manager=manager) as db:
        ctx = TaskContext(registry, db, manager, owner.vendor_id, plugins=frozenset({"waba", "templates"}))
        registry["kloyst.queue"].run_task(ctx, SYNC_TEMPLATES, {"vendor_id": owner.vendor_id, "meta_waba_id": "3203"})
    assert wrote_during_the_call == [True]
