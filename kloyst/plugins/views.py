"""``/plugins``: what is installed, what is on for my vendor, switching plugins on and off, and their settings.

Per-vendor settings (:mod:`kloyst.plugins.settings`): ``/plugins/{name}/settings`` for the
vendor's admins, only for a plugin whose ``PluginMeta.vendor_editable`` is set, and
``/admin/vendors/{id}/plugins/{name}/settings`` for platform admins, for any plugin with a
settings schema. Both read and write the same row, whether the plugin is on or off.
"""

from __future__ import annotations

import uuid

from kloyst import events
from kloyst.accounts.models import Vendor
from kloyst.errors import Forbidden, NotFound
from kloyst.http.resources import load_platform_row
from kloyst.plugins import enablement, settings
from kloyst.plugins.schemas import (PluginAnswer, PluginDisable, PluginList, PluginSettingsAnswer, PluginSettingsBody,
                                    PluginSwitched)


def _plugin_json(info, enabled: frozenset[str]) -> dict:
    return {**info.as_json(), "enabled": info.name in enabled, "has_settings": info.meta.vendor_settings is not None,
            "settings_editable": info.meta.vendor_editable}


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
    purge = request.validated_query().purge
    changed = enablement.disable(request.db, pm, identity.vendor_id, info.name, purge=purge)
    if changed:
        events.record(request.outbox, identity.vendor_id, "PluginDisabled", plugin=info.name,
                      by_user_id=str(identity.user_id))
    enabled = enablement.enabled_plugins(request.db, pm, identity.vendor_id)
    return {"plugin": _plugin_json(info, enabled), "changed": changed}


def _settings_answer(request, vendor_id: uuid.UUID, info, schema) -> dict:
    row = enablement.vendor_row(request.db, vendor_id, info.name)
    enabled = enablement.enabled_plugins(request.db, request.registry["kloyst.plugin_manager"], vendor_id)
    return {"plugin": info.name, "vendor_id": str(vendor_id), "enabled": info.name in enabled,
            "editable_by_vendor": info.meta.vendor_editable,
            "settings": settings.resolve_stored(info.name, schema, row.settings if row is not None else None),
            "defaults": settings.defaults(schema), "settings_schema": schema.model_json_schema()}


def _write(request, vendor_id: uuid.UUID, info, schema) -> dict:
    values = settings.validate_input(schema, request.validated().settings)
    enablement.write_settings(request.db, vendor_id, info.name, values)
    return _settings_answer(request, vendor_id, info, schema)


def _vendor_editable(request):
    info, schema = settings.schema_of(request.registry["kloyst.plugin_manager"], request.matchdict["name"])
    if not info.meta.vendor_editable:
        raise Forbidden(f"the settings of plugin {info.name!r} are set by the platform's admins",
                        code="plugin_settings_not_editable")
    return info, schema


def get_settings(request):
    info, schema = _vendor_editable(request)
    return _settings_answer(request, request.identity.vendor_id, info, schema)


def put_settings(request):
    info, schema = _vendor_editable(request)
    return _write(request, request.identity.vendor_id, info, schema)


def _admin_target(request):
    vendor_id = load_platform_row(request, Vendor, "vendor").id
    info, schema = settings.schema_of(request.registry["kloyst.plugin_manager"], request.matchdict["name"])
    return vendor_id, info, schema


def admin_get_settings(request):
    return _settings_answer(request, *_admin_target(request))


def admin_put_settings(request):
    return _write(request, *_admin_target(request))


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
                    permission="vendor.admin", query_schema=PluginDisable, response_schema=PluginSwitched)
    config.add_route("plugins.settings", "/plugins/{name}/settings")
    config.add_view(get_settings, route_name="plugins.settings", request_method="GET", renderer="json",
                    permission="vendor.admin", response_schema=PluginSettingsAnswer)
    config.add_view(put_settings, route_name="plugins.settings", request_method="PUT", renderer="json",
                    permission="vendor.admin", body_schema=PluginSettingsBody, response_schema=PluginSettingsAnswer)
    config.add_route("admin.plugins.settings", "/admin/vendors/{id}/plugins/{name}/settings")
    config.add_view(admin_get_settings, route_name="admin.plugins.settings", request_method="GET", renderer="json",
                    permission="platform.admin", response_schema=PluginSettingsAnswer)
    config.add_view(admin_put_settings, route_name="admin.plugins.settings", request_method="PUT", renderer="json",
                    permission="platform.admin", body_schema=PluginSettingsBody, response_schema=PluginSettingsAnswer)
