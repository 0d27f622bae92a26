"""The auto-replies plugin: metadata and hook implementations.

It is built from the plugin system's parts alone: its own tables and migration branch, routes under
``/v1/autoreplies``, and the domain events ``MessageReceived``, ``ContactOptedOut`` and ``ContactOptedIn``,
delivered only for vendors who enabled it. Inbound content, replies and template sends come through the
messages plugin's api, opt-ins through the contacts plugin's (docs/autoreplies.md).
"""

from __future__ import annotations

from kloyst.api import events, hookimpl, PluginMeta, utcnow
from kloyst_plugins.autoreplies.responder import Responder

plugin_meta = PluginMeta(description="Auto-replies: keyword rules answering with a text or a template, an away "
                                     "message outside business hours, opt-out and opt-in confirmations.",
                         requires=("contacts", "waba", "templates", "messages"))
model_modules = ("kloyst_plugins.autoreplies.models",)


@hookimpl
def kloyst_routes(config):
    config.include(".views")


@hookimpl
def kloyst_event_types():
    return [events.MessageReceived, events.ContactOptedOut, events.ContactOptedIn]


@hookimpl
def kloyst_vendor_event(event, ctx):
    # utcnow is read here, once per event, so tests can fix the clock (plugin.utcnow).
    Responder(ctx.db, ctx.registry, vendor_id=event.vendor_id, now=utcnow()).handle(event)
