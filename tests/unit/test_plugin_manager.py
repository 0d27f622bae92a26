"""The plugin manager refuses a broken set of plugins at start-up and loads a good one deterministically.

Plugins here are small in-test modules: ``build_plugin_manager(extra=[(name, module)])``
registers them after the installed entry points, exactly as the ``kloyst_extra_plugins``
fixture does, and fake entry points stand in for installed distributions where the
entry-point path itself is under test.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import sys
import types

import pytest
from pyramid.config import Configurator
from pyramid.interfaces import IRoutesMapper

from kloyst.config import ConfigurationError
from kloyst.plugins import ENTRY_POINT_GROUP, KloystPluginManager, PluginMeta, build_plugin_manager, hookimpl, hookspecs
from kloyst.plugins.enablement import TenantHooks
from kloyst.plugins.manager import installed_entry_points
from kloyst.plugins.routing import PluginEnabledPredicate, include_plugin_routes, plugin_configurator


def plugin_module(name: str, meta: PluginMeta | None = None, **hooks) -> types.ModuleType:
    """A plugin module ``name`` implementing ``hooks`` (``hook_name=function``), importable like a real one."""
    module = types.ModuleType(name)
    if meta is not None:
        module.plugin_meta = meta
    for hook_name, func in hooks.items():
        setattr(module, hook_name, hookimpl(func))
    sys.modules[name] = module  # Pyramid resolves a plugin configurator's package by importing it
    return module


@pytest.fixture(autouse=True)
def _forget_test_modules():
    yield
    for name in [n for n in sys.modules if n.startswith("kloyst_test_")]:
        del sys.modules[name]


@pytest.fixture
def fake_entry_points(monkeypatch):
    """Replace the installed ``kloyst.plugins`` entry points with ``[(name, module)]``, in the order given."""

    def install(*plugins: tuple[str, types.ModuleType]) -> None:
        eps = []
        for name, module in plugins:
            monkeypatch.setitem(sys.modules, module.__name__, module)
            eps.append(importlib.metadata.EntryPoint(name=name, value=module.__name__, group=ENTRY_POINT_GROUP))

        def entry_points(**params):
            assert params == {"group": ENTRY_POINT_GROUP}
            return eps

        monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)

    return install


def test_entry_points_load_in_name_order_whatever_order_the_metadata_lists_them(fake_entry_points):
    def announcing(name):
        return plugin_module(f"kloyst_test_{name}", kloyst_settings=lambda: [name])

    fake_entry_points(("zeta", announcing("zeta")), ("alpha", announcing("alpha")), ("mid", announcing("mid")))

    pm = build_plugin_manager()

    assert list(pm.infos) == ["core", "alpha", "mid", "zeta"]
    assert [item for name, item in pm.collect("kloyst_settings") if name != "core"] == ["alpha", "mid", "zeta"]


def test_the_installed_entry_points_come_sorted_by_name():
    names = [ep.name for ep in installed_entry_points()]
    assert names == sorted(names)


def test_two_entry_points_with_one_name_are_refused(fake_entry_points):
    fake_entry_points(("twin", plugin_module("kloyst_test_twin_a")), ("twin", plugin_module("kloyst_test_twin_b")))

    with pytest.raises(ConfigurationError, match="two plugins are named 'twin'"):
        build_plugin_manager()


def test_a_plugin_cannot_take_the_name_of_the_core():
    with pytest.raises(ConfigurationError, match="two plugins are named 'core'"):
        build_plugin_manager(extra=[("core", plugin_module("kloyst_test_fake_core"))])


def test_an_entry_point_that_fails_to_import_names_itself(monkeypatch):
    broken = importlib.metadata.EntryPoint(name="broken", value="kloyst_test_no_such_module", group=ENTRY_POINT_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **_: [broken])

    with pytest.raises(ConfigurationError, match="plugin 'broken' .* failed to load"):
        build_plugin_manager()


def test_a_plugin_requiring_an_uninstalled_plugin_stops_start_up():
    needy = plugin_module("kloyst_test_needy", PluginMeta(requires=("not_installed",)))

    with pytest.raises(ConfigurationError, match="'needy' requires not_installed, which is not installed"):
        build_plugin_manager(extra=[("needy", needy)])


def test_a_requirement_on_an_installed_plugin_is_accepted():
    base = plugin_module("kloyst_test_base")
    needy = plugin_module("kloyst_test_needy_ok", PluginMeta(requires=("base",)))

    pm = build_plugin_manager(extra=[("base", base), ("needy", needy)])

    assert pm.infos["needy"].meta.requires == ("base",)


def test_an_unknown_hook_stops_start_up_naming_the_plugin_and_the_hook():
    typo = plugin_module("kloyst_test_typo", kloyst_typo=lambda: None)

    with pytest.raises(ConfigurationError, match=r"plugin 'typo'.*unknown hook 'kloyst_typo'"):
        build_plugin_manager(extra=[("typo", typo)])


def test_a_hook_argument_the_spec_does_not_offer_stops_start_up():
    wrong = plugin_module("kloyst_test_wrong_args", kloyst_routes=lambda cfg: None)

    with pytest.raises(ConfigurationError, match=r"(?s)plugin 'wrong'.*kloyst_routes.*cfg"):
        build_plugin_manager(extra=[("wrong", wrong)])


def test_plugin_meta_must_be_a_plugin_meta():
    sloppy = plugin_module("kloyst_test_sloppy")
    sloppy.plugin_meta = {"requires": ["contacts"]}

    with pytest.raises(ConfigurationError, match="plugin_meta must be a kloyst.plugins.PluginMeta"):
        build_plugin_manager(extra=[("sloppy", sloppy)])


def test_the_core_is_the_first_plugin_and_essential():
    pm = build_plugin_manager()
    assert next(iter(pm.infos)) == "core"
    assert "core" in pm.essential


def _hookspecs() -> dict:
    return {name: f for name, f in vars(hookspecs).items() if callable(f) and hasattr(f, "kloyst_spec")}


@pytest.mark.parametrize("name", sorted(_hookspecs()))
def test_every_hookspec_says_when_it_is_called_what_it_returns_and_whether_it_is_firstresult(name):
    spec = _hookspecs()[name]
    doc = inspect.getdoc(spec) or ""
    assert name.startswith("kloyst_")
    assert "Called:" in doc, f"{name}'s docstring does not say when it is called"
    assert "Returns:" in doc, f"{name}'s docstring does not say what it returns"
    if spec.kloyst_spec["firstresult"]:
        assert "firstresult" in doc and "Not firstresult" not in doc
    else:
        assert "Not firstresult" in doc, f"{name}'s docstring does not say it is not firstresult"
    for arg in inspect.signature(spec).parameters:
        assert f"{arg}:" in doc, f"{name}'s docstring does not describe its argument {arg!r}"


def test_collect_pairs_every_item_with_the_plugin_that_returned_it():
    one = plugin_module("kloyst_test_one", kloyst_outbox_handlers=lambda: {"one.topic": print})
    two = plugin_module("kloyst_test_two", kloyst_tasks=lambda: ["a", "b"])

    pm = build_plugin_manager(extra=[("one", one), ("two", two)])

    assert ("one", ("one.topic", print)) in pm.collect("kloyst_outbox_handlers")
    assert [pair for pair in pm.collect("kloyst_tasks") if pair[0] == "two"] == [("two", "a"), ("two", "b")]


def test_tenant_hooks_reach_only_the_enabled_plugins():
    heard = []
    on = plugin_module("kloyst_test_on", kloyst_vendor_event=lambda event, ctx: heard.append(("on", event)))
    off = plugin_module("kloyst_test_off", kloyst_vendor_event=lambda event, ctx: heard.append(("off", event)))
    pm = build_plugin_manager(extra=[("on", on), ("off", off)])

    TenantHooks(pm, frozenset({"core", "on"})).kloyst_vendor_event(event="E", ctx=None)

    assert heard == [("on", "E")]


def _route_config(pm: KloystPluginManager) -> Configurator:
    config = Configurator(settings={"kloyst.api.prefix": "/v1"})
    config.registry["kloyst.plugin_manager"] = pm
    config.include("kloyst.plugins.routing")
    return config


def _routes(config) -> dict:
    config.commit()
    return {route.name: route for route in config.registry.getUtility(IRoutesMapper).get_routes()}


def _gate(route) -> str | None:
    gates = [p.plugin for p in route.predicates if isinstance(p, PluginEnabledPredicate)]
    return gates[0] if len(gates) == 1 else None


def _manager(name: str, module) -> KloystPluginManager:
    pm = KloystPluginManager()
    pm.add_plugin(name, module, version="1")
    pm.check()
    return pm


def test_plugin_routes_get_the_api_prefix_and_their_plugins_gate():
    demo = plugin_module("kloyst_test_demo", kloyst_routes=lambda config: config.add_route("demo.things", "/things"))
    config = _route_config(_manager("demo", demo))

    include_plugin_routes(config)

    route = _routes(config)["demo.things"]
    assert route.generate({}) == "/v1/things"
    assert _gate(route) == "demo"


def test_a_plugin_route_named_without_the_plugins_prefix_is_refused():
    demo = plugin_module("kloyst_test_demo_misnamed",
                         kloyst_routes=lambda config: config.add_route("contacts.list", "/contacts"))
    config = _route_config(_manager("demo", demo))

    with pytest.raises(ConfigurationError, match="plugin route names start with 'demo.'"):
        include_plugin_routes(config)


def test_a_plugin_name_prefix_must_be_followed_by_a_dot():
    config = _route_config(KloystPluginManager())

    with pytest.raises(ConfigurationError):
        plugin_configurator(config, "demo", plugin_module("kloyst_test_x")).add_route("demonstration.x", "/x")


def test_a_plugin_cannot_set_the_gate_predicate_itself():
    config = _route_config(KloystPluginManager())
    configurator = plugin_configurator(config, "demo", plugin_module("kloyst_test_sneaky"))

    with pytest.raises(ConfigurationError, match="set by Kloyst, not by plugins"):
        configurator.add_route("demo.things", "/things", kloyst_plugin="core")


def test_a_plugin_cannot_hang_a_view_on_a_route_it_does_not_own():
    config = _route_config(KloystPluginManager())
    configurator = plugin_configurator(config, "demo", plugin_module("kloyst_test_hijack"))

    with pytest.raises(ConfigurationError, match="plugin views belong on the plugin's own routes"):
        configurator.add_view(lambda request: {}, route_name="auth.login", renderer="json")


def _included_views(config) -> None:
    """What a plugin's ``views.py`` ``includeme`` does."""
    config.add_route("demo.included", "/included")


def test_routes_added_from_an_included_module_keep_the_gate():
    demo = plugin_module("kloyst_test_demo_include", kloyst_routes=lambda config: config.include(_included_views))
    config = _route_config(_manager("demo", demo))

    include_plugin_routes(config)

    assert _gate(_routes(config)["demo.included"]) == "demo"


def test_with_package_keeps_the_gate():
    config = _route_config(KloystPluginManager())
    configurator = plugin_configurator(config, "demo", plugin_module("kloyst_test_pkg")).with_package("kloyst")

    configurator.add_route("demo.pkg", "/pkg")

    assert _gate(_routes(config)["demo.pkg"]) == "demo"


def test_each_plugin_configurator_is_gated_on_its_own_plugin():
    config = _route_config(KloystPluginManager())
    first = plugin_configurator(config, "first", plugin_module("kloyst_test_first"))
    second = plugin_configurator(config, "second", plugin_module("kloyst_test_second"))

    first.add_route("first.x", "/first")
    second.add_route("second.x", "/second")

    routes = _routes(config)
    assert (_gate(routes["first.x"]), _gate(routes["second.x"])) == ("first", "second")


def test_a_plugins_admin_route_is_ungated_and_its_views_require_platform_admin():
    from kloyst.testing.route_walk import route_permissions

    config = _route_config(KloystPluginManager())
    with config.route_prefix_context("/v1"):
        configurator = plugin_configurator(config, "demo", plugin_module("kloyst_test_admin"))
        configurator.add_admin_route("admin.demo.things", "/admin/things")
        configurator.add_view(lambda request: {}, route_name="admin.demo.things", request_method="GET",
                              renderer="json")

    route = _routes(config)["admin.demo.things"]
    assert _gate(route) is None and route.pattern == "v1/admin/things"
    assert route_permissions(config.registry, "admin.demo.things") == {"platform.admin"}


@pytest.mark.parametrize("name", ["demo.things", "admin.other.things", "admin.demonstration.things"])
def test_a_plugins_admin_route_is_named_admin_dot_plugin(name):
    configurator = plugin_configurator(_route_config(KloystPluginManager()), "demo", plugin_module("kloyst_test_an"))

    with pytest.raises(ConfigurationError, match="start with 'admin.demo.'"):
        configurator.add_admin_route(name, "/admin/things")


def test_a_view_on_a_plugins_admin_route_cannot_ask_for_less_than_platform_admin():
    configurator = plugin_configurator(_route_config(KloystPluginManager()), "demo", plugin_module("kloyst_test_av"))
    configurator.add_admin_route("admin.demo.things", "/admin/things")

    with pytest.raises(ConfigurationError, match="require platform.admin"):
        configurator.add_view(lambda request: {}, route_name="admin.demo.things", permission="vendor.member")
