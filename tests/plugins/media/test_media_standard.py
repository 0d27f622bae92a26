"""The standard plugin tests (kloyst.testing.StandardPluginTests) run on the media plugin."""

from kloyst.testing import StandardPluginTests


class TestMediaStandard(StandardPluginTests):
    plugin = "media"
