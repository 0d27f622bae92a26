"""Loading an ini file into a ready registry, for commands and services outside a web request."""

from __future__ import annotations

import os
from pathlib import Path

import plaster

from kloyst.config import ConfigurationError


def load(ini: str, **overrides):
    """Read ``[app:main]`` of ``ini``, build the app, and return ``(wsgi_app, registry)``."""
    path = Path(ini)
    if not path.is_file():
        raise ConfigurationError(f"ini file {ini!r} not found")
    loader = plaster.get_loader(str(path.resolve()), protocols=["wsgi"])
    settings = dict(loader.get_settings("app:main"))
    settings.update(overrides)
    from kloyst import make_configurator

    config = make_configurator({"here": str(path.resolve().parent), "__file__": str(path.resolve())}, settings)
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
