"""Per-vendor plugin settings: what a plugin declares, what a vendor has stored, what the plugin's code gets.

A plugin declares the schema of its per-vendor settings as ``PluginMeta(vendor_settings=Model)``
(a pydantic model, every field with a default) and whether the vendor's own admins may change
them (``vendor_editable``). The values live in ``VendorPlugin.settings``; the row outlives a
disable, so re-enabling a plugin restores them (``DELETE /v1/plugins/{name}?purge=true`` deletes
them).

The plugin's code never reads the row: it gets :class:`kloyst.api.PluginSettings` — the
plugin's ini/environment settings (its ``kloyst_settings``, keys ``<plugin>.*``) and the vendor's
settings validated, the schema's defaults filled in — from ``ctx.plugin_settings()`` in a task,
``RuleContext.settings`` in a pricing rule, and a merge strategy's ``settings`` argument.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from kloyst.errors import NotFound, Unprocessable
from kloyst.http.validation import MAX_REPORTED_FIELDS, nul_characters, validation_details
from kloyst.plugins.contracts import PluginSettings
from kloyst.plugins.manager import KloystPluginManager, PluginInfo
from kloyst.plugins.models import VendorPlugin

log = logging.getLogger(__name__)


def schema_of(pm: KloystPluginManager, name: str) -> tuple[PluginInfo, type[BaseModel]]:
    """The plugin and its ``vendor_settings`` schema; 404 when it is not installed or declares none."""
    info = pm.infos.get(name)
    if info is None:
        raise NotFound(f"no plugin named {name!r} is installed")
    if info.meta.vendor_settings is None:
        raise NotFound(f"plugin {name!r} has no per-vendor settings")
    return info, info.meta.vendor_settings


def defaults(schema: type[BaseModel]) -> dict[str, Any]:
    return schema().model_dump(mode="json")


def validate_input(schema: type[BaseModel], data: Any) -> dict[str, Any]:
    """A settings body from the API as the stored JSON: a 422 naming each wrong field (``settings.<field>``)."""
    problems = nul_characters(data, "settings")
    if not problems:
        try:
            return schema.model_validate_json(json.dumps(data), strict=True).model_dump(mode="json")
        except ValidationError as exc:
            problems = [{**d, "field": "settings" if d["field"] == "(body)" else f"settings.{d['field']}"}
                        for d in validation_details(exc)]
    summary = "; ".join(f"{d['field']}: {d['problem']}" for d in problems[:5])
    raise Unprocessable(f"the settings are invalid: {summary}", fields=problems[:MAX_REPORTED_FIELDS])


def resolve_stored(name: str, schema: type[BaseModel] | None, stored: Mapping | None) -> dict[str, Any]:
    """Stored settings as the plugin gets them: validated, defaults filled in.

    What the API writes is valid, but a plugin's schema may change under stored values (an
    upgrade drops a field, narrows a type): a value that no longer validates is logged and
    replaced by the schema's default, so a task never fails on a setting nobody can see.
    A plugin without a schema gets what is stored, as it is.
    """
    stored = dict(stored or {})
    if schema is None:
        return stored
    for _ in range(2):
        try:
            return schema.model_validate(stored).model_dump(mode="json")
        except ValidationError as exc:
            bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
            log.warning("plugin %s: stored vendor settings %s no longer validate; their defaults are used",
                        name, ", ".join(sorted(bad)) or "(all)")
            stored = {k: v for k, v in stored.items() if k not in bad} if bad else {}
    return defaults(schema)


def ini_settings(settings: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The plugin's ini/environment settings (keys ``<name>.<key>``), keyed ``<key>``."""
    prefix = f"{name}."
    return {key[len(prefix):]: value for key, value in settings.items() if key.startswith(prefix)}


class SettingsReader:
    """One vendor's plugin settings, read in one query the first time any is asked for."""

    def __init__(self, db: Session | None, pm: KloystPluginManager, settings: Mapping[str, Any],
                 vendor_id: uuid.UUID | None) -> None:
        self._db = db
        self._pm = pm
        self._settings = settings
        self._vendor_id = vendor_id
        self._stored: dict[str, dict] | None = None
        self._resolved: dict[str, PluginSettings] = {}

    def _vendor_stored(self) -> dict[str, dict]:
        if self._stored is None:
            if self._db is None or self._vendor_id is None:
                self._stored = {}
            else:
                rows = self._db.execute(select(VendorPlugin.plugin, VendorPlugin.settings)
                                        .where(VendorPlugin.vendor_id == self._vendor_id)).all()
                self._stored = {plugin: dict(value or {}) for plugin, value in rows}
        return self._stored

    def vendor(self, name: str) -> dict[str, Any]:
        """The vendor's settings for plugin ``name``, validated, defaults filled in."""
        return dict(self.of(name).vendor)

    def of(self, name: str) -> PluginSettings:
        """Plugin ``name``'s :class:`PluginSettings` for this vendor."""
        found = self._resolved.get(name)
        if found is None:
            info = self._pm.infos.get(name)
            schema = info.meta.vendor_settings if info is not None else None
            found = self._resolved[name] = PluginSettings(
                plugin=name, ini=ini_settings(self._settings, name),
                vendor=resolve_stored(name, schema, self._vendor_stored().get(name)))
        return found
