"""The ``example`` plugin: its metadata and every hook it implements, and nothing else.

Kloyst finds this module through the ``kloyst.plugins`` entry point in ``setup.py``.
Configuration hooks (settings, routes, tasks, migrations, CLI) are called on every
installed plugin when a process starts; the tenant hooks (``kloyst_vendor_event``,
``kloyst_merge_strategies``, ``kloyst_pricing_rules``) only for vendors who enabled ``example``.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.exc import IntegrityError

from kloyst.config import Setting
from kloyst.plugins import PluginMeta, hookimpl

plugin_meta = PluginMeta(description="Notes a vendor can keep and ping; logs the vendor's domain events.",
                         kloyst_versions=">=0.2,<0.3")

# Imported by Kloyst before alembic compares models and migrations (kloyst db check).
model_modules = ("kloyst_example.models",)

MIGRATIONS = Path(__file__).resolve().parent / "migrations" / "versions"


@hookimpl
def kloyst_settings():
    return [Setting("example.greeting", "EXAMPLE_GREETING", "hello", help="What GET /v1/example/hello answers.")]


@hookimpl
def kloyst_routes(config):
    config.include(".views")


@hookimpl
def kloyst_tasks():
    from kloyst_example import tasks

    return [tasks.ping_note]


@hookimpl
def kloyst_migration_dirs():
    return [str(MIGRATIONS)]


@hookimpl
def kloyst_cli_commands(subparsers):
    from kloyst_example import cli

    cli.add_commands(subparsers)


def _keep_longer_name(existing, incoming):
    """The longer of the two names wins ("Asha" → "Asha Rao"); labels are added; nothing else changes."""
    from dataclasses import replace

    from kloyst_plugins.contacts.merge import union_labels

    name = existing.name
    if incoming.name and len(incoming.name) > len(existing.name or ""):
        name = incoming.name
    merged = replace(existing, name=name, labels=union_labels(existing.labels, incoming.labels))
    return None if merged == existing else merged


@hookimpl
def kloyst_merge_strategies():
    from kloyst_plugins.contacts.merge import MergeStrategy

    # reads_name: the import decrypts existing names only for strategies that look at them.
    return [MergeStrategy("KEEP_LONGER_NAME", "Keep whichever name is longer, the contact's or the row's; add the "
                          "row's labels.", _keep_longer_name, reads_name=True)]


@hookimpl
def kloyst_vendor_event(event, ctx):
    from kloyst_example.models import ExampleEventLog

    # At-least-once delivery: a redelivered event hits the unique (vendor_id, event_id) and is dropped.
    try:
        with ctx.db.begin_nested():
            ctx.db.add(ExampleEventLog(vendor_id=event.vendor_id, event_id=event.id, name=event.name))
    except IntegrityError:
        pass


@hookimpl
def kloyst_pricing_rules():
    from kloyst_example.pricing import LabelDiscount

    return [LabelDiscount()]
