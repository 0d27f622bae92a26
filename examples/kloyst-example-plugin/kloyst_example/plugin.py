"""The ``example`` plugin: its metadata, its per-vendor settings and every hook it implements.

Kloyst finds this module through the ``kloyst.plugins`` entry point in ``setup.py``.
Configuration hooks (settings, routes, tasks, migrations, CLI) are called on every
installed plugin when a process starts; the tenant hooks (``kloyst_vendor_event``,
``kloyst_merge_strategies``, ``kloyst_pricing_rules``) only for vendors who enabled ``example``.
It also offers a hook of its own (``hookspecs.py``) for other plugins to implement.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from sqlalchemy.exc import IntegrityError

from kloyst.api import events, hookimpl, MergeStrategy, PlainText, PluginMeta, Schema, Setting
from kloyst_example import cli, hookspecs, tasks
from kloyst_example.merge import keep_longer_name
from kloyst_example.models import ExampleEventLog, Note
from kloyst_example.pricing import LabelDiscount


class ExampleSettings(Schema):
    """A vendor's settings for ``example``; every field has a default (what a vendor gets until they are set)."""

    label: PlainText = Field("", max_length=64, description="A partner label: a labelled vendor gets the discount.")
    discount_percent: int = Field(10, ge=0, le=50, description="The discount of a labelled vendor, in percent.")


# The settings give a discount, so only platform admins set them (vendor_editable=False):
# PUT /v1/admin/vendors/{id}/plugins/example/settings.
plugin_meta = PluginMeta(description="Notes a vendor can keep and ping; logs the vendor's domain events.",
                         kloyst_versions=">=0.2,<0.3", vendor_settings=ExampleSettings, vendor_editable=False)

# Imported by Kloyst before alembic compares models and migrations (kloyst db check).
model_modules = ("kloyst_example.models",)

# Kloyst finds the revisions here, beside this module, without a hook; alembic's autogenerate
# writes new ones here too (docs/writing_plugins.md §5). setup.py ships them in the wheel.
MIGRATIONS = Path(__file__).resolve().parent / "migrations" / "versions"


@hookimpl
def kloyst_settings():
    return [Setting("example.greeting", "EXAMPLE_GREETING", "hello", help="What GET /v1/example/hello answers.")]


@hookimpl
def kloyst_routes(config):
    config.include(".views")


@hookimpl
def kloyst_tasks():
    return [tasks.ping_note]


@hookimpl
def kloyst_cli_commands(subparsers):
    cli.add_commands(subparsers)


@hookimpl
def kloyst_merge_strategies():
    # reads_name: the import decrypts existing names only for strategies that look at them.
    return [MergeStrategy("KEEP_LONGER_NAME", "Keep whichever name is longer, the contact's or the row's; add the "
                          "row's labels.", keep_longer_name, reads_name=True)]


@hookimpl
def kloyst_addhooks(pluginmanager):
    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def kloyst_event_types():
    # The events this plugin's kloyst_vendor_event wants; no other type is ever written for it.
    return [events.ImportCompleted, *events.LEGACY_EVENTS]


@hookimpl
def kloyst_vendor_event(event, ctx):
    # At-least-once delivery: a redelivered event hits the unique (vendor_id, event_id) and is
    # dropped, and with it the note it would have written a second time.
    try:
        with ctx.db.begin_nested():
            ctx.db.add(ExampleEventLog(vendor_id=event.vendor_id, event_id=event.id, name=event.name))
            if isinstance(event.data, events.ImportCompleted):
                ctx.db.add(Note(vendor_id=event.vendor_id, text=import_note(event.data, ctx.tenant_hooks)))
    except IntegrityError:
        pass


def import_note(done, tenant_hooks) -> str:
    """The note for a completed import: its counts, then the lines other enabled plugins add."""
    lines = [f"Import {done.import_id} completed: {done.created} created, {done.updated} updated, "
             f"{done.skipped} skipped, {done.failed} failed."]
    for extra in tenant_hooks.kloyst_example_import_note(event=done):
        lines.extend(extra or ())
    return "\n".join(lines)


@hookimpl
def kloyst_pricing_rules():
    return [LabelDiscount()]
