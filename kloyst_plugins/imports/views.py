"""Routes of the imports plugin. Views are thin: each delegates to the module that owns the step."""

from __future__ import annotations

from kloyst_plugins.imports.models import ContactImportJob


def includeme(config) -> None:
    config.add_route("imports.collection", "/imports")
    config.add_route("imports.item", "/imports/{id}", model=ContactImportJob)
    config.add_route("imports.item.cancel", "/imports/{id}/cancel", model=ContactImportJob)
    config.add_route("imports.item.mapping", "/imports/{id}/mapping", model=ContactImportJob)
    config.add_route("imports.item.rejected", "/imports/{id}/rejected.csv", model=ContactImportJob)
    # The upload is the one large body: the tween allows it on POST /imports only (plus room for the
    # multipart envelope; exact, so the mapping PUT beside it keeps the ordinary JSON limit), and the
    # upload view counts the file's own bytes against imports.max_upload_bytes while streaming.
    settings = config.get_settings()
    prefix = settings["kloyst.api.prefix"].strip("/")
    upload_limit = int(settings["imports.max_upload_bytes"]) + 64 * 1024
    config.add_body_limit(f"/{prefix}/imports" if prefix else "/imports", upload_limit, exact=True)
    config.scan(".views_upload")
    config.scan(".views_processing")
