"""The messages plugin: metadata and hook implementations."""

from __future__ import annotations

from pathlib import Path

from kloyst.plugins import PluginMeta, hookimpl

plugin_meta = PluginMeta(description="Sending template messages through Meta at each number's throughput, with "
                                     "retries, dead letters, delivery statuses and inbound messages from webhooks.",
                         requires=("contacts", "waba", "templates"))
model_modules = ("kloyst_plugins.messages.models",)


@hookimpl
def kloyst_migration_dirs():
    return [str(Path(__file__).with_name("migrations") / "versions")]


@hookimpl
def kloyst_outbox_handlers():
    from kloyst_plugins.messages import dispatch

    return {dispatch.QUEUED_TOPIC: dispatch.handle_queued}
