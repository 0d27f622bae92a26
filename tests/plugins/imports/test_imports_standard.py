"""The standard plugin tests (kloyst.testing.StandardPluginTests) run on the imports plugin."""

from kloyst.testing import StandardPluginTests


class TestImportsStandard(StandardPluginTests):
    plugin = "imports"
