"""Alembic, driven from Kloyst's settings and plugins: one command upgrades the core and every plugin.

The core's revisions live in ``migrations/versions`` (branch ``core``); each plugin ships
its own version directory (branch ``<plugin>``) through the ``kloyst_migration_dirs``
hook. ``kloyst db upgrade`` applies all heads; ``kloyst db check`` fails when the database
is behind or when the models and the migrations disagree.
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

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
CORE_VERSIONS = MIGRATIONS / "versions"
CORE_MODEL_MODULES = ("kloyst.accounts.models", "kloyst.auth.models", "kloyst.plugins.models",
                      "kloyst.outbox.models", "kloyst.webhooks.models", "kloyst.heartbeat.models")


def import_models(pm) -> None:
    """Import every model module so ``Base.metadata`` knows every table (plugins import theirs in plugin.py)."""
    for module in CORE_MODEL_MODULES:
        importlib.import_module(module)
    for info in pm.infos.values():
        for name in getattr(info.module, "model_modules", ()):
            importlib.import_module(name)


def alembic_config(pm, url: str, connection: Connection | None = None) -> Config:
    if not MIGRATIONS.is_dir():
        raise RuntimeError(f"alembic scripts not found at {MIGRATIONS}; run Kloyst from its source tree "
                           "(pip install -e .), as the README and the Docker image do")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    locations = [str(CORE_VERSIONS)] + [
        str(Path(d).resolve()) for _, d in pm.collect("kloyst_migration_dirs") if Path(d).resolve() != CORE_VERSIONS]
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
