"""The vendor_webhooks plugin: metadata and hook implementations."""

from __future__ import annotations

from kloyst.api import as_bool, events, hookimpl, PluginMeta, Setting
from kloyst_plugins.vendor_webhooks import retention

plugin_meta = PluginMeta(description="Outgoing webhooks a vendor registers (signed, retried for a day, "
                                     "dead-lettered, redeliverable) and an event feed to poll.",
                         requires=("messages",))
model_modules = ("kloyst_plugins.vendor_webhooks.models",)


@hookimpl
def kloyst_settings():
    key = "vendor_webhooks."
    return [
        Setting(key + "delivery_enabled", "VENDOR_WEBHOOKS_DELIVERY_ENABLED", True, as_bool,
                help="Run the webhook deliverer in WORKER and ALL modes (off: this worker does not deliver)."),
        Setting(key + "allow_http", "VENDOR_WEBHOOKS_ALLOW_HTTP", False, as_bool,
                help="Accept http:// endpoint URLs (development only; https is always accepted)."),
        Setting(key + "allow_loopback", "VENDOR_WEBHOOKS_ALLOW_LOOPBACK", False, as_bool,
                help="Accept endpoints on loopback addresses (127.0.0.0/8, ::1): the embedded default's receiver on "
                     "the same machine. Private, link-local and reserved addresses are refused regardless."),
        Setting(key + "concurrency", "VENDOR_WEBHOOKS_CONCURRENCY", 64, int,
                help="Deliveries one worker process keeps in flight (threads)."),
        Setting(key + "per_endpoint_concurrency", "VENDOR_WEBHOOKS_PER_ENDPOINT_CONCURRENCY", 16, int,
                help="Calls one worker makes to one endpoint at a time (1 while its last attempt failed)."),
        Setting(key + "connect_timeout_seconds", "VENDOR_WEBHOOKS_CONNECT_TIMEOUT_SECONDS", 3.0, float,
                help="How long to wait for an endpoint's connection."),
        Setting(key + "read_timeout_seconds", "VENDOR_WEBHOOKS_READ_TIMEOUT_SECONDS", 10.0, float,
                help="How long to wait for an endpoint's answer (between bytes)."),
        Setting(key + "lease_seconds", "VENDOR_WEBHOOKS_LEASE_SECONDS", 120.0, float,
                help="How long a claimed delivery is reserved for a worker that is alive but stuck; one whose "
                     "process died is taken back as soon as its heartbeat stops."),
        Setting(key + "retry_base_seconds", "VENDOR_WEBHOOKS_RETRY_BASE_SECONDS", 10.0, float,
                help="First retry delay of a failed delivery; each retry doubles it (with jitter)."),
        Setting(key + "retry_cap_seconds", "VENDOR_WEBHOOKS_RETRY_CAP_SECONDS", 3600.0, float,
                help="Longest delay between two attempts of a delivery."),
        Setting(key + "retry_horizon_seconds", "VENDOR_WEBHOOKS_RETRY_HORIZON_SECONDS", 86400.0, float,
                help="How long a delivery is retried before it is dead (from its creation or redelivery)."),
        Setting(key + "circuit_failures", "VENDOR_WEBHOOKS_CIRCUIT_FAILURES", 5, int,
                help="Failed attempts in a row after which an endpoint is paused (the circuit opens)."),
        Setting(key + "circuit_pause_cap_seconds", "VENDOR_WEBHOOKS_CIRCUIT_PAUSE_CAP_SECONDS", 600.0, float,
                help="Longest pause of a failing endpoint; the pause starts at retry_base_seconds and doubles."),
        Setting(key + "max_endpoints", "VENDOR_WEBHOOKS_MAX_ENDPOINTS", 20, int,
                help="Endpoints one vendor may register."),
        Setting(key + "secret_overlap_seconds", "VENDOR_WEBHOOKS_SECRET_OVERLAP_SECONDS", 86400.0, float,
                help="After a secret rotation, how long the previous secret also signs deliveries."),
        retention.EVENTS,
    ]


@hookimpl
def kloyst_retention_policies():
    return [retention.POLICY]


@hookimpl
def kloyst_routes(config):
    config.include(".views")


@hookimpl
def kloyst_event_types():
    # Every catalogued type (the feed keeps them all, endpoints pick theirs), but not names outside the catalogue.
    return list(events.catalogue())


class _AlreadyRecorded(Exception):
    """Rolls the savepoint back: a redelivered event took a feed number it must not keep."""


@hookimpl
def kloyst_vendor_event(event, ctx):
    from kloyst_plugins.vendor_webhooks import feed

    try:
        with ctx.db.begin_nested():
            if feed.record(event, ctx.db) is None:
                raise _AlreadyRecorded
    except _AlreadyRecorded:
        pass


@hookimpl
def kloyst_background_services(registry, mode, heartbeat):
    if mode not in ("WORKER", "ALL") or not registry.settings["vendor_webhooks.delivery_enabled"]:
        return []
    from kloyst_plugins.vendor_webhooks.deliverer import Deliverer

    return [Deliverer(registry, heartbeat=heartbeat).start()]


@hookimpl
def kloyst_encrypted_fields():
    from kloyst.api import EncryptedFields
    from kloyst_plugins.vendor_webhooks.models import WebhookEndpoint
    from kloyst_plugins.vendor_webhooks.sealing import SECRET_FIELD

    return [EncryptedFields(WebhookEndpoint, {"secret_enc": SECRET_FIELD, "previous_secret_enc": SECRET_FIELD})]
