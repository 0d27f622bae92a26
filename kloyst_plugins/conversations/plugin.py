"""The conversations plugin: metadata and hook implementations.

It listens to one domain event, ``MessageReceived`` (a customer's message was stored), to keep each
conversation's summary; delivery is at least once and applying an event is idempotent
(:mod:`.services`). It writes no event of its own and never hears of campaign messages.
"""

from __future__ import annotations

from kloyst.api import events, hookimpl, PluginMeta

plugin_meta = PluginMeta(description="The inbox: conversations with customers, threads, replies inside the "
                                     "customer-service window, read receipts, assignment and labels.",
                         requires=("contacts", "waba", "messages", "media"))
model_modules = ("kloyst_plugins.conversations.models",)


@hookimpl
def kloyst_routes(config):
    config.include(".views")


@hookimpl
def kloyst_tasks():
    from kloyst_plugins.conversations.tasks import TASKS

    return TASKS


@hookimpl
def kloyst_event_types():
    return [events.MessageReceived]


@hookimpl
def kloyst_vendor_event(event, ctx):
    from kloyst_plugins.conversations.services import ConversationService, Inbound

    received = event.data
    if not isinstance(received, events.MessageReceived) or received.contact_id is None:
        return  # a message from an invalid number is stored without a contact: no conversation to show it in
    ConversationService(ctx.db, ctx.registry, vendor_id=event.vendor_id).receive(
        Inbound(received.inbound_id, received.contact_id, received.phone_number_id, received.sent_at))
