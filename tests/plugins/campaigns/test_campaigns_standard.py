"""The standard plugin tests (kloyst.testing.StandardPluginTests) run on the campaigns plugin."""

from kloyst.testing import StandardPluginTests


class TestCampaignsStandard(StandardPluginTests):
    plugin = "campaigns"
