"""Loading an ini file into a ready registry, for commands and services outside a web request."""

from __future__ import annotations

import os
from pathlib import Path

import plaster

from kloyst import make_configurator
from kloyst.config import ConfigurationError, environment


def load(ini: str, *, runs_service: bool = False, service_type: str | None = None, **overrides):
    """Read ``[app:main]`` of ``ini``, build the app, and return ``(wsgi_app, registry)``.

    Only ``kloyst run`` runs a service (``runs_service``): its mode is ``service_type`` when
    given (``--service-type``, which beats ``SERVICE_TYPE``), else ``SERVICE_TYPE`` or the
    ini's value. Every other command (``kloyst db upgrade``, ``wallet check``, the image's
    ``migrate``…) runs none, so it neither needs nor reads ``SERVICE_TYPE``: staging.ini's
    ``${SERVICE_TYPE}`` does not stop it. Such a command builds the application as ``ALL``
    would (every plugin, task and route), and starts none of it.
    """
    path = Path(ini)
    if not path.is_file():
        raise ConfigurationError(f"ini file {ini!r} not found")
    loader = plaster.get_loader(str(path.resolve()), protocols=["wsgi"])
    settings = dict(loader.get_settings("app:main"))
    settings.update(overrides)
    environ = environment()
    if service_type is not None or not runs_service:
        settings["kloyst.service_type"] = service_type or "ALL"
        environ = {name: value for name, value in environ.items() if name != "SERVICE_TYPE"}
    config = make_configurator({"here": str(path.resolve().parent), "__file__": str(path.resolve())}, settings,
                               environ=environ)
    return config.make_wsgi_app(), config.registry


def ensure_var_dirs(registry) -> None:
    """Create the directories the embedded default writes to (SQLite file, queue, mail, logs)."""
    settings = registry.settings
    url = settings["kloyst.database.url"]
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    for key in ("kloyst.queue.sqlite_path",):
        Path(settings[key]).parent.mkdir(parents=True, exist_ok=True)
    for key in ("kloyst.mail.file_dir", "kloyst.log.dir"):
        os.makedirs(settings[key], exist_ok=True)
