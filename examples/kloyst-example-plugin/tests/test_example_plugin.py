"""The example plugin end to end, through the path every third-party plugin takes.

``pip install -e examples/kloyst-example-plugin`` puts two entry points in the
``kloyst.plugins`` group; the fixtures from ``kloyst.testing.pytest_plugin`` build the
application and the test database from every installed plugin, so nothing here registers
the plugin by hand.
"""

from __future__ import annotations

import importlib.metadata
import re
import uuid
from pathlib import Path

from kloyst_example.models import ExampleEventLog, Note
from kloyst_example.tasks import PING_NOTE
from sqlalchemy import select

from kloyst.accounts.models import Role
from kloyst.events import DomainEvent
from kloyst.outbox import OutboxEvent
from kloyst.queue import TaskContext

SETUP_PY = Path(__file__).resolve().parents[1] / "setup.py"


def enable(testapp, account, name: str, status: int = 200):
    return testapp.put(f"/v1/plugins/{name}", headers=account.headers, status=status).json


def create_note(testapp, account, text: str = "call the supplier") -> dict:
    return testapp.post_json("/v1/example/notes", {"text": text}, headers=account.headers, status=201).json["note"]


def fresh(db, model, ident):
    db.expire_all()
    return db.get(model, uuid.UUID(str(ident)))


def event_log(db, vendor_id) -> list[str]:
    db.expire_all()
    return list(db.scalars(select(ExampleEventLog.name).where(ExampleEventLog.vendor_id == vendor_id)
                           .order_by(ExampleEventLog.event_id)))


def test_plugins_listing_shows_both_entry_points_with_the_setup_py_version(testapp, accounts):
    owner = accounts.vendor()
    version = re.search(r'version="([^"]+)"', SETUP_PY.read_text()).group(1)
    assert importlib.metadata.version("kloyst-example-plugin") == version

    items = {p["name"]: p for p in testapp.get("/v1/plugins", headers=owner.headers).json["items"]}

    assert items["example"]["version"] == version
    assert items["example"]["distribution"] == "kloyst-example-plugin"
    assert items["example"]["enabled"] is False
    assert items["example_digest"]["requires"] == ["example"]
    assert items["example_digest"]["version"] == version


def test_example_routes_are_404_for_a_vendor_that_has_not_enabled_it(testapp, accounts):
    with_plugin = accounts.vendor("With")
    without = accounts.vendor("Without")
    enable(testapp, with_plugin, "example")

    testapp.get("/v1/example/notes", headers=with_plugin.headers, status=200)
    gated = testapp.get("/v1/example/notes", headers=without.headers, status=404).json
    unknown = testapp.get("/v1/no-such-route", headers=without.headers, status=404).json
    # Indistinguishable from a route that does not exist: nothing says the plugin is there.
    assert gated["error"]["code"] == unknown["error"]["code"] == "not_found"
    assert gated["error"]["message"] == unknown["error"]["message"].replace("/v1/no-such-route", "/v1/example/notes")


def test_anonymous_callers_get_401_not_404_on_a_gated_route(testapp):
    testapp.get("/v1/example/notes", status=401)


def test_notes_are_kept_per_vendor_and_another_vendors_note_is_404(testapp, accounts, enable_plugin):
    alice, bob = accounts.vendor("Alice"), accounts.vendor("Bob")
    enable_plugin(alice, "example")
    enable_plugin(bob, "example")
    note = create_note(testapp, alice, "ring Olga")

    assert testapp.get(f"/v1/example/notes/{note['id']}", headers=alice.headers).json["note"]["text"] == "ring Olga"
    assert [n["id"] for n in testapp.get("/v1/example/notes", headers=alice.headers).json["items"]] == [note["id"]]
    assert testapp.get("/v1/example/notes", headers=bob.headers).json["items"] == []
    testapp.get(f"/v1/example/notes/{note['id']}", headers=bob.headers, status=404)
    testapp.delete(f"/v1/example/notes/{note['id']}", headers=bob.headers, status=404)
    testapp.post(f"/v1/example/notes/{note['id']}/ping", headers=bob.headers, status=404)

    testapp.delete(f"/v1/example/notes/{note['id']}", headers=alice.headers, status=204)
    testapp.get(f"/v1/example/notes/{note['id']}", headers=alice.headers, status=404)


def test_a_member_cannot_delete_a_note(testapp, accounts, enable_plugin):
    owner = accounts.vendor()
    member = accounts.user(owner.vendor, role=Role.MEMBER)
    enable_plugin(owner, "example")
    note = create_note(testapp, member)
    testapp.delete(f"/v1/example/notes/{note['id']}", headers=member.headers, status=403)


def test_invalid_note_is_422_naming_the_field(testapp, accounts, enable_plugin):
    owner = accounts.vendor()
    enable_plugin(owner, "example")
    error = testapp.post_json("/v1/example/notes", {"text": ""}, headers=owner.headers, status=422).json["error"]
    assert error["details"]["fields"][0]["field"] == "text"


def test_ping_runs_the_task_which_stamps_pinged_at(testapp, db, accounts, enable_plugin):
    owner = accounts.vendor()
    enable_plugin(owner, "example")
    note = create_note(testapp, owner)

    answer = testapp.post(f"/v1/example/notes/{note['id']}/ping", headers=owner.headers, status=202).json

    assert answer["queued"] is True
    assert fresh(db, Note, note["id"]).pinged_at is not None
    assert testapp.get(f"/v1/example/notes/{note['id']}", headers=owner.headers).json["note"]["pinged_at"]


def test_ping_hands_the_queue_ids_only_after_the_request_commits(testapp, db, accounts, enable_plugin,
                                                                 task_recorder):
    owner = accounts.vendor()
    enable_plugin(owner, "example")
    note = create_note(testapp, owner)

    testapp.post(f"/v1/example/notes/{note['id']}/ping", headers=owner.headers, status=202)

    assert task_recorder == [(PING_NOTE, {"vendor_id": owner.vendor_id, "note_id": uuid.UUID(note["id"])})]
    assert fresh(db, Note, note["id"]).pinged_at is None  # recorded, not run


def test_the_task_is_skipped_once_the_vendor_has_disabled_example(testapp, db, accounts, task_recorder,
                                                                  run_outbox):
    owner = accounts.vendor()
    enable(testapp, owner, "example")
    note = create_note(testapp, owner)
    testapp.post(f"/v1/example/notes/{note['id']}/ping", headers=owner.headers, status=202)
    assert len(task_recorder) == 1  # enqueued, still waiting in the outbox
    testapp.delete("/v1/plugins/example", headers=owner.headers, status=200)

    run_outbox()  # the worker gets to it only now

    assert fresh(db, Note, note["id"]).pinged_at is None


def test_a_waiting_task_runs_when_the_plugin_stays_enabled(testapp, db, accounts, enable_plugin, task_recorder,
                                                           run_outbox):
    owner = accounts.vendor()
    enable_plugin(owner, "example")
    note = create_note(testapp, owner)
    testapp.post(f"/v1/example/notes/{note['id']}/ping", headers=owner.headers, status=202)

    run_outbox()

    assert fresh(db, Note, note["id"]).pinged_at is not None


def test_enabling_digest_before_example_is_refused_naming_the_missing_plugin(testapp, accounts):
    owner = accounts.vendor()

    error = enable(testapp, owner, "example_digest", status=409)["error"]

    assert error["code"] == "plugin_requirements_missing"
    assert error["details"]["missing"] == ["example"]
    assert "example" in error["message"]
    testapp.get("/v1/example-digest/summary", headers=owner.headers, status=404)


def test_disabling_example_while_digest_is_on_is_refused(testapp, accounts):
    owner = accounts.vendor()
    enable(testapp, owner, "example")
    enable(testapp, owner, "example_digest")

    error = testapp.delete("/v1/plugins/example", headers=owner.headers, status=409).json["error"]

    assert error["code"] == "plugin_required_by_others"
    assert error["details"]["required_by"] == ["example_digest"]
    testapp.get("/v1/example/notes", headers=owner.headers, status=200)


def test_digest_counts_only_the_callers_notes(testapp, accounts, enable_plugin):
    alice, bob = accounts.vendor("Alice"), accounts.vendor("Bob")
    for account in (alice, bob):
        enable_plugin(account, "example")
        enable_plugin(account, "example_digest")
    first = create_note(testapp, alice)
    create_note(testapp, alice)
    create_note(testapp, bob)
    testapp.post(f"/v1/example/notes/{first['id']}/ping", headers=alice.headers, status=202)

    assert testapp.get("/v1/example-digest/summary", headers=alice.headers).json == {"notes": 2, "pinged": 1}
    assert testapp.get("/v1/example-digest/summary", headers=bob.headers).json == {"notes": 1, "pinged": 0}


def test_vendor_event_reaches_example_once_the_vendor_enabled_it(testapp, db, accounts, run_outbox):
    owner = accounts.vendor()
    enable(testapp, owner, "example")

    assert run_outbox() >= 1

    assert event_log(db, owner.vendor_id) == ["PluginEnabled"]


def test_vendor_event_never_reaches_example_for_a_vendor_without_it(testapp, db, accounts, enable_plugin,
                                                                    run_outbox):
    with_plugin = accounts.vendor("With")
    without = accounts.vendor("Without")
    enable_plugin(with_plugin, "example")
    for account in (with_plugin, without):
        testapp.post_json("/v1/vendor/users", {"email": f"new-{uuid.uuid4().hex[:8]}@example.com"},
                          headers=account.headers, status=202)

    run_outbox()

    db.expire_all()
    invited = db.scalars(select(OutboxEvent).where(OutboxEvent.vendor_id == without.vendor_id,
                                                   OutboxEvent.topic == "vendor.event")).all()
    assert invited == []  # no plugin the vendor enabled listens: not even written
    assert event_log(db, with_plugin.vendor_id) == ["UserInvited"]
    assert event_log(db, without.vendor_id) == []


def test_a_redelivered_event_is_logged_once(db, registry, accounts):
    owner = accounts.vendor()
    pm = registry["kloyst.plugin_manager"]
    event = DomainEvent(id=987654321, name="UserInvited", vendor_id=owner.vendor_id, payload={})
    ctx = TaskContext(registry, db, None, owner.vendor_id)

    for _ in range(2):  # the outbox delivers at least once
        pm.for_plugins("kloyst_vendor_event", ["example"])(event=event, ctx=ctx)

    assert event_log(db, owner.vendor_id) == ["UserInvited"]


def test_greeting_setting_has_a_default_and_an_environment_override(testapp, registry, accounts, enable_plugin):
    from kloyst.config import resolve

    owner = accounts.vendor()
    enable_plugin(owner, "example")
    assert testapp.get("/v1/example/hello", headers=owner.headers).json == {"greeting": "hello"}

    table = tuple(s for name, s in registry["kloyst.plugin_manager"].collect("kloyst_settings") if name == "example")
    assert [s.key for s in table] == ["example.greeting"]
    assert resolve({}, table, {"EXAMPLE_GREETING": "bonjour"})["example.greeting"] == "bonjour"
