"""The standard plugin tests (kloyst.testing.StandardPluginTests) run on the conversations plugin."""

from kloyst.testing import StandardPluginTests


class TestConversationsStandard(StandardPluginTests):
    plugin = "conversations"
