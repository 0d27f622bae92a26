"""Building the plugin manager: entry points in, a checked set of plugins out.

The manager is built by whoever needs it (the app factory, the worker, the CLI) and
stored on the registry; nothing is registered at import time, so tests build as many
independent managers as they like.
"""

from __future__ import annotations

import importlib.metadata
import logging
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Iterable

import pluggy
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from pydantic import BaseModel

from kloyst.config import ConfigurationError
from kloyst.plugins import hookspecs
from kloyst.version import __version__

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "kloyst.plugins"
CORE_DISTRIBUTION = "kloyst"  # the distribution of the core and the first-party plugins

hookimpl = pluggy.HookimplMarker("kloyst")


@dataclass(frozen=True)
class PluginMeta:
    """What a plugin says about itself, as ``plugin_meta`` in its ``plugin.py``.

    ``requires`` names plugins that must be enabled for a vendor before this one can be;
    ``essential`` plugins are on for every vendor and cannot be disabled (core features).
    ``kloyst_versions`` is the PEP 440 range of Kloyst versions the plugin was made for
    (``">=0.2,<0.3"``): start-up refuses it under any other version, in one line, rather than
    let it fail later on an API that changed (CHANGELOG.md says what changes when). Empty means
    the plugin ships inside Kloyst itself, or says nothing: it is loaded, with a warning for a
    third party's.

    ``vendor_settings`` is the pydantic model (a :class:`kloyst.api.Schema`) of the plugin's
    per-vendor settings, every field with a default; platform admins set them through
    ``/v1/admin/vendors/{id}/plugins/{name}/settings``, and the vendor's admins through
    ``/v1/plugins/{name}/settings`` when ``vendor_editable``. The plugin's code receives them
    validated, defaults filled in (:class:`kloyst.api.PluginSettings`).
    """

    description: str = ""
    requires: tuple[str, ...] = ()
    essential: bool = False
    kloyst_versions: str = ""
    vendor_settings: type | None = None
    vendor_editable: bool = False


@dataclass(frozen=True)
class PluginInfo:
    name: str
    version: str
    module: object
    meta: PluginMeta = field(default_factory=PluginMeta)
    distribution: str | None = None

    def as_json(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "description": self.meta.description,
            "requires": list(self.meta.requires),
            "essential": self.meta.essential,
            "kloyst_versions": self.meta.kloyst_versions,
            "distribution": self.distribution,
        }


class KloystPluginManager(pluggy.PluginManager):
    """A pluggy manager that also remembers each plugin's metadata, in load order."""

    def __init__(self) -> None:
        super().__init__("kloyst")
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        # Historic: every plugin registered from now on adds its own hookspecs as it is registered.
        self.hook.kloyst_addhooks.call_historic(kwargs={"pluginmanager": self})

    def add_plugin(self, name: str, module: object, version: str, distribution: str | None = None) -> PluginInfo:
        if name in self.infos:
            raise ConfigurationError(f"two plugins are named {name!r}; plugin names must be unique")
        meta = getattr(module, "plugin_meta", None) or PluginMeta()
        if not isinstance(meta, PluginMeta):
            raise ConfigurationError(f"plugin {name!r}: plugin_meta must be a kloyst.plugins.PluginMeta")
        check_compatible(name, meta, distribution)
        check_vendor_settings(name, meta)
        info = PluginInfo(name=name, version=version, module=module, meta=meta, distribution=distribution)
        try:
            self.register(module, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:  # a hook argument the spec lacks; a module twice
            # A spec added by this plugin (kloyst_addhooks) can fail an earlier plugin's implementation: name that one.
            culprit = getattr(exc, "plugin", None)
            blamed = self.get_name(culprit) if culprit is not None and culprit is not module else None
            raise ConfigurationError(f"plugin {blamed or name!r}: {exc}") from exc
        self.infos[name] = info
        return info

    @property
    def essential(self) -> frozenset[str]:
        return frozenset(n for n, i in self.infos.items() if i.meta.essential)

    def module_of(self, name: str) -> object:
        return self.infos[name].module

    def check(self) -> None:
        """Fail start-up on unknown hooks and on requirements nobody installed."""
        try:
            self.check_pending()
        except pluggy.PluginValidationError as exc:  # a misspelt hook would otherwise never be called
            raise ConfigurationError(f"plugin {self.get_name(exc.plugin)!r}: {exc}; "
                                     "see docs/plugin_hooks.md") from exc
        for info in self.infos.values():
            missing = [r for r in info.meta.requires if r not in self.infos]
            if missing:
                raise ConfigurationError(
                    f"plugin {info.name!r} requires {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                    "not installed")

    def collect(self, hook_name: str, **kwargs) -> list[tuple[str, Any]]:
        """Call a collector hook on each plugin in load order; ``(plugin_name, item)`` for every item returned.

        The owner travels with each item, so a task or handler knows which plugin's
        enablement gates it.
        """
        results: list[tuple[str, Any]] = []
        for name in self.infos:
            for result in self.for_plugins(hook_name, [name])(**kwargs):
                if isinstance(result, dict):
                    results.extend((name, pair) for pair in result.items())
                else:
                    results.extend((name, item) for item in (result or []))
        return results

    def for_plugins(self, hook_name: str, names: Iterable[str]):
        """A caller for ``hook_name`` that reaches only the named plugins (tenant hooks use this)."""
        keep = set(names)
        remove = [self.get_plugin(n) for n in self.infos if n not in keep]
        return self.subset_hook_caller(hook_name, remove_plugins=remove)


def check_vendor_settings(name: str, meta: PluginMeta) -> None:
    """Refuse a ``vendor_settings`` that is not a pydantic model whose every field has a default."""
    schema = meta.vendor_settings
    if schema is None:
        if meta.vendor_editable:
            raise ConfigurationError(f"plugin {name!r}: vendor_editable needs a vendor_settings schema")
        return
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise ConfigurationError(f"plugin {name!r}: vendor_settings must be a pydantic model (kloyst.api.Schema), "
                                 f"not {schema!r}")
    required = sorted(n for n, f in schema.model_fields.items() if f.is_required())
    if required:
        raise ConfigurationError(f"plugin {name!r}: every field of vendor_settings needs a default (a vendor "
                                 f"starts from them); {', '.join(required)} {'has' if len(required) == 1 else 'have'} "
                                 "none")


def check_compatible(name: str, meta: PluginMeta, distribution: str | None, version: str = __version__) -> None:
    """Refuse, in one line, a plugin whose ``kloyst_versions`` does not include this Kloyst's ``version``."""
    if not meta.kloyst_versions:
        if distribution not in (None, CORE_DISTRIBUTION):
            log.warning("plugin %r (%s) does not say which Kloyst versions it supports (PluginMeta.kloyst_versions)",
                        name, distribution)
        return
    try:
        supported = SpecifierSet(meta.kloyst_versions)
    except InvalidSpecifier:
        raise ConfigurationError(f"plugin {name!r}: kloyst_versions {meta.kloyst_versions!r} is not a version range "
                                 "such as \">=0.2,<0.3\"") from None
    if not supported.contains(version, prereleases=True):
        raise ConfigurationError(f"plugin {name!r} supports Kloyst {supported}, not {version}: install a release of "
                                 f"{distribution or name} made for Kloyst {version}")


# Kloyst's own essential features go through the same hooks as everyone else's, and the plugin is found
# the same way: by name, like an entry point. The manager sits below everything a plugin uses (the queue,
# the outbox, mail…), the core plugin above all of it, so the manager must not import it.
CORE_PLUGINS = (importlib.metadata.EntryPoint(name="core", value="kloyst.core_plugin", group=ENTRY_POINT_GROUP),)


def installed_entry_points() -> list[importlib.metadata.EntryPoint]:
    """The ``kloyst.plugins`` entry points, sorted by name so load order never depends on the filesystem."""
    return sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def build_plugin_manager(extra: Iterable[tuple[str, object]] = ()) -> KloystPluginManager:
    """Build a manager with the core plugin, every installed entry point, then ``extra`` (tests)."""
    pm = KloystPluginManager()
    for ep in CORE_PLUGINS:
        pm.add_plugin(ep.name, ep.load(), version=__version__, distribution=CORE_DISTRIBUTION)
    for ep in installed_entry_points():
        try:
            module = ep.load()
        except Exception as exc:  # a broken plugin must name itself, not crash with an import trace
            raise ConfigurationError(f"plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
        dist = ep.dist
        pm.add_plugin(ep.name, module, version=dist.version if dist else "0", distribution=dist.name if dist else None)
    for name, module in extra:
        pm.add_plugin(name, module, version=getattr(module, "__version__", "0"))
    pm.check()
    return pm
