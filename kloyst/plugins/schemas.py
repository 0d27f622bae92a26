"""What ``/plugins`` answers: each installed plugin, and whether the caller's vendor has it on."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from kloyst.http.validation import Answer, Schema


class PluginOut(Answer):
    name: str
    version: str = Field(description="The version of the distribution that installed it.")
    description: str
    requires: list[str] = Field(description="Plugins that must be on before this one can be.")
    essential: bool = Field(description="On for every vendor; cannot be switched off.")
    kloyst_versions: str = Field(description="The Kloyst versions it supports (PEP 440, e.g. \">=0.2,<0.3\"); "
                                             "empty for Kloyst's own plugins.")
    distribution: str | None = Field(description="The Python distribution that installed it.")
    enabled: bool = Field(description="Whether the caller's vendor has it on.")
    has_settings: bool = Field(description="Whether it declares per-vendor settings (/v1/plugins/{name}/settings).")
    settings_editable: bool = Field(description="Whether a vendor's admins may change those settings themselves "
                                                "(otherwise only platform admins can).")


class PluginList(Answer):
    """Every installed plugin, in load order (not paginated: there are only ever a few)."""

    items: list[PluginOut]


class PluginAnswer(Answer):
    plugin: PluginOut


class PluginSwitched(Answer):
    plugin: PluginOut
    changed: bool = Field(description="False when the plugin was already in the state asked for.")


class PluginDisable(Schema):
    purge: bool = Field(False, description="Also delete the vendor's settings for the plugin. Without it they are "
                                           "kept, and come back when the plugin is enabled again.")


class PluginSettingsBody(Schema):
    """The whole of the vendor's settings for the plugin: fields left out take the schema's defaults."""

    settings: dict[str, Any] = Field(max_length=200, description="Values for the fields of the plugin's settings "
                                                                 "schema (see `schema` in the answer of GET).")


class PluginSettingsAnswer(Answer):
    plugin: str
    vendor_id: str
    enabled: bool = Field(description="Whether the vendor has the plugin on (settings are kept while it is off).")
    editable_by_vendor: bool = Field(description="Whether the vendor's admins may change these settings.")
    settings: dict[str, Any] = Field(description="The vendor's settings, the schema's defaults filled in.")
    defaults: dict[str, Any] = Field(description="What a vendor that never set them gets.")
    settings_schema: dict[str, Any] = Field(description="The JSON Schema of the plugin's settings.")
