"""Alembic, driven from Kloyst's settings and plugins: one command upgrades the core and every plugin.

The core's alembic scripts live in the top-level ``migrations/`` of the source tree, which the
wheel installs as the package ``kloyst.migrations``; its revisions (branch ``core``) are in their
``versions/``. Each plugin's revisions (branch ``<plugin>``) are found beside its module:
``<directory of the plugin's module>/migrations/versions``, for every installed plugin. A plugin
that keeps them elsewhere names the directories through the optional ``kloyst_migration_dirs``
hook. ``kloyst db upgrade`` applies all heads; ``kloyst db check`` fails when the database is
behind or when the models and the migrations disagree.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine


def _core_migrations() -> Path:
    """``kloyst/migrations`` where the wheel installed it, else ``migrations/`` beside the source tree's package."""
    package = Path(__file__).resolve().parents[1]
    candidates = (package / "migrations", package.parent / "migrations")
    return next((c for c in candidates if (c / "env.py").is_file()), candidates[0])


MIGRATIONS = _core_migrations()
CORE_VERSIONS = MIGRATIONS / "versions"
PLUGIN_VERSIONS = Path("migrations", "versions")  # relative to the directory of a plugin's module
CORE_MODEL_MODULES = ("kloyst.accounts.models", "kloyst.auth.models", "kloyst.plugins.models",
                      "kloyst.outbox.models", "kloyst.webhooks.models", "kloyst.heartbeat.models")


def import_models(pm) -> None:
    """Import every model module so ``Base.metadata`` knows every table (plugins import theirs in plugin.py)."""
    for module in CORE_MODEL_MODULES:
        importlib.import_module(module)
    for info in pm.infos.values():
        for name in getattr(info.module, "model_modules", ()):
            importlib.import_module(name)


def migration_dirs(pm) -> list[tuple[str, Path]]:
    """``(plugin, directory)`` for every plugin revision directory: the ones found beside each plugin's
    module, then the ones the optional ``kloyst_migration_dirs`` hook names. Resolved, each directory once,
    the core's own versions left out (:func:`alembic_config` always puts them first)."""
    found: dict[Path, str] = {}
    for name, info in pm.infos.items():
        module, module_file = info.module, getattr(info.module, "__file__", None)
        # Only a module inside a package (or a package) has a directory of its own: a top-level
        # single-file plugin would otherwise adopt whatever ``migrations/`` lies in site-packages.
        in_package = hasattr(module, "__path__") or "." in getattr(module, "__name__", "")
        if module_file and in_package:
            directory = Path(module_file).resolve().parent / PLUGIN_VERSIONS
            if directory.is_dir():
                found.setdefault(directory, name)
    for name, directory in pm.collect("kloyst_migration_dirs"):
        found.setdefault(Path(directory).resolve(), name)
    found.pop(CORE_VERSIONS.resolve(), None)
    return [(name, directory) for directory, name in found.items()]


def alembic_config(pm, url: str, connection: Connection | None = None) -> Config:
    if not (MIGRATIONS / "env.py").is_file():
        raise RuntimeError(f"alembic scripts not found at {MIGRATIONS}: install Kloyst from its wheel "
                           "(it carries them as kloyst/migrations) or from its source tree (pip install -e .)")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    locations = [str(CORE_VERSIONS)] + [str(directory) for _, directory in migration_dirs(pm)]
    cfg.set_main_option("version_locations", " ".join(dict.fromkeys(locations)))
    cfg.set_main_option("path_separator", "space")
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["plugin_manager"] = pm
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade(pm, engine: Engine, revision: str = "heads") -> None:
    with engine.begin() as connection:
        command.upgrade(alembic_config(pm, str(engine.url), connection), revision)


def heads(pm, engine: Engine) -> set[str]:
    """The revisions ``alembic_version`` holds once every upgrade has run.

    A plugin's first revision ``depends_on`` a core revision; when that core revision is
    still the core's head, alembic records only the plugin's revision, so comparing
    :func:`current` with the plain heads would call an up-to-date database behind.
    """
    script = ScriptDirectory.from_config(alembic_config(pm, str(engine.url)))
    return set(script.get_heads(consider_depends_on=True))


def current(pm, engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads())


def model_drift(pm, engine: Engine) -> list:
    """Differences between the models and the migrated database; empty when they agree."""
    from kloyst.db import Base

    import_models(pm)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True,
                                                               "compare_server_default": False})
        diffs = compare_metadata(context, Base.metadata)
    return [d for d in diffs if not _ignored(d)]


def _ignored(diff) -> bool:
    # alembic's own bookkeeping table is not a model.
    text = repr(diff)
    return "alembic_version" in text
