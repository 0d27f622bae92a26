"""Kloyst's own essential plugin: the core features that go through the same hooks as any plugin.

It delivers outbox events (the task every outbox event travels through) and owns the
``mail.send`` and ``vendor.event`` topics. It is essential: on for every vendor, never
disabled.
"""

from __future__ import annotations

import logging

from kloyst import events, mail
from kloyst.outbox.models import OutboxEvent
from kloyst.outbox.relay import DELIVER_TASK
from kloyst.plugins.manager import PluginMeta, hookimpl
from kloyst.queue import task

log = logging.getLogger(__name__)

plugin_meta = PluginMeta(description="Kloyst core: accounts, auth, outbox delivery, mail.", essential=True)


@task(DELIVER_TASK, retries=5, retry_delay=10)
def deliver_outbox_event(ctx, *, event_id: int) -> None:
    """Hand one published outbox event to the handler of its topic."""
    event = ctx.db.get(OutboxEvent, event_id)
    if event is None:
        log.warning("outbox event %s vanished before delivery", event_id)
        return
    handler = ctx.registry["kloyst.outbox_handlers"].get(event.topic)
    if handler is None:
        log.error("outbox event %s has topic %r, which no installed plugin handles", event.id, event.topic)
        return
    handler(ctx, event)


@hookimpl
def kloyst_tasks():
    return [deliver_outbox_event]


@hookimpl
def kloyst_outbox_handlers():
    return {mail.TOPIC: mail.deliver, events.TOPIC: events.deliver}


@hookimpl
def kloyst_migration_dirs():
    from kloyst.db.migrate import CORE_VERSIONS

    return [str(CORE_VERSIONS)]


@hookimpl
def kloyst_cli_commands(subparsers):
    from kloyst.cli import commands

    commands.add_commands(subparsers)
