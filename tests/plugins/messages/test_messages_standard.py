"""The standard plugin tests (kloyst.testing.StandardPluginTests) run on the messages plugin."""

from kloyst.testing import StandardPluginTests


class TestMessagesStandard(StandardPluginTests):
    plugin = "messages"
