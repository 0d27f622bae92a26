"""Kloyst's own essential plugin: core features that go through the same hooks as any plugin.

It declares the core's outbox, queue and webhook settings, owns the outbox topics the core
produces (``mail.send``, ``vendor.event`` and ``kloyst.task``) and its CLI commands (its
migrations need no hook: kloyst.db.migrate always applies them). It is essential: on for every
vendor, never disabled.
"""

from __future__ import annotations

from kloyst import events, mail, retention
from kloyst.cli import commands
from kloyst.config import Setting
from kloyst.metrics import tls
from kloyst.outbox import cli as outbox_cli
from kloyst.outbox.models import OutboxEvent, OutboxStatus
from kloyst.plugins.manager import PluginMeta, hookimpl
from kloyst.queue import TASK_TOPIC, run_task_event
from kloyst.sandbox import cli as sandbox_cli
from kloyst.webhooks.models import WebhookDelivery

plugin_meta = PluginMeta(description="Kloyst core: accounts, auth, outbox, queue, mail.", essential=True)

WEBHOOK_RETENTION = Setting(
    "kloyst.webhooks.retention_days", "WEBHOOK_RETENTION_DAYS", 7, int,
    help="Days a processed Meta webhook delivery (its raw body) is kept: Meta retries a delivery for up to 7 days, "
         "and a week of raw bodies is what an investigation of a status reads.")
OUTBOX_RETENTION = Setting(
    "kloyst.outbox.retention_days", "OUTBOX_RETENTION_DAYS", 7, int,
    help="Days a delivered outbox event is kept: its work is done, a week covers looking into a delivery. Dead "
         "events are never pruned: an operator requeues or discards them.")


@hookimpl
def kloyst_settings():
    return [
        Setting("kloyst.outbox.batch_size", "OUTBOX_BATCH_SIZE", 500, int,
                help="Events one relay claims per batch."),
        Setting("kloyst.outbox.per_vendor", "OUTBOX_PER_VENDOR", 50, int,
                help="Most events of one vendor in one batch (fairness)."),
        Setting("kloyst.outbox.lease_seconds", "OUTBOX_LEASE_SECONDS", 5, int,
                help="How long a relay's claim may stay unpublished before the reconciler takes it back "
                     "(a relay publishes within milliseconds; a late publish only duplicates a message)."),
        Setting("kloyst.outbox.max_attempts", "OUTBOX_MAX_ATTEMPTS", 10, int,
                help="Failed deliveries (the handler raised) before an event is dead-lettered."),
        Setting("kloyst.outbox.idle_ceiling_seconds", "OUTBOX_IDLE_CEILING_SECONDS", 2.0, float,
                help="Longest pause between polls when there is nothing to publish."),
        Setting("kloyst.outbox.reconcile_interval_seconds", "OUTBOX_RECONCILE_INTERVAL_SECONDS", 2.0, float,
                help="How often a relay looks for lost work: leased events no worker holds and the queue "
                     "does not have (confirmed by a second look a second later)."),
        Setting("kloyst.outbox.max_queue_depth", "OUTBOX_MAX_QUEUE_DEPTH", 2000, int,
                help="The relay stops publishing while the queue holds this many tasks (0: no limit); "
                     "events wait in the database, where claims are fair per vendor."),
        Setting("kloyst.webhooks.batch_size", "WEBHOOK_BATCH_SIZE", 500, int,
                help="Stored webhook deliveries the drainer applies per batch."),
        Setting("kloyst.webhooks.commit_timeout_seconds", "WEBHOOK_COMMIT_TIMEOUT_SECONDS", 3.0, float,
                help="Longest a webhook POST waits for the commit that stores it; then 503 (Meta retries). "
                     "Keep it under waitress's 5 s shutdown grace, so SIGTERM answers every request in hand."),
        Setting("kloyst.webhooks.max_attempts", "WEBHOOK_MAX_ATTEMPTS", 8, int,
                help="Failed applications of a webhook delivery before it is left processed with its error."),
        WEBHOOK_RETENTION,
        OUTBOX_RETENTION,
        Setting(tls.SETTING, "TLS_PROBE_TARGETS", "", tls.as_probe_targets,
                help="Comma-separated host or host:port (443) whose TLS certificate OUTBOX and ALL probe every five "
                     "minutes and export the expiry of (kloyst_tls_certificate_expiry_timestamp_seconds): the public "
                     "names nginx serves. Empty: no probe."),
        *retention.SETTINGS,
        Setting("kloyst.heartbeat.interval_seconds", "HEARTBEAT_INTERVAL_SECONDS", 1.0, float,
                help="How often every kloyst process records that it is alive (process_heartbeat)."),
        Setting("kloyst.heartbeat.dead_after_seconds", "HEARTBEAT_DEAD_AFTER_SECONDS", 6.0, float,
                help="A process silent this long is taken for dead: the work it had claimed (messages in "
                     "flight) is taken back by the others. At least three intervals."),
    ]


@hookimpl
def kloyst_outbox_handlers():
    return {mail.TOPIC: mail.deliver, events.TOPIC: events.deliver, TASK_TOPIC: run_task_event}


@hookimpl
def kloyst_retention_policies():
    outbox, webhooks = OutboxEvent.__table__, WebhookDelivery.__table__
    return [
        retention.RetentionPolicy(
            "kloyst.outbox_events", OUTBOX_RETENTION, removes="delivered outbox events",
            rows=retention.BySequence(outbox, age=outbox.c.created_at,
                                      where=[outbox.c.status == OutboxStatus.DELIVERED],
                                      also_older=[outbox.c.delivered_at])),
        retention.RetentionPolicy(
            "kloyst.webhook_deliveries", WEBHOOK_RETENTION, removes="processed Meta webhook deliveries",
            rows=retention.BySequence(webhooks, age=webhooks.c.received_at,
                                      also_older=[webhooks.c.processed_at])),
    ]


@hookimpl
def kloyst_background_services(registry, mode):
    """The retention pass on a timer, beside the relay (OUTBOX; ALL on the embedded default)."""
    if mode not in ("OUTBOX", "ALL") or registry.settings["kloyst.retention.interval_seconds"] <= 0:
        return []
    return [retention.service(registry, retention.policies(registry)).start()]


@hookimpl
def kloyst_cli_commands(subparsers):
    commands.add_commands(subparsers)
    outbox_cli.add_commands(subparsers)
    sandbox_cli.add_commands(subparsers)
