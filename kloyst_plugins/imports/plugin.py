"""The imports plugin: metadata and hook implementations."""

from __future__ import annotations

from pathlib import Path

from kloyst.plugins import PluginMeta, hookimpl

plugin_meta = PluginMeta(description="Contact imports from CSV and XLSX: hardened upload, virus scan, column "
                                     "mapping, merge strategies, parallel chunks.", requires=("contacts",))
model_modules = ("kloyst_plugins.imports.models",)


@hookimpl
def kloyst_migration_dirs():
    return [str(Path(__file__).with_name("migrations") / "versions")]
