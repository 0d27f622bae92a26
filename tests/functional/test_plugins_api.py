"""``/v1/plugins``: what is installed, what the caller's vendor has on, and switching plugins on and off."""

from __future__ import annotations

import importlib.metadata

from sqlalchemy import select

import kloyst
from kloyst.accounts.models import Role
from kloyst.outbox import OutboxEvent


def listing(testapp, account) -> dict[str, dict]:
    return {p["name"]: p for p in testapp.get("/v1/plugins", headers=account.headers).json["items"]}


def test_listing_shows_the_core_as_essential_and_enabled(testapp, accounts):
    member = accounts.user(accounts.vendor().vendor, role=Role.MEMBER)

    core = listing(testapp, member)["core"]

    assert core["essential"] is True
    assert core["enabled"] is True
    assert core["version"] == kloyst.__version__
    assert core["distribution"] == "kloyst"


def test_listing_shows_installed_plugins_with_their_distribution_version(testapp, accounts):
    example = listing(testapp, accounts.vendor())["example"]

    assert example["version"] == importlib.metadata.version("kloyst-example-plugin")
    assert example["essential"] is False
    assert example["enabled"] is False
    assert set(example) >= {"name", "version", "description", "requires", "essential", "distribution", "enabled"}


def test_listing_is_in_load_order_core_first(testapp, accounts):
    names = list(listing(testapp, accounts.vendor()))
    assert names[0] == "core"
    # Installed entry points sorted by name, then the in-test plugin the root conftest adds.
    assert names[-1] == "probe"
    assert names[1:-1] == sorted(names[1:-1])


def test_enabled_flag_is_the_callers_vendors(testapp, accounts):
    alice, bob = accounts.vendor("Alice"), accounts.vendor("Bob")

    testapp.put("/v1/plugins/example", headers=alice.headers, status=200)

    assert listing(testapp, alice)["example"]["enabled"] is True
    assert listing(testapp, bob)["example"]["enabled"] is False
    assert testapp.get("/v1/plugins/example", headers=alice.headers).json["plugin"]["enabled"] is True
    assert testapp.get("/v1/plugins/example", headers=bob.headers).json["plugin"]["enabled"] is False


def test_enable_is_idempotent_and_records_one_event(testapp, db, accounts):
    owner = accounts.vendor()

    first = testapp.put("/v1/plugins/example", headers=owner.headers, status=200).json
    second = testapp.put("/v1/plugins/example", headers=owner.headers, status=200).json

    assert (first["changed"], second["changed"]) == (True, False)
    assert first["plugin"]["enabled"] is second["plugin"]["enabled"] is True
    events = db.scalars(select(OutboxEvent).where(OutboxEvent.vendor_id == owner.vendor_id,
                                                  OutboxEvent.topic == "vendor.event")).all()
    assert [(e.payload["name"], e.payload["payload"]["plugin"]) for e in events] == [("PluginEnabled", "example")]


def test_disable_is_idempotent(testapp, accounts):
    owner = accounts.vendor()
    testapp.put("/v1/plugins/example", headers=owner.headers, status=200)

    first = testapp.delete("/v1/plugins/example", headers=owner.headers, status=200).json
    second = testapp.delete("/v1/plugins/example", headers=owner.headers, status=200).json

    assert (first["changed"], second["changed"]) == (True, False)
    assert second["plugin"]["enabled"] is False


def test_an_admin_may_switch_plugins(testapp, accounts):
    admin = accounts.user(accounts.vendor().vendor, role=Role.ADMIN)
    testapp.put("/v1/plugins/example", headers=admin.headers, status=200)
    testapp.delete("/v1/plugins/example", headers=admin.headers, status=200)


def test_a_member_cannot_enable_or_disable(testapp, accounts, enable_plugin):
    owner = accounts.vendor()
    member = accounts.user(owner.vendor, role=Role.MEMBER)

    testapp.put("/v1/plugins/example", headers=member.headers, status=403)
    enable_plugin(owner, "example")
    testapp.delete("/v1/plugins/example", headers=member.headers, status=403)

    assert listing(testapp, member)["example"]["enabled"] is True


def test_unknown_plugin_is_404(testapp, accounts):
    owner = accounts.vendor()
    for method in ("GET", "PUT", "DELETE"):
        error = testapp.request("/v1/plugins/no_such_plugin", method=method, headers=owner.headers,
                                expect_errors=True)
        assert error.status_int == 404, method
        assert error.json["error"]["code"] == "not_found"


def test_the_essential_core_cannot_be_disabled(testapp, accounts):
    owner = accounts.vendor()

    error = testapp.delete("/v1/plugins/core", headers=owner.headers, status=409).json["error"]

    assert error["code"] == "plugin_essential"
    assert listing(testapp, owner)["core"]["enabled"] is True


def test_enabling_the_essential_core_changes_nothing(testapp, accounts):
    answer = testapp.put("/v1/plugins/core", headers=accounts.vendor().headers, status=200).json
    assert answer["changed"] is False


def test_unauthenticated_callers_get_401(testapp):
    testapp.get("/v1/plugins", status=401)
    testapp.get("/v1/plugins/example", status=401)
    testapp.put("/v1/plugins/example", status=401)
    testapp.delete("/v1/plugins/example", status=401)


def test_a_row_for_a_plugin_no_longer_installed_is_ignored(testapp, accounts, enable_plugin):
    owner = accounts.vendor()
    enable_plugin(owner, "uninstalled_since")

    assert "uninstalled_since" not in listing(testapp, owner)
    testapp.get("/v1/plugins/uninstalled_since", headers=owner.headers, status=404)
