"""The contacts plugin: metadata and hook implementations."""

from __future__ import annotations

from kloyst.api import PluginMeta, hookimpl
from kloyst_plugins.contacts import merge, retention

plugin_meta = PluginMeta(description="Contacts: encrypted numbers and names, labels, attributes, opt-outs, audit, "
                                     "export.")
model_modules = ("kloyst_plugins.contacts.models",)


@hookimpl
def kloyst_merge_strategies():
    return list(merge.BUILT_IN)


@hookimpl
def kloyst_routes(config):
    config.include(".views")


@hookimpl
def kloyst_encrypted_fields():
    from kloyst.api import EncryptedFields
    from kloyst_plugins.contacts.models import Contact

    return [EncryptedFields(Contact, {"mobile_enc": "mobile", "name_enc": "name", "bsuid_enc": "bsuid",
                                     "parent_bsuid_enc": "parent_bsuid", "username_enc": "username"})]


@hookimpl
def kloyst_settings():
    return [retention.AUDIT_LOG]


@hookimpl
def kloyst_retention_policies():
    return [retention.POLICY]
