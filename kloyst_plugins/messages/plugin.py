"""The messages plugin: metadata and hook implementations."""

from __future__ import annotations

from kloyst.api import as_bool, hookimpl, PluginMeta, Setting
from kloyst_plugins.messages import retention

plugin_meta = PluginMeta(description="Sending template messages through Meta at each number's throughput, with "
                                     "retries, dead letters, delivery statuses and inbound messages from webhooks.",
                         requires=("contacts", "waba", "templates", "wallet", "pricing"))
model_modules = ("kloyst_plugins.messages.models",)


@hookimpl
def kloyst_settings():
    from kloyst_plugins.messages.webhooks import parse_keywords

    return [
        Setting("messages.sender_concurrency", "SENDER_CONCURRENCY", 256, int,
                help="Meta calls one worker process keeps in flight (threads). Needed: rate × latency, e.g. "
                     "1,000/s × 0.1 s = 100 per busy 1,000-mps number."),
        Setting("messages.lease_seconds", "SENDER_LEASE_SECONDS", 60.0, float,
                help="How long a claimed message is reserved for a sender that is alive but stuck; one whose "
                     "process died is taken back as soon as its heartbeat stops (kloyst.heartbeat)."),
        Setting("messages.max_retries", "SENDER_MAX_RETRIES", 8, int,
                help="Transient failures retried (exponential backoff with jitter) before a message fails."),
        Setting("messages.retry_base_seconds", "SENDER_RETRY_BASE_SECONDS", 2.0, float,
                help="First retry delay; each retry doubles it (capped at 10 minutes)."),
        Setting("messages.rate_safety", "SENDER_RATE_SAFETY", 0.96, float,
                help="Starting pace as a share of each number's Meta throughput (80 or 1,000 mps); a 130429 "
                     "lowers it further, quiet time brings it back."),
        Setting("messages.sender_enabled", "SENDER_ENABLED", True, as_bool,
                help="Run the sender in WORKER and ALL modes (off: this worker only runs tasks)."),
        Setting("messages.opt_out_keywords", "MESSAGES_OPT_OUT_KEYWORDS", "", parse_keywords,
                help="Comma-separated words that, sent alone by a customer, opt them out (STOP and UNSUBSCRIBE "
                     "always do); compared trimmed and upper-case."),
        *retention.SETTINGS,
    ]


@hookimpl
def kloyst_retention_policies():
    return list(retention.POLICIES)


@hookimpl
def kloyst_background_services(registry, mode, heartbeat):
    if mode not in ("WORKER", "ALL") or not registry.settings["messages.sender_enabled"]:
        return []
    from kloyst_plugins.messages.sender import Sender

    return [Sender(registry, heartbeat=heartbeat).start()]


@hookimpl
def kloyst_cli_commands(subparsers):
    from kloyst_plugins.messages import cli

    cli.add_commands(subparsers)


@hookimpl
def kloyst_routes(config):
    config.include(".views")


@hookimpl
def kloyst_outbox_handlers():
    from kloyst_plugins.messages import dispatch

    return {dispatch.QUEUED_TOPIC: dispatch.handle_queued}


@hookimpl
def kloyst_webhook_changes(changes, ctx):
    from kloyst_plugins.messages import webhooks

    webhooks.apply(changes, ctx)


@hookimpl
def kloyst_encrypted_fields():
    from kloyst.api import EncryptedFields
    from kloyst_plugins.messages.content import CONTENT_FIELD
    from kloyst_plugins.messages.models import InboundMessage, MessageLog
    from kloyst_plugins.messages.webhooks import INBOUND_FIELD

    return [EncryptedFields(MessageLog, {"content_enc": CONTENT_FIELD}),
            EncryptedFields(InboundMessage, {"content_enc": INBOUND_FIELD})]


@hookimpl
def kloyst_metrics(registry):
    from kloyst_plugins.messages.metrics import DeadLetterGauges, QueuedMessages, UnmatchedStatuses

    return [DeadLetterGauges(registry), QueuedMessages(registry), UnmatchedStatuses(registry)]
