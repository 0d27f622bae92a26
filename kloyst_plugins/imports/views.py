"""Routes of the imports plugin. Views are thin: each delegates to the module that owns the step."""

from __future__ import annotations

from kloyst_plugins.imports.models import ContactImportJob


def includeme(config) -> None:
    config.add_route("imports.collection", "/imports")
    config.add_route("imports.item", "/imports/{id}", model=ContactImportJob)
    config.add_route("imports.item.cancel", "/imports/{id}/cancel", model=ContactImportJob)
    config.add_route("imports.item.mapping", "/imports/{id}/mapping", model=ContactImportJob)
    config.add_route("imports.item.rejected", "/imports/{id}/rejected.csv", model=ContactImportJob)
    config.scan(".views_upload")
    config.scan(".views_processing")
