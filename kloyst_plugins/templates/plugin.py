"""The templates plugin: metadata and hook implementations."""

from __future__ import annotations

from kloyst.api import PluginMeta, hookimpl
from kloyst_plugins.templates import webhooks

plugin_meta = PluginMeta(description="Message templates: sync from Meta, submit for review, status from webhooks, "
                                     "parameter validation and variable mapping.", requires=("waba",))
model_modules = ("kloyst_plugins.templates.models",)


@hookimpl
def kloyst_routes(config):
    config.include(".views")


@hookimpl
def kloyst_tasks():
    from kloyst_plugins.templates import tasks

    return [tasks.sync_templates]


@hookimpl
def kloyst_webhook_changes(changes, ctx):
    webhooks.apply(changes, ctx)
