"""The media plugin: metadata and hook implementations."""

from __future__ import annotations

from kloyst.api import as_scan_mode, EncryptedFields, events, hookimpl, PluginMeta, SCAN_REQUIRED, Setting
from kloyst_plugins.media import retention, scanning, services, tasks
from kloyst_plugins.media.models import Media
from kloyst_plugins.media.storage import KEY_FIELD

plugin_meta = PluginMeta(description="WhatsApp media of conversations: uploads for replies checked against Meta's "
                                     "limits and scanned, inbound media fetched from Meta, stored encrypted, served.",
                         requires=("waba",))
model_modules = ("kloyst_plugins.media.models",)


@hookimpl
def kloyst_settings():
    return [
        Setting("media.storage_dir", "MEDIA_STORAGE_DIR", "var/media",
                help="Where media files are kept (encrypted), one folder per vendor, under the media's id."),
        Setting("media.clamd_address", "CLAMD_ADDRESS", "",
                help="clamd to scan media with (the same scanner as imports): tcp://127.0.0.1:3310 or "
                     "unix:///run/clamav/clamd.ctl. Empty: uploads are refused (503) and inbound media wait, "
                     "never treated as clean."),
        Setting("media.scan", "MEDIA_SCAN", SCAN_REQUIRED, as_scan_mode,
                help="required: every media is scanned by clamd before it is kept. off: development on this "
                     "machine only (development.ini): nothing is scanned and every media says so; refused when "
                     "the API can be reached from beyond this machine. With a scanner configured (CLAMD_ADDRESS, "
                     "shared with imports) media are scanned even when this says off."),
        retention.FILES,
    ]


@hookimpl
def kloyst_retention_policies(settings):
    return [retention.policy(settings)]


@hookimpl
def kloyst_routes(config):
    # The one hook every process calls while it is configured: refuse an unscanned mode that
    # could be reached from beyond this machine before anything runs.
    scanning.check_settings(config.get_settings())
    config.include(".views")


@hookimpl
def kloyst_background_services(registry):
    """Nothing runs in the background; a process that keeps unscanned media says so when it starts."""
    scanning.announce(registry.settings)
    return []


@hookimpl
def kloyst_tasks():
    return list(tasks.TASKS)


@hookimpl
def kloyst_event_types():
    return [events.MessageReceived]


@hookimpl
def kloyst_vendor_event(event, ctx):
    """A customer's message with a media: record it ``pending`` and fetch it (once per message)."""
    if isinstance(event.data, events.MessageReceived) and event.data.media_id:
        services.record_inbound(ctx, event.data)


@hookimpl
def kloyst_encrypted_fields():
    return [EncryptedFields(Media, {"file_key_enc": KEY_FIELD})]
