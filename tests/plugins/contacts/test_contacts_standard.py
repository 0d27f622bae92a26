"""The standard plugin tests (kloyst.testing.StandardPluginTests) run on the contacts plugin."""

from kloyst.testing import StandardPluginTests


class TestContactsStandard(StandardPluginTests):
    plugin = "contacts"
