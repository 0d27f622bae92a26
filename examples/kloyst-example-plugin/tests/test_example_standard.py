"""The standard plugin tests run on both plugins of the distribution: one subclass, one line each.

``StandardPluginTests`` (from Kloyst's test helpers) checks the plugin gate, tenancy of every
``model=`` route, the OpenAPI document, the migration branch down and up again, and the
plugin's metadata; see docs/testing_plugins.md, "The standard plugin test class".
"""

from kloyst.testing import StandardPluginTests


class TestExampleStandard(StandardPluginTests):
    plugin = "example"


class TestExampleDigestStandard(StandardPluginTests):
    """No tables and no ``{id}`` routes: the tenancy and migration tests skip, saying why."""

    plugin = "example_digest"
