"""Every route a plugin adds is gated on that plugin: walked from the live route table, not listed.

A route added later by any installed plugin is covered the moment it exists: it must carry
its own plugin's ``kloyst_plugin`` predicate, live under the API prefix, answer 404 (the
same 404 as a route that does not exist) to a vendor without the plugin, 401 to an
anonymous caller, and reach its view once the vendor enables the plugin.
"""

from __future__ import annotations

import re
import uuid

import pytest
from pyramid.interfaces import IRoutesMapper

from kloyst.plugins.routing import PluginEnabledPredicate
from kloyst.testing import route_walk as walk

PLACEHOLDER = re.compile(r"\{(\w+)(?::[^}]*)?\}")


def _gate(route) -> list[str]:
    return [p.plugin for p in route.predicates if isinstance(p, PluginEnabledPredicate)]


def _routes(registry) -> list:
    return registry.queryUtility(IRoutesMapper).get_routes()


def _gated(registry) -> list:
    """Routes of plugins a vendor can switch off (essential plugins are on for everyone)."""
    pm = registry["kloyst.plugin_manager"]
    return [r for r in _routes(registry) if _gate(r) and _gate(r)[0] not in pm.essential]


def _path(route) -> str:
    return route.generate({name: str(uuid.uuid4()) for name in PLACEHOLDER.findall(route.pattern)})


def _call(testapp, route, method, headers=None):
    return testapp.request(_path(route), method=method, headers=headers or {}, body=b"{}",
                           content_type="application/json", expect_errors=True)


def test_every_route_named_after_a_plugin_carries_that_plugins_gate_once(registry):
    pm = registry["kloyst.plugin_manager"]
    wrong = []
    for route in _routes(registry):
        owner = route.name.split(".", 1)[0]
        gates = _gate(route)
        if (owner in pm.infos or gates) and gates != [owner]:
            wrong.append((route.name, gates))
    assert wrong == [], f"plugin routes without their own plugin's gate: {wrong}"


def test_installed_plugins_have_gated_routes_to_walk(registry):
    # The walks below would pass vacuously on an empty list.
    assert {_gate(r)[0] for r in _gated(registry)} >= {"example", "example_digest"}


def test_every_gated_route_lives_under_the_api_prefix(registry):
    prefix = registry.settings["kloyst.api.prefix"].rstrip("/") + "/"
    outside = [r.name for r in _gated(registry) if not _path(r).startswith(prefix)]
    assert outside == []


def test_every_gated_route_and_method_is_404_for_a_vendor_without_the_plugin(testapp, registry, accounts):
    owner = accounts.vendor()
    walked = 0
    for route in _gated(registry):
        for method in walk.route_methods(registry, route.name):
            response = _call(testapp, route, method, owner.headers)
            assert response.status_int == 404, f"{method} {route.pattern} gave {response.status_int}"
            assert response.json["error"]["code"] == "not_found"
            assert "plugin" not in response.json["error"]["message"].lower()
            walked += 1
    assert walked >= 5


def test_every_gated_route_is_401_for_an_anonymous_caller(testapp, registry):
    # Anonymous callers pass the gate so that the permission answers: 401, not a confusing 404.
    for route in _gated(registry):
        for method in walk.route_methods(registry, route.name):
            assert _call(testapp, route, method).status_int == 401, f"{method} {route.pattern}"


@pytest.fixture
def vendor_with_everything(accounts, registry, enable_plugin):
    owner = accounts.vendor()
    pm = registry["kloyst.plugin_manager"]
    for name in pm.infos:
        if name not in pm.essential:
            enable_plugin(owner, name)
    return owner


def test_gated_collection_routes_reach_their_view_once_enabled(testapp, registry, vendor_with_everything):
    walked = 0
    for route in _gated(registry):
        if PLACEHOLDER.search(route.pattern) or "GET" not in walk.route_methods(registry, route.name):
            continue
        response = _call(testapp, route, "GET", vendor_with_everything.headers)
        assert response.status_int == 200, f"GET {route.pattern} gave {response.status_int} with the plugin on"
        walked += 1
    assert walked >= 2


def test_disabling_a_plugin_closes_its_routes_again(testapp, accounts):
    owner = accounts.vendor()
    testapp.put("/v1/plugins/example", headers=owner.headers, status=200)
    testapp.get("/v1/example/notes", headers=owner.headers, status=200)

    testapp.delete("/v1/plugins/example", headers=owner.headers, status=200)

    testapp.get("/v1/example/notes", headers=owner.headers, status=404)
