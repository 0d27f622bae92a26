"""The waba plugin: metadata and hook implementations."""

from __future__ import annotations

from kloyst.api import PluginMeta, hookimpl
from kloyst_plugins.waba.metrics import PhoneNumberQuality

plugin_meta = PluginMeta(description="WhatsApp Business Accounts and phone numbers: own WABAs with encrypted tokens, "
                                     "numbers assigned from the platform's shared WABA, sync from Meta.")
model_modules = ("kloyst_plugins.waba.models",)


@hookimpl
def kloyst_routes(config):
    config.include(".views")


@hookimpl
def kloyst_tasks():
    from kloyst_plugins.waba import tasks

    return list(tasks.TASKS)


@hookimpl
def kloyst_webhook_vendors(meta_waba_id, meta_phone_number_id, db):
    from kloyst_plugins.waba import webhooks

    return webhooks.vendors_for(db, meta_waba_id, meta_phone_number_id)


@hookimpl
def kloyst_webhook_changes(changes, ctx):
    from kloyst_plugins.waba import webhooks

    webhooks.apply_changes(changes, ctx)


@hookimpl
def kloyst_encrypted_fields():
    from kloyst.api import EncryptedFields
    from kloyst_plugins.waba.access import PLATFORM, SHARED_TOKEN_FIELD, WABA_TOKEN_FIELD
    from kloyst_plugins.waba.models import SharedWaba, Waba

    return [EncryptedFields(Waba, {"access_token_enc": WABA_TOKEN_FIELD}),
            EncryptedFields(SharedWaba, {"access_token_enc": SHARED_TOKEN_FIELD}, vendor=PLATFORM)]


@hookimpl
def kloyst_metrics(registry):
    return [PhoneNumberQuality(registry)]
