"""What ``/plugins`` answers: each installed plugin, and whether the caller's vendor has it on."""

from __future__ import annotations

from pydantic import Field

from kloyst.http.validation import Answer


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


class PluginList(Answer):
    """Every installed plugin, in load order (not paginated: there are only ever a few)."""

    items: list[PluginOut]


class PluginAnswer(Answer):
    plugin: PluginOut


class PluginSwitched(Answer):
    plugin: PluginOut
    changed: bool = Field(description="False when the plugin was already in the state asked for.")
