"""Per-vendor plugin enablement: the one place that answers "is plugin X on for this vendor?".

Routes (their predicate), tasks (checked when they run) and tenant hooks (called through
:func:`tenant_hooks`) all ask here, so no view or task decides for itself.
"""

from __future__ import annotations

import uuid

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kloyst.errors import Conflict, NotFound
from kloyst.plugins.manager import KloystPluginManager
from kloyst.plugins.models import VendorPlugin


def enabled_plugins(db: Session, pm: KloystPluginManager, vendor_id: uuid.UUID | None) -> frozenset[str]:
    """Plugin names on for ``vendor_id``: essential plugins plus the vendor's rows that are still installed."""
    if vendor_id is None:
        return pm.essential
    rows = db.scalars(select(VendorPlugin.plugin).where(VendorPlugin.vendor_id == vendor_id))
    return pm.essential | (frozenset(rows) & pm.infos.keys())


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
    try:
        with db.begin_nested():
            db.add(VendorPlugin(vendor_id=vendor_id, plugin=name, enabled_by=user_id))
    except IntegrityError:  # a concurrent request enabled it first: the outcome is the same
        return False
    return True


def disable(db: Session, pm: KloystPluginManager, vendor_id: uuid.UUID, name: str) -> bool:
    """Turn ``name`` off; refuses essential plugins and plugins others still need (409)."""
    info = pm.infos.get(name)
    if info is None:
        raise NotFound(f"no plugin named {name!r} is installed")
    if info.meta.essential:
        raise Conflict(f"plugin {name!r} is essential and cannot be disabled", code="plugin_essential")
    current = enabled_plugins(db, pm, vendor_id)
    if name not in current:
        return False
    dependants = sorted(n for n in current if name in pm.infos[n].meta.requires)
    if dependants:
        raise Conflict(f"plugin {name!r} is required by {', '.join(dependants)}; disable "
                       f"{'it' if len(dependants) == 1 else 'them'} first", code="plugin_required_by_others",
                       details={"required_by": dependants})
    db.execute(delete(VendorPlugin).where(VendorPlugin.vendor_id == vendor_id, VendorPlugin.plugin == name))
    return True


class TenantHooks:
    """``request.tenant_hooks.kloyst_x(...)`` calls hook ``kloyst_x`` only on the vendor's enabled plugins."""

    def __init__(self, pm: KloystPluginManager, enabled: frozenset[str]) -> None:
        self._pm = pm
        self._enabled = enabled

    def __getattr__(self, hook_name: str):
        if not hook_name.startswith("kloyst_"):
            raise AttributeError(hook_name)
        return self._pm.for_plugins(hook_name, self._enabled)


def _enabled_plugins(request) -> frozenset[str]:
    return enabled_plugins(request.db, request.registry["kloyst.plugin_manager"], request.vendor_id)


def _tenant_hooks(request) -> TenantHooks:
    return TenantHooks(request.registry["kloyst.plugin_manager"], request.enabled_plugins)


def includeme(config) -> None:
    config.add_request_method(_enabled_plugins, "enabled_plugins", reify=True)
    config.add_request_method(_tenant_hooks, "tenant_hooks", reify=True)
