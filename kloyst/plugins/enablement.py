"""Per-vendor plugin enablement: the one place that answers "is plugin X on for this vendor?".

Routes (their predicate), tasks (checked when they run) and tenant hooks (called through
:func:`tenant_hooks`) all ask here, so no view or task decides for itself. A vendor's
``VendorPlugin`` row outlives a disable (``enabled`` false, its settings kept); only rows with
``enabled`` set count.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, false, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from kloyst.db import utcnow
from kloyst.errors import Conflict, NotFound
from kloyst.plugins.contracts import PluginSettings
from kloyst.plugins.manager import KloystPluginManager
from kloyst.plugins.models import VendorPlugin
from kloyst.plugins.settings import SettingsReader


def enabled_plugins(db: Session | Connection, pm: KloystPluginManager, vendor_id: uuid.UUID | None) -> frozenset[str]:
    """Plugin names on for ``vendor_id``: essential plugins plus the vendor's enabled rows that are still installed.

    Read in ``db``'s transaction, a session's or a Core connection's (an outbox writes on either).
    """
    if vendor_id is None:
        return pm.essential
    rows = db.scalars(select(VendorPlugin.plugin).where(VendorPlugin.vendor_id == vendor_id,
                                                        VendorPlugin.enabled == true()))
    return pm.essential | (frozenset(rows) & pm.infos.keys())


def vendor_row(db: Session, vendor_id: uuid.UUID, name: str) -> VendorPlugin | None:
    """The vendor's row for plugin ``name``, enabled or not."""
    return db.scalars(select(VendorPlugin).where(VendorPlugin.vendor_id == vendor_id,
                                                 VendorPlugin.plugin == name)).one_or_none()


def enable(db: Session, pm: KloystPluginManager, vendor_id: uuid.UUID, name: str,
           user_id: uuid.UUID | None) -> bool:
    """Turn ``name`` on for the vendor; return False when it already was. Refuses unmet requirements (409)."""
    info = pm.infos.get(name)
    if info is None:
        raise NotFound(f"no plugin named {name!r} is installed")
    current = enabled_plugins(db, pm, vendor_id)
    if name in current:
        return False
    missing = [r for r in info.meta.requires if r not in current]
    if missing:
        raise Conflict(f"plugin {name!r} requires {', '.join(missing)}; enable {'it' if len(missing) == 1 else 'them'} "
                       "first", code="plugin_requirements_missing", details={"missing": missing})
    # Disabled before, or given settings while off: the row, and its settings, come back. Conditional,
    # so of two concurrent enables only one reports the change.
    if _switch(db, vendor_id, name, enabled=True, enabled_at=utcnow(), enabled_by=user_id, disabled_at=None):
        return True
    try:
        with db.begin_nested():
            db.add(VendorPlugin(vendor_id=vendor_id, plugin=name, enabled_by=user_id))
    except IntegrityError:  # a concurrent request enabled it first: the outcome is the same
        return False
    return True


def disable(db: Session, pm: KloystPluginManager, vendor_id: uuid.UUID, name: str, *, purge: bool = False) -> bool:
    """Turn ``name`` off, keeping the vendor's settings for it (``purge``: deleting them too).

    Refuses essential plugins and plugins others still need (409). Returns whether the plugin
    was on; a purge of a plugin already off still deletes its settings.
    """
    info = pm.infos.get(name)
    if info is None:
        raise NotFound(f"no plugin named {name!r} is installed")
    if info.meta.essential:
        raise Conflict(f"plugin {name!r} is essential and cannot be disabled", code="plugin_essential")
    current = enabled_plugins(db, pm, vendor_id)
    if name not in current:
        if purge:
            db.execute(delete(VendorPlugin).where(VendorPlugin.vendor_id == vendor_id, VendorPlugin.plugin == name))
        return False
    dependants = sorted(n for n in current if name in pm.infos[n].meta.requires)
    if dependants:
        raise Conflict(f"plugin {name!r} is required by {', '.join(dependants)}; disable "
                       f"{'it' if len(dependants) == 1 else 'them'} first", code="plugin_required_by_others",
                       details={"required_by": dependants})
    if purge:
        db.execute(delete(VendorPlugin).where(VendorPlugin.vendor_id == vendor_id, VendorPlugin.plugin == name))
        return True
    return _switch(db, vendor_id, name, enabled=False, disabled_at=utcnow())


def _switch(db: Session, vendor_id: uuid.UUID, name: str, *, enabled: bool, **values) -> bool:
    """Set the row's ``enabled`` if it is not already; whether a row changed."""
    result = db.execute(update(VendorPlugin)
                        .where(VendorPlugin.vendor_id == vendor_id, VendorPlugin.plugin == name,
                               VendorPlugin.enabled == (false() if enabled else true()))
                        .values(enabled=enabled, **values))
    return bool(result.rowcount)  # type: ignore[attr-defined]  # a CursorResult for an UPDATE


def write_settings(db: Session, vendor_id: uuid.UUID, name: str, settings: dict[str, Any]) -> VendorPlugin:
    """Store the vendor's (already validated) settings for plugin ``name``, enabled or not.

    A plugin the vendor never enabled gets a disabled row holding them, so they are in place
    the moment it is enabled.
    """
    row = vendor_row(db, vendor_id, name)
    if row is None:
        try:
            with db.begin_nested():
                row = VendorPlugin(vendor_id=vendor_id, plugin=name, enabled=False, settings=settings)
                db.add(row)
            return row
        except IntegrityError:  # a concurrent enable or write created it: write into that row
            row = vendor_row(db, vendor_id, name)
            assert row is not None
    row.settings = settings
    db.flush()
    return row


class TenantHooks:
    """``request.tenant_hooks.kloyst_x(...)`` calls hook ``kloyst_x`` only on the vendor's enabled plugins.

    ``collect(hook)`` gives each item with the plugin that returned it, and ``settings_of(plugin)``
    that plugin's :class:`~kloyst.plugins.contracts.PluginSettings` for the vendor (read once,
    when first asked for), so a caller can hand each plugin its own settings. Build one with
    :meth:`for_vendor`, or take ``request.tenant_hooks`` / ``ctx.tenant_hooks``.
    """

    def __init__(self, pm: KloystPluginManager, enabled: frozenset[str], *,
                 settings: SettingsReader | None = None) -> None:
        self._pm = pm
        self._enabled = enabled
        self._settings = settings

    @classmethod
    def for_vendor(cls, db: Session, pm: KloystPluginManager, vendor_id: uuid.UUID | None,
                   settings: Mapping[str, Any], *, enabled: frozenset[str] | None = None) -> TenantHooks:
        """The vendor's hooks, enablement and settings read through ``db`` (``enabled``: already known)."""
        if enabled is None:
            enabled = enabled_plugins(db, pm, vendor_id)
        return cls(pm, enabled, settings=SettingsReader(db, pm, settings, vendor_id))

    @property
    def enabled(self) -> frozenset[str]:
        return self._enabled

    def __getattr__(self, hook_name: str):
        if not hook_name.startswith("kloyst_"):
            raise AttributeError(hook_name)
        return self._pm.for_plugins(hook_name, self._enabled)

    def collect(self, hook_name: str, **kwargs) -> list[tuple[str, object]]:
        """``(plugin, item)`` for every item the enabled plugins return from collector hook ``hook_name``,
        in load order (as :meth:`KloystPluginManager.collect`, but only the vendor's plugins are called)."""
        results: list[tuple[str, object]] = []
        for name in self._pm.infos:
            if name not in self._enabled:
                continue
            for result in self._pm.for_plugins(hook_name, [name])(**kwargs):
                if isinstance(result, dict):
                    results.extend((name, pair) for pair in result.items())
                else:
                    results.extend((name, item) for item in (result or []))
        return results

    def settings_of(self, plugin: str) -> PluginSettings:
        """Plugin ``plugin``'s settings for the vendor: its ini ones and the vendor's (validated, with defaults)."""
        if self._settings is None:
            raise RuntimeError("these TenantHooks were built without settings; use TenantHooks.for_vendor()")
        return self._settings.of(plugin)


def _enabled_plugins(request) -> frozenset[str]:
    return enabled_plugins(request.db, request.registry["kloyst.plugin_manager"], request.vendor_id)


def _tenant_hooks(request) -> TenantHooks:
    pm = request.registry["kloyst.plugin_manager"]
    return TenantHooks(pm, request.enabled_plugins,
                       settings=SettingsReader(request.db, pm, request.registry.settings, request.vendor_id))


def includeme(config) -> None:
    config.add_request_method(_enabled_plugins, "enabled_plugins", reify=True)
    config.add_request_method(_tenant_hooks, "tenant_hooks", reify=True)
