"""The standard plugin tests (kloyst.testing.StandardPluginTests) run on the waba plugin."""

from kloyst.testing import StandardPluginTests


class TestWabaStandard(StandardPluginTests):
    plugin = "waba"
