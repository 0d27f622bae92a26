"""The plugin system: hook specs, the manager, per-vendor enablement and the route gate.

The ``/plugins`` routes (:mod:`kloyst.plugins.views`) are included by the app factory under the API prefix.

Plugin authors import these names (and every other public one) from :mod:`kloyst.api`.
"""

from kloyst.plugins.manager import (  # noqa: F401 - the public surface for plugin authors
    ENTRY_POINT_GROUP,
    KloystPluginManager,
    PluginInfo,
    PluginMeta,
    build_plugin_manager,
    hookimpl,
)


def includeme(config) -> None:
    config.include(".enablement")
    config.include(".routing")
