"""The waba plugin: metadata and hook implementations."""

from __future__ import annotations

from pathlib import Path

from kloyst.plugins import PluginMeta, hookimpl

plugin_meta = PluginMeta(description="WhatsApp Business Accounts and phone numbers: own WABAs with encrypted tokens, "
                                     "numbers assigned from the platform's shared WABA, sync from Meta.")
model_modules = ("kloyst_plugins.waba.models",)


@hookimpl
def kloyst_migration_dirs():
    return [str(Path(__file__).with_name("migrations") / "versions")]
