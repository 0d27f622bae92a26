"""``/plugins``: what is installed, what is on for my vendor, and switching plugins on and off."""

from __future__ import annotations

from kloyst import events
from kloyst.errors import NotFound
from kloyst.plugins import enablement
from kloyst.plugins.schemas import PluginAnswer, PluginList, PluginSwitched


def _plugin_json(info, enabled: frozenset[str]) -> dict:
    return {**info.as_json(), "enabled": info.name in enabled}


def list_plugins(request):
    pm = request.registry["kloyst.plugin_manager"]
    enabled = request.enabled_plugins
    return {"items": [_plugin_json(info, enabled) for info in pm.infos.values()]}


def _info(request):
    pm = request.registry["kloyst.plugin_manager"]
    info = pm.infos.get(request.matchdict["name"])
    if info is None:
        raise NotFound(f"no plugin named {request.matchdict['name']!r} is installed")
    return pm, info


def get_plugin(request):
    _, info = _info(request)
    return {"plugin": _plugin_json(info, request.enabled_plugins)}


def enable_plugin(request):
    pm, info = _info(request)
    identity = request.identity
    changed = enablement.enable(request.db, pm, identity.vendor_id, info.name, identity.user_id)
    if changed:
        events.record(request.outbox, identity.vendor_id, "PluginEnabled", plugin=info.name,
                      by_user_id=str(identity.user_id))
    enabled = enablement.enabled_plugins(request.db, pm, identity.vendor_id)
    return {"plugin": _plugin_json(info, enabled), "changed": changed}


def disable_plugin(request):
    pm, info = _info(request)
    identity = request.identity
    changed = enablement.disable(request.db, pm, identity.vendor_id, info.name)
    if changed:
        events.record(request.outbox, identity.vendor_id, "PluginDisabled", plugin=info.name,
                      by_user_id=str(identity.user_id))
    enabled = enablement.enabled_plugins(request.db, pm, identity.vendor_id)
    return {"plugin": _plugin_json(info, enabled), "changed": changed}


def includeme(config) -> None:
    config.add_route("plugins.collection", "/plugins")
    config.add_view(list_plugins, route_name="plugins.collection", request_method="GET", renderer="json",
                    response_schema=PluginList)
    config.add_route("plugins.item", "/plugins/{name}")
    config.add_view(get_plugin, route_name="plugins.item", request_method="GET", renderer="json",
                    response_schema=PluginAnswer)
    config.add_view(enable_plugin, route_name="plugins.item", request_method="PUT", renderer="json",
                    permission="vendor.admin", response_schema=PluginSwitched)
    config.add_view(disable_plugin, route_name="plugins.item", request_method="DELETE", renderer="json",
                    permission="vendor.admin", response_schema=PluginSwitched)
