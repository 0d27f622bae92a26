"""The standard plugin tests (kloyst.testing.StandardPluginTests) run on the templates plugin."""

from kloyst.testing import StandardPluginTests


class TestTemplatesStandard(StandardPluginTests):
    plugin = "templates"
