"""The route gate: plugin routes exist for every vendor but match only for vendors who enabled the plugin.

Plugins receive a :class:`PluginConfigurator` in ``kloyst_routes``. Its ``add_route`` is
the core directive: it prefixes the API prefix, checks the route name is the plugin's
own (``<plugin>.<resource>``), and attaches the ``kloyst_plugin`` route predicate. A vendor
without the plugin therefore falls through to 404 — the same answer as for a route that
does not exist, so nothing leaks. The gate lives here, not in any view. Platform-admin
routes of a plugin (``add_admin_route``) are the one ungated kind; in exchange every view
on them requires ``platform.admin``.
"""

from __future__ import annotations

from pyramid.config import Configurator

from kloyst.config import ConfigurationError
from kloyst.http.resources import model_factory


class PluginEnabledPredicate:
    """Route predicate ``kloyst_plugin=<name>``: true when the caller's vendor has the plugin on.

    A request with no vendor (anonymous, or a platform admin) passes the predicate so that
    the view's permission answers it (401 or 403) instead of a confusing 404.
    """

    def __init__(self, value: str, config) -> None:
        self.plugin = value

    def text(self) -> str:
        return f"kloyst_plugin = {self.plugin}"

    phash = text

    def __call__(self, info, request) -> bool:
        if request.vendor_id is None:
            return True
        return self.plugin in request.enabled_plugins


class PluginConfigurator(Configurator):
    """The configurator a plugin's ``kloyst_routes`` receives; ``add_route`` is gated.

    Each plugin gets its own subclass with ``kloyst_plugin`` set on the class (see
    :func:`plugin_configurator`): Pyramid builds the configurators of ``config.include``
    and ``with_package`` with ``self.__class__(...)``, so the plugin's name, and with it the
    gate, follows the plugin into its included modules.
    """

    kloyst_plugin: str = ""

    def add_route(self, name, pattern=None, *, model=None, **kw):
        plugin = self.kloyst_plugin
        if not plugin:
            raise ConfigurationError("a PluginConfigurator needs its plugin's name; use plugin_configurator()")
        if not name.startswith(f"{plugin}."):
            raise ConfigurationError(f"plugin {plugin!r} added route {name!r}: plugin route names start with "
                                     f"'{plugin}.'")
        if "kloyst_plugin" in kw:
            raise ConfigurationError(f"route {name!r}: the kloyst_plugin predicate is set by Kloyst, not by plugins")
        if model is not None:
            kw["factory"] = model_factory(model)
        return super().add_route(name, pattern, kloyst_plugin=plugin, **kw)

    def add_admin_route(self, name, pattern=None, **kw):
        """A platform-admin route of the plugin (``admin.<plugin>.…``): not gated, admins only.

        Platform admins belong to no vendor, so an enablement gate means nothing to them, and
        a vendor must get the 403 of a core admin route, not a 404 that depends on its plugins.
        What replaces the gate is the permission: every view on such a route requires
        ``platform.admin`` (:meth:`add_view` sets it and refuses any other). No ``model=``:
        the rows admins manage are platform rows, loaded by the view.
        """
        plugin = self.kloyst_plugin
        if not plugin:
            raise ConfigurationError("a PluginConfigurator needs its plugin's name; use plugin_configurator()")
        if not name.startswith(f"admin.{plugin}."):
            raise ConfigurationError(f"plugin {plugin!r} added admin route {name!r}: plugin admin route names "
                                     f"start with 'admin.{plugin}.'")
        if "kloyst_plugin" in kw or "factory" in kw:
            raise ConfigurationError(f"admin route {name!r}: no gate and no factory; the view loads platform rows")
        return super().add_route(name, pattern, **kw)

    def add_view(self, view=None, name="", *args, route_name=None, **kw):
        """Views go on the plugin's own routes only: a view on a core route would skip the gate."""
        plugin = self.kloyst_plugin
        if route_name is not None and route_name.startswith(f"admin.{plugin}."):
            if kw.setdefault("permission", "platform.admin") != "platform.admin":
                raise ConfigurationError(f"view on admin route {route_name!r}: admin routes are not gated, so "
                                         "their views require platform.admin")
            return super().add_view(view, name, *args, route_name=route_name, **kw)
        if route_name is None or not route_name.startswith(f"{plugin}."):
            raise ConfigurationError(f"plugin {plugin!r} added a view to route {route_name!r}: plugin views belong "
                                     f"on the plugin's own routes ('{plugin}.…'), which carry its gate")
        return super().add_view(view, name, *args, route_name=route_name, **kw)


def plugin_configurator(config: Configurator, plugin_name: str, module) -> PluginConfigurator:
    package = module.__name__.rpartition(".")[0] or module.__name__
    cls = type(f"PluginConfigurator_{plugin_name}", (PluginConfigurator,), {"kloyst_plugin": plugin_name})
    configurator = cls(
        registry=config.registry,
        package=package,
        root_package=config.root_package,
        autocommit=config.autocommit,
        route_prefix=config.route_prefix,
        introspection=config.introspection,
    )
    return configurator


def include_plugin_routes(config: Configurator) -> None:
    """Call every installed plugin's ``kloyst_routes`` with its own gated configurator, under the API prefix."""
    pm = config.registry["kloyst.plugin_manager"]
    with config.route_prefix_context(config.get_settings()["kloyst.api.prefix"]):
        for name, info in pm.infos.items():
            pm.for_plugins("kloyst_routes", [name])(config=plugin_configurator(config, name, info.module))


def includeme(config) -> None:
    config.add_route_predicate("kloyst_plugin", PluginEnabledPredicate)
